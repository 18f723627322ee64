"""The node's GPUs as the NVIDIA driver lists them under `/proc/driver/nvidia/gpus`.

Each GPU has a directory named after its PCI address (`0000:3b:00.0`; Azure VMs use wider domains,
`0001:00:00.0` or eight hex digits) holding an `information` file whose `Device Minor:` line is the
GPU's device minor number, the `<minor>` of its `/dev/nvidia<minor>` device node. The injector takes
it as the GPU's index. It is often the index nvidia-smi and NVML show, but not always: those count
GPUs in PCI bus order, while the driver hands out minors as it probes the GPUs, so the two can
differ; `nvidia-smi --query-gpu=index,pci.bus_id` and the
`Bus Location:` in the same file tell them apart. This needs neither NVML nor nvidia-smi, so the
injector's image carries no driver libraries.
"""

from __future__ import annotations

import re
from pathlib import Path

DEFAULT_ROOT = Path("/proc/driver/nvidia/gpus")

# domain:bus:device.function, the domain 4 to 8 hex digits.
PCI_ADDRESS = re.compile(r"[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]", re.ASCII)
_MINOR = re.compile(r"^Device Minor:[ \t]*([0-9]{1,4})[ \t]*$", re.ASCII | re.MULTILINE)


def discover_gpus(root: Path = DEFAULT_ROOT) -> dict[int, str]:
    """GPU index → PCI address, from the driver's directory at `root` (empty when there is none).

    Entries that are not a PCI address, or whose `information` file is missing or has no
    `Device Minor:` line, are skipped: they name no GPU the injector could address.
    """
    gpus: dict[int, str] = {}
    try:
        entries = sorted(root.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return gpus
    for entry in entries:
        if not PCI_ADDRESS.fullmatch(entry.name):
            continue
        try:
            information = (entry / "information").read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        minor = _MINOR.search(information)
        if minor is not None:
            gpus.setdefault(int(minor[1]), entry.name)
    return gpus
