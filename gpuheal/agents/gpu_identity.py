"""Which GPU is meant: PCI addresses and GPU UUIDs, each reduced to one form.

Kernel lines, the driver's files, NVML and the Device API name GPUs in different spellings; every
part of the agent compares them in the forms defined here.

PCI addresses: the same GPU shows up as `0000:3b:00` (XID lines), `0000:3b:00.0` (most other NVRM lines and
`/proc/driver/nvidia/gpus/`), `00000000:3B:00.0` (nvidia-smi and NVML) and `0001:00:00.0` (Azure's
extended domains). `pci_key` maps all of them to `dddd:bb:dd.f` in lower case, so state and lookups
agree whatever form a line used.

GPU UUIDs: `GPU-` and 32 hex digits, which NVML and `/proc` write in lower case and some tools in
upper case. `normalise_uuid` gives the lower-case form NVML writes; `gpu_name` gives the Device API's
name for the GPU.
"""

from __future__ import annotations

import re

# Domain: up to 8 hex digits (NVML pads to 8; Hyper-V guests use the full 32 bits). Bus: 8 bits.
# Device: two hex digits. The PCI spec gives it 5 bits (at most 0x1f), but virtual machines and
# drivers in the wild write others (`0000:3b:a0.0`), and such a line still names a GPU. Function: 3 bits.
_PCI = re.compile(
    r"(?P<domain>[0-9a-fA-F]{1,8}):(?P<bus>[0-9a-fA-F]{2}):(?P<device>[0-9a-fA-F]{2})(?:\.(?P<function>[0-7]))?",
    re.ASCII,
)

# The patterns the kmsg parser embeds in its own line patterns (without groups of their own).
PCI_PATTERN = r"[0-9a-fA-F]{1,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}(?:\.[0-7])?"
UUID_PATTERN = r"GPU-[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_UUID = re.compile(UUID_PATTERN, re.ASCII)


def pci_key(address: str) -> str | None:
    """The normalised key of a PCI address, or None when the text is not one.

    A leading `PCI:` tag is accepted; a missing function is read as function 0.
    """
    text = address.strip()
    if text[:4].upper() == "PCI:":
        text = text[4:]
    match = _PCI.fullmatch(text)
    if match is None:
        return None
    domain = int(match["domain"], 16)
    function = match["function"] or "0"
    return f"{domain:04x}:{match['bus'].lower()}:{match['device'].lower()}.{function}"


def normalise_uuid(text: str) -> str | None:
    """`GPU-` and the UUID's hex digits in lower case, or None when the text holds no GPU UUID."""
    match = _UUID.search(text)
    return "GPU-" + match[0][4:].lower() if match else None


def gpu_name(uuid: str) -> str:
    """The Device API name of a GPU: its UUID in lower case (object names allow no capitals)."""
    return uuid.lower()
