"""The kernel log monitor: NVRM XID, NVSwitch SXid, fallen-off-the-bus and GPU reset lines → health events.

Modules, one job each: `parser` (lines → events, never raises), `decide` (catalog and policy →
action), `gpumap` (PCI address → GPU UUID), `dedupe` (flood control), `follow` (/dev/kmsg, files,
journal exports as async line sources with positions to resume at), `state` (what the monitor keeps
across restarts), `holds` (when the node's remediation ends), `monitor` (all of it → `HealthEvent`s to
a sink) and `cli` (`gpuheal kmsg parse`).
"""
