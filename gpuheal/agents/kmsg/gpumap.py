"""Which GPU sits at which PCI address: the link from a kernel line's address to a GPU UUID.

The map comes from an injected source (a dict, or a function such as `nvml_gpus` that returns one),
or by default from the driver's `/proc/driver/nvidia/gpus/<address>/information` files, which need
neither NVML nor nvidia-smi. Keys are normalised (`pci_key`), so `0000:3b:00`, `0000:3b:00.0` and
`00000000:3B:00.0` all find the same GPU.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from gpuheal.agents.gpu_identity import normalise_uuid, pci_key

log = logging.getLogger(__name__)

PROC_GPUS = Path("/proc/driver/nvidia/gpus")

GpuSource = Callable[[], Mapping[str, str]]


def read_proc_gpus(root: Path = PROC_GPUS) -> dict[str, str]:
    """PCI key → GPU UUID from the driver's information files; empty when there is no driver.

    Each `information` file has `GPU UUID: GPU-...` and `Bus Location: 0000:3b:00.0` lines; the
    directory name is the address too, and stands in when the file lacks the line. A GPU whose UUID
    can't be read (the driver writes `GPU-????...` for a GPU it lost) is left out.
    """
    gpus: dict[str, str] = {}
    try:
        folders = sorted(root.iterdir())
    except OSError:
        return gpus
    for folder in folders:
        try:
            text = (folder / "information").read_text("utf-8", errors="replace")
        except OSError:
            continue
        fields: dict[str, str] = {}
        for line in text.splitlines():
            name, separator, value = line.partition(":")
            if separator:
                fields[name.strip().lower()] = value.strip()
        key = pci_key(fields.get("bus location", "")) or pci_key(folder.name)
        uuid = normalise_uuid(fields.get("gpu uuid", ""))
        if key and uuid:
            gpus[key] = uuid
    return gpus


def nvml_gpus() -> dict[str, str]:
    """PCI key → GPU UUID from NVML (nvidia-ml-py); raises when NVML is unavailable.

    Imported on first use: the package is a dependency, but the library behind it exists only on
    GPU machines.
    """
    nvml = importlib.import_module("pynvml")
    nvml.nvmlInit()
    try:
        gpus: dict[str, str] = {}
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            uuid = _text(nvml.nvmlDeviceGetUUID(handle))
            bus_id = _text(nvml.nvmlDeviceGetPciInfo(handle).busId)
            key, normal = pci_key(bus_id), normalise_uuid(uuid)
            if key and normal:
                gpus[key] = normal
        return gpus
    finally:
        nvml.nvmlShutdown()


def _text(value: object) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


class GpuMap:
    """PCI address → GPU UUID, refreshed from its source when an unknown address is asked for.

    Refreshes are rate-limited (`refresh_interval` seconds on `clock`), so a flood of lines about an
    address the source does not know (an NVSwitch, a GPU gone from the bus) reads the source rarely.
    A source that fails keeps the last good map.
    """

    def __init__(
        self,
        source: Mapping[str, str] | GpuSource | None = None,
        *,
        proc_root: Path = PROC_GPUS,
        refresh_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if source is None:
            self._source: GpuSource = lambda: read_proc_gpus(proc_root)
        elif callable(source):
            self._source = source
        else:
            fixed = dict(source)
            self._source = lambda: fixed
        self._refresh_interval = refresh_interval
        self._clock = clock
        self._gpus: dict[str, str] = {}
        self._refreshed_at: float | None = None

    def refresh(self) -> None:
        """Read the source now."""
        self._refreshed_at = self._clock()
        try:
            found = self._source()
        except Exception:
            log.warning("reading the GPU map failed; keeping %d known GPUs", len(self._gpus), exc_info=True)
            return
        gpus: dict[str, str] = {}
        for address, uuid in found.items():
            key, normal = pci_key(address), normalise_uuid(uuid)
            if key and normal:
                gpus[key] = normal
        self._gpus = gpus

    def lookup(self, pci: str) -> str | None:
        """The UUID of the GPU at an address in any written form, or None when none is known there."""
        key = pci_key(pci)
        if key is None:
            return None
        if key not in self._gpus and self._due():
            self.refresh()
        return self._gpus.get(key)

    def known(self) -> dict[str, str]:
        """Every GPU known: PCI key → UUID (reads the source once if it never was)."""
        if self._refreshed_at is None:
            self.refresh()
        return dict(self._gpus)

    def _due(self) -> bool:
        return self._refreshed_at is None or self._clock() - self._refreshed_at >= self._refresh_interval
