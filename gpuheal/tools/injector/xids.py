"""Which XIDs may be injected, and the driver line that reports one.

An XID may be injected when NVIDIA's catalog (`gpuheal.domain.catalog`) knows it, or when the
injector's documentation lists it (its devastating and subsystem XIDs). The line is what the NVIDIA
driver writes, as `/dev/kmsg` takes it from user space: a syslog priority (`<3>`, an error), then
`NVRM: NVRM: Xid (PCI:<addr>): <xid>, <description>`. The `NVRM:` is doubled on purpose: the kernel
files user-written records under the user facility, and journald then takes the first `NVRM:` as the
syslog identifier, so the message keeps the second, as a driver-written line would.
"""

from __future__ import annotations

from gpuheal.domain.catalog import xid_catalog

# The injector documentation's devastating XIDs, with the descriptions it gives them.
DEVASTATING: dict[int, str] = {
    79: "GPU has fallen off the bus",
    74: "NVLink uncorrectable error",
    48: "Double-bit ECC error",
    94: "Contained ECC error",
    95: "Uncontained error",
    119: "GSP RPC Timeout",
    120: "GSP Error",
    140: "ECC unrecovered error",
}

# Its subsystem XIDs, each described by the subsystem it reports on.
SUBSYSTEM: dict[int, str] = {
    **dict.fromkeys((31, 32, 43, 63, 64), "Memory subsystem error"),
    **dict.fromkeys((38, 39, 42), "PCIe subsystem error"),
    **dict.fromkeys((60, 61, 62), "Thermal subsystem error"),
    **dict.fromkeys((54, 56, 57), "Power subsystem error"),
    **dict.fromkeys((13, 45, 69), "Graphics subsystem error"),
}

# The syslog priority of the line: LOG_ERR, the level the driver logs XIDs at.
PRIORITY = 3


class UnknownXid(ValueError):
    """The XID is neither in the catalog nor in the injector's lists."""


def describe(xid: int) -> str:
    """The description the injected line carries for `xid`; `UnknownXid` when it may not be injected."""
    if xid in DEVASTATING:
        return DEVASTATING[xid]
    if xid in SUBSYSTEM:
        return SUBSYSTEM[xid]
    entry = xid_catalog().get(xid)
    if entry is None:
        raise UnknownXid(f"XID {xid} is not in the XID catalog nor in the injector's lists")
    return entry.mnemonic


def driver_line(pci: str, xid: int) -> str:
    """The kernel log record for `xid` on the GPU at `pci`, priority prefix included, without a newline."""
    return f"<{PRIORITY}>NVRM: NVRM: Xid (PCI:{pci}): {xid}, {describe(xid)}"
