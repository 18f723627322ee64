"""`FakeNvml`: the `Nvml` interface in memory, scriptable, for tests, the simulator and the demo.

A fake node has `count` GPUs whose identities derive only from the node name and the index, so the
same node always shows the same UUIDs, PCI addresses and serials. Faults are scripted from any
thread (or from the event loop): an injected XID wakes a waiter blocked in `wait_xid_event`, a
failed GPU raises `GpuLostError` from every call about it, and signals can be marked unsupported to
exercise the "unknown" path.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from gpuheal.agents.nvml.interface import (
    GpuInfo,
    GpuLostError,
    HealthSignals,
    NvmlCallError,
    NvmlUnavailableError,
    RemappedRows,
    Signal,
    XidEvent,
)

_NAMESPACE = uuid.UUID("6f1d3c5e-8a4b-4e0f-9c7d-2b1a0e9f8d7c")  # fixed so fake UUIDs never change


@dataclass
class _FakeGpu:
    info: GpuInfo
    ecc_dbe_volatile: int = 0
    ecc_dbe_aggregate: int = 0
    retired_pages_pending: bool = False
    remapped_rows: RemappedRows = field(default_factory=lambda: RemappedRows(0, 0, False, False))
    unsupported: set[Signal] = field(default_factory=set)
    xid_events: bool = True
    lost: bool = False


def fake_gpu_info(node: str, index: int, name: str = "NVIDIA H100 80GB HBM3") -> GpuInfo:
    """The identity fake GPU `index` on `node` always has (up to 65,536 GPUs per node stay unique)."""
    digest = hashlib.sha256(f"{node}/{index}".encode()).hexdigest()
    return GpuInfo(
        index=index,
        uuid=f"GPU-{uuid.uuid5(_NAMESPACE, f'{node}/{index}')}",
        pci_bus_id=f"{index // 256:08X}:{index % 256:02X}:00.0",
        name=name,
        serial=str(int(digest[:12], 16) % 10**13).rjust(13, "0"),
        minor_number=index,
    )


class FakeNvml:
    """In-memory NVML with `count` healthy GPUs named after `node`.

    `available=False` makes `init` fail the way a machine without a driver does.
    """

    def __init__(
        self, node: str = "node-0", count: int = 8, *, name: str = "NVIDIA H100 80GB HBM3", available: bool = True
    ) -> None:
        self.node = node
        self.available = available
        self._gpus = [_FakeGpu(fake_gpu_info(node, i, name)) for i in range(count)]
        self._events: deque[XidEvent] = deque()
        self._cond = threading.Condition()
        self._initialised = False
        self._registered = False
        self.init_calls = 0
        self.shutdown_calls = 0

    # --- the Nvml interface -------------------------------------------------------------------------

    def init(self) -> None:
        self.init_calls += 1
        if not self.available:
            raise NvmlUnavailableError("NVML Shared Library Not Found (fake GPU machine without a driver)")
        with self._cond:
            self._initialised = True

    def shutdown(self) -> None:
        self.shutdown_calls += 1
        with self._cond:
            self._initialised = False
            self._registered = False
            self._cond.notify_all()

    def device_count(self) -> int:
        self._check_init()
        return len(self._gpus)

    def device_info(self, index: int) -> GpuInfo:
        return self._gpu(index).info

    def health_signals(self, index: int) -> HealthSignals:
        gpu = self._gpu(index)
        with self._cond:
            ecc_known = Signal.ECC_DBE not in gpu.unsupported
            return HealthSignals(
                ecc_dbe_volatile=gpu.ecc_dbe_volatile if ecc_known else None,
                ecc_dbe_aggregate=gpu.ecc_dbe_aggregate if ecc_known else None,
                retired_pages_pending=(
                    gpu.retired_pages_pending if Signal.RETIRED_PAGES not in gpu.unsupported else None
                ),
                remapped_rows=gpu.remapped_rows if Signal.REMAPPED_ROWS not in gpu.unsupported else None,
            )

    def register_xid_events(self) -> tuple[int, ...]:
        self._check_init()
        with self._cond:
            self._registered = True
            return tuple(i for i, gpu in enumerate(self._gpus) if gpu.xid_events)

    def wait_xid_event(self, timeout_s: float) -> XidEvent | None:
        with self._cond:
            if not self._registered:
                raise NvmlCallError("wait_xid_event before register_xid_events")
            self._cond.wait_for(lambda: bool(self._events) or not self._registered, timeout=max(0.0, timeout_s))
            return self._events.popleft() if self._events else None

    # --- scripting ----------------------------------------------------------------------------------

    @property
    def gpus(self) -> tuple[GpuInfo, ...]:
        """The identities of every fake GPU, readable without `init`."""
        return tuple(gpu.info for gpu in self._gpus)

    def inject_xid(self, index: int, xid: int) -> XidEvent:
        """Deliver an XID critical-error event for GPU `index` to the waiter (if it registered for them)."""
        gpu = self._gpus[index]
        event = XidEvent(uuid=gpu.info.uuid, xid=xid, timestamp=datetime.now(UTC), index=index)
        with self._cond:
            if gpu.xid_events:
                self._events.append(event)
                self._cond.notify_all()
        return event

    def set_ecc_dbe(self, index: int, volatile: int, aggregate: int | None = None) -> None:
        """Set the double-bit ECC counts; the aggregate grows by any rise of the volatile count unless given."""
        gpu = self._gpus[index]
        with self._cond:
            gpu.ecc_dbe_aggregate = (
                aggregate if aggregate is not None else gpu.ecc_dbe_aggregate + max(0, volatile - gpu.ecc_dbe_volatile)
            )
            gpu.ecc_dbe_volatile = volatile

    def set_retired_pages_pending(self, index: int, pending: bool) -> None:
        with self._cond:
            self._gpus[index].retired_pages_pending = pending

    def set_remapped_rows(
        self, index: int, *, correctable: int = 0, uncorrectable: int = 0, pending: bool = False, failure: bool = False
    ) -> None:
        with self._cond:
            self._gpus[index].remapped_rows = RemappedRows(correctable, uncorrectable, pending, failure)

    def set_unsupported(self, index: int, *signals: Signal) -> None:
        """Make these signals read as NVML_ERROR_NOT_SUPPORTED ("unknown") on GPU `index`."""
        with self._cond:
            self._gpus[index].unsupported = set(signals)

    def set_xid_events_supported(self, index: int, supported: bool) -> None:
        """Whether GPU `index` accepts registration for XID events (takes effect at the next registration)."""
        with self._cond:
            self._gpus[index].xid_events = supported

    def fail_device(self, index: int) -> None:
        """From now on every call about GPU `index` raises `GpuLostError`, as for a GPU fallen off the bus."""
        with self._cond:
            self._gpus[index].lost = True

    def reset_gpu(self, index: int) -> None:
        """What a GPU reset does: the GPU answers again, the volatile ECC count restarts at zero, and
        pending page retirements and row remappings take effect. A remapping failure stays (hardware)."""
        gpu = self._gpus[index]
        with self._cond:
            gpu.lost = False
            gpu.ecc_dbe_volatile = 0
            gpu.retired_pages_pending = False
            gpu.remapped_rows = replace(gpu.remapped_rows, pending=False)

    def clear(self, index: int | None = None) -> None:
        """Back to a brand-new healthy GPU (all GPUs when `index` is None); queued XIDs are dropped too."""
        with self._cond:
            for i in range(len(self._gpus)) if index is None else (index,):
                self._gpus[i] = _FakeGpu(self._gpus[i].info)
            kept = [e for e in self._events if index is not None and e.index != index]
            self._events = deque(kept)

    # --- internals ----------------------------------------------------------------------------------

    def _check_init(self) -> None:
        if not self._initialised:
            raise NvmlCallError("NVML is not initialised")

    def _gpu(self, index: int) -> _FakeGpu:
        self._check_init()
        if not 0 <= index < len(self._gpus):
            raise NvmlCallError(f"no GPU at index {index}")
        gpu = self._gpus[index]
        if gpu.lost:
            raise GpuLostError(index)
        return gpu


def backend(node: str, gpus: int | None) -> FakeNvml:
    """The "fake" entry point of `gpuheal.nvml` (`gpuheal agent --fake-gpus N`)."""
    return FakeNvml(node) if gpus is None else FakeNvml(node, gpus)
