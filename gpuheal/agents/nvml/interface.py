"""The NVML operations gpuheal needs, in gpuheal's own types.

`Nvml` is the seam between the provider and the driver: `RealNvml` implements it with nvidia-ml-py,
`FakeNvml` in memory. Every method is synchronous and may block (NVML is a C library); callers on an
event loop run them in a thread. The XID wait takes a timeout so that such a thread always comes
back within a bounded time.

A health signal the GPU does not support (NVML_ERROR_NOT_SUPPORTED, or a driver too old to have the
function) is reported as `None`, meaning "unknown": it is neither healthy nor unhealthy, and nothing
should change because of it. A GPU that stopped answering raises `GpuLostError`; any other NVML
failure raises `NvmlCallError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable

from gpuheal.agents.gpu_identity import pci_key


class NvmlError(Exception):
    """Base of every error the NVML layer raises."""


class NvmlUnavailableError(NvmlError):
    """NVML cannot be used here at all: no driver, no library, or initialisation refused."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"NVML is not available on this machine: {detail}")
        self.detail = detail


class NvmlCallError(NvmlError):
    """An NVML call failed for a reason other than "not supported" or "GPU lost"."""


class GpuLostError(NvmlError):
    """The GPU no longer answers (NVML_ERROR_GPU_IS_LOST): it fell off the bus or was failed on purpose."""

    def __init__(self, index: int, detail: str = "GPU is lost") -> None:
        super().__init__(f"GPU {index}: {detail}")
        self.index = index
        self.detail = detail


class Signal(StrEnum):
    """The health signals a poll reads; used to script which ones a fake GPU does not support."""

    ECC_DBE = "ecc_dbe"
    RETIRED_PAGES = "retired_pages"
    REMAPPED_ROWS = "remapped_rows"


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """What identifies one GPU. `serial` and `minor_number` are None where NVML does not report them."""

    index: int
    uuid: str
    pci_bus_id: str
    name: str
    serial: str | None
    minor_number: int | None

    @property
    def pci(self) -> str:
        """The PCI address in the agent's one normalised form (`0000:3b:00.0`), as the kernel-log
        monitor keys GPUs too, so events from both name a GPU the same way."""
        return pci_key(self.pci_bus_id) or self.pci_bus_id.strip().lower()


@dataclass(frozen=True, slots=True)
class RemappedRows:
    """`nvmlDeviceGetRemappedRows`: rows remapped for correctable and uncorrectable errors, and two flags.

    `pending` means a remapping waits for a GPU reset to take effect; `failure` means a remapping
    could not be made (the bank has no spare row left).
    """

    correctable: int
    uncorrectable: int
    pending: bool
    failure: bool


@dataclass(frozen=True, slots=True)
class HealthSignals:
    """One reading of a GPU's health signals; `None` marks a signal the GPU does not support.

    The double-bit (uncorrectable) ECC counts are the volatile one (since the driver loaded or the
    GPU was last reset) and the aggregate one (over the GPU's life).
    """

    ecc_dbe_volatile: int | None = None
    ecc_dbe_aggregate: int | None = None
    retired_pages_pending: bool | None = None
    remapped_rows: RemappedRows | None = None


@dataclass(frozen=True, slots=True)
class XidEvent:
    """One XID critical-error event.

    NVML's event data has no time of its own, so `timestamp` is when the event was taken from the
    event set. `index` is None for a device the enumeration did not see.
    """

    uuid: str
    xid: int
    timestamp: datetime
    index: int | None = None


@runtime_checkable
class Nvml(Protocol):
    """The NVML operations gpuheal uses. All calls may block; none may be made before `init`."""

    def init(self) -> None:
        """Initialise NVML; raises `NvmlUnavailableError` when it cannot be used on this machine."""
        ...

    def shutdown(self) -> None:
        """Release the event set and NVML. Call only once no `wait_xid_event` is in progress."""
        ...

    def device_count(self) -> int:
        """How many GPUs NVML sees."""
        ...

    def device_info(self, index: int) -> GpuInfo:
        """UUID, PCI bus id, name, serial and minor number of the GPU at `index`."""
        ...

    def health_signals(self, index: int) -> HealthSignals:
        """Read the GPU's health signals; unsupported ones come back as None."""
        ...

    def register_xid_events(self) -> tuple[int, ...]:
        """Register every GPU for XID critical-error events; returns the indices that support them."""
        ...

    def wait_xid_event(self, timeout_s: float) -> XidEvent | None:
        """Block until an XID event arrives or `timeout_s` passes (then None)."""
        ...
