"""The XID fault injector: a per-node agent that writes driver XID lines into the kernel log, a
central API that routes injections to the agent on a node, and the client behind `gpuheal inject`.

The interface is the one the fault injector's documentation gives (`POST /inject-xid` on the node
agent at :8083, `POST /api/v1/faults/gpu/inject/xid-<n>` on the central API at :8080, the
`<3>NVRM: NVRM: Xid (PCI:<addr>): <xid>, <description>` line), with two changes for safety: every
call but `/health` carries a bearer token, and the agent writes /dev/kmsg itself, one write per
record, instead of running a shell on the host.
"""
