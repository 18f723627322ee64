"""`RealNvml`: the `Nvml` interface over nvidia-ml-py (`pynvml`).

pynvml imports on any machine; only `nvmlInit` needs the driver. Its failure there (library not
found, driver not loaded, …) becomes `NvmlUnavailableError`, whose message starts "NVML is not
available on this machine". pynvml is untyped, so every call goes through the few typed helpers at
the bottom of this module and the rest of gpuheal only sees gpuheal's types.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import pynvml  # type: ignore[import-untyped]

from gpuheal.agents.nvml.interface import (
    GpuInfo,
    GpuLostError,
    HealthSignals,
    NvmlCallError,
    NvmlUnavailableError,
    RemappedRows,
    XidEvent,
)

T = TypeVar("T")

# Error codes that mean "this GPU or driver cannot answer that question", i.e. the signal is unknown.
_UNKNOWN_CODES = frozenset({pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND})
_XID_EVENT: int = pynvml.nvmlEventTypeXidCriticalError


class RealNvml:
    """NVML through nvidia-ml-py. Thread-safe for the provider's use: one waiter thread, one poller."""

    def __init__(self) -> None:
        self._handles: list[Any] = []
        self._index_by_uuid: dict[str, int] = {}
        self._event_set: Any = None
        self._initialised = False
        self._lock = threading.Lock()

    def init(self) -> None:
        """Initialise NVML and look up every device handle once."""
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as err:
            raise NvmlUnavailableError(_describe(err)) from err
        except OSError as err:  # a broken library file surfaces from ctypes, not as an NVMLError
            raise NvmlUnavailableError(str(err)) from err
        self._initialised = True
        count: int = _call(-1, pynvml.nvmlDeviceGetCount)
        self._handles = [_call(i, pynvml.nvmlDeviceGetHandleByIndex, i) for i in range(count)]

    def shutdown(self) -> None:
        """Free the event set and shut NVML down; safe to call twice or after a failed init."""
        with self._lock:
            if self._event_set is not None:
                _ignore_errors(pynvml.nvmlEventSetFree, self._event_set)
                self._event_set = None
            if self._initialised:
                self._initialised = False
                self._handles = []
                _ignore_errors(pynvml.nvmlShutdown)

    def device_count(self) -> int:
        return len(self._handles)

    def device_info(self, index: int) -> GpuInfo:
        handle = self._handle(index)
        uuid = _text(_call(index, pynvml.nvmlDeviceGetUUID, handle))
        pci_info = _call(index, pynvml.nvmlDeviceGetPciInfo, handle)
        serial = _optional(index, pynvml.nvmlDeviceGetSerial, handle)
        minor = _optional(index, pynvml.nvmlDeviceGetMinorNumber, handle)
        self._index_by_uuid[uuid] = index
        return GpuInfo(
            index=index,
            uuid=uuid,
            pci_bus_id=_text(pci_info.busId),
            name=_text(_call(index, pynvml.nvmlDeviceGetName, handle)),
            serial=_text(serial) if serial is not None else None,
            minor_number=int(minor) if minor is not None else None,
        )

    def health_signals(self, index: int) -> HealthSignals:
        handle = self._handle(index)
        dbe = pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
        volatile = _optional(index, pynvml.nvmlDeviceGetTotalEccErrors, handle, dbe, pynvml.NVML_VOLATILE_ECC)
        aggregate = _optional(index, pynvml.nvmlDeviceGetTotalEccErrors, handle, dbe, pynvml.NVML_AGGREGATE_ECC)
        pending = _optional(index, pynvml.nvmlDeviceGetRetiredPagesPendingStatus, handle)
        rows = _optional(index, pynvml.nvmlDeviceGetRemappedRows, handle)
        return HealthSignals(
            ecc_dbe_volatile=int(volatile) if volatile is not None else None,
            ecc_dbe_aggregate=int(aggregate) if aggregate is not None else None,
            retired_pages_pending=bool(pending) if pending is not None else None,
            remapped_rows=(
                RemappedRows(int(rows[0]), int(rows[1]), bool(rows[2]), bool(rows[3])) if rows is not None else None
            ),
        )

    def register_xid_events(self) -> tuple[int, ...]:
        with self._lock:
            if self._event_set is None:
                self._event_set = _call(-1, pynvml.nvmlEventSetCreate)
            registered: list[int] = []
            for index, handle in enumerate(self._handles):
                try:
                    pynvml.nvmlDeviceRegisterEvents(handle, _XID_EVENT, self._event_set)
                except pynvml.NVMLError as err:
                    if err.value in _UNKNOWN_CODES:
                        continue  # some GPUs (and vGPUs) refuse XID events; they are still polled
                    if err.value == pynvml.NVML_ERROR_GPU_IS_LOST:
                        continue  # a lost GPU is reported by the provider, not a reason to stop
                    raise _translate(index, err) from err
                registered.append(index)
            return tuple(registered)

    def wait_xid_event(self, timeout_s: float) -> XidEvent | None:
        event_set = self._event_set
        if event_set is None:
            raise NvmlCallError("wait_xid_event before register_xid_events")
        try:
            data = pynvml.nvmlEventSetWait_v2(event_set, max(0, int(timeout_s * 1000)))
        except pynvml.NVMLError as err:
            if err.value == pynvml.NVML_ERROR_TIMEOUT:
                return None
            raise _translate(-1, err) from err
        if not int(data.eventType) & _XID_EVENT:
            return None
        uuid = _text(_call(-1, pynvml.nvmlDeviceGetUUID, data.device))
        return XidEvent(
            uuid=uuid, xid=int(data.eventData), timestamp=datetime.now(UTC), index=self._index_by_uuid.get(uuid)
        )

    def _handle(self, index: int) -> Any:
        if not self._initialised:
            raise NvmlCallError("NVML is not initialised")
        try:
            return self._handles[index]
        except IndexError:
            raise NvmlCallError(f"no GPU at index {index}") from None


# --- the typed boundary around pynvml ---------------------------------------------------------------


def _call(index: int, fn: Callable[..., T], *args: Any) -> T:
    """Call a pynvml function, turning its errors into gpuheal's."""
    try:
        return fn(*args)
    except pynvml.NVMLError as err:
        raise _translate(index, err) from err


def _optional(index: int, fn: Callable[..., Any], *args: Any) -> Any:
    """Like `_call`, but an unsupported signal reads as None ("unknown") instead of failing."""
    try:
        return fn(*args)
    except pynvml.NVMLError as err:
        if err.value in _UNKNOWN_CODES:
            return None
        raise _translate(index, err) from err


def _translate(index: int, err: Any) -> Exception:
    if err.value == pynvml.NVML_ERROR_GPU_IS_LOST:
        return GpuLostError(index, _describe(err))
    return NvmlCallError(f"GPU {index}: {_describe(err)}" if index >= 0 else _describe(err))


def _describe(err: Any) -> str:
    try:
        return f"{err} ({type(err).__name__})"
    except Exception:  # pynvml looks unknown codes up in the library, which may be missing
        return type(err).__name__


def _ignore_errors(fn: Callable[..., Any], *args: Any) -> None:
    # Shutting down: nothing useful can be done with a failure here.
    with contextlib.suppress(pynvml.NVMLError):
        fn(*args)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
