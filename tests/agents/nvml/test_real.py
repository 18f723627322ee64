"""RealNvml: the clear error where there is no GPU, the pynvml boundary, and an opt-in run on real GPUs."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pynvml  # type: ignore[import-untyped]
import pytest

from gpuheal.agents.nvml import (
    GpuLostError,
    HealthSignals,
    Nvml,
    NvmlCallError,
    NvmlUnavailableError,
    RealNvml,
    RemappedRows,
)
from gpuheal.agents.nvml.probe import EXIT_UNAVAILABLE, main

from .test_probe import json_values


def _gpu_present() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    try:
        return int(pynvml.nvmlDeviceGetCount()) > 0
    finally:
        pynvml.nvmlShutdown()


GPU_PRESENT = _gpu_present()
needs_gpu = pytest.mark.skipif(not GPU_PRESENT, reason="needs an NVIDIA GPU and driver; run on a GPU machine")
needs_no_gpu = pytest.mark.skipif(GPU_PRESENT, reason="this machine has a working NVML")


def test_it_implements_the_interface() -> None:
    assert isinstance(RealNvml(), Nvml)


@needs_no_gpu
def test_init_without_a_driver_raises_the_clear_error() -> None:
    nvml = RealNvml()
    with pytest.raises(NvmlUnavailableError, match=r"^NVML is not available on this machine: .*(Not Found|Not Loaded)"):
        nvml.init()
    nvml.shutdown()  # harmless after a failed init


@needs_no_gpu
def test_the_probe_exits_2_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--wait", "0"]) == EXIT_UNAVAILABLE
    assert capsys.readouterr().err.startswith("NVML is not available on this machine: ")


# --- the pynvml boundary, with the library's functions replaced by a scripted driver ----------------


def _error(code: int) -> Callable[..., Any]:
    def fail(*_args: Any) -> Any:
        raise pynvml.NVMLError(code)

    return fail


@pytest.fixture
def driver(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Two GPUs: h0 answers (serial and retired pages unsupported), h1 is lost and refuses XID events."""
    waits: list[Any] = [
        SimpleNamespace(device="h0", eventType=pynvml.nvmlEventTypeXidCriticalError, eventData=79),
        pynvml.NVMLError(pynvml.NVML_ERROR_TIMEOUT),
    ]
    calls: dict[str, Any] = {"freed": 0, "shutdown": 0}

    def lost_or(value: Callable[..., Any]) -> Callable[..., Any]:
        def call(handle: str, *args: Any) -> Any:
            if handle == "h1":
                raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
            return value(handle, *args)

        return call

    def wait(_set: Any, _ms: int) -> Any:
        item = waits.pop(0) if waits else pynvml.NVMLError(pynvml.NVML_ERROR_TIMEOUT)
        if isinstance(item, Exception):
            raise item
        return item

    def register(handle: str, _types: int, _set: Any) -> None:
        if handle == "h1":
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    replacements: dict[str, Callable[..., Any]] = {
        "nvmlInit": lambda: None,
        "nvmlShutdown": lambda: calls.__setitem__("shutdown", calls["shutdown"] + 1),
        "nvmlDeviceGetCount": lambda: 2,
        "nvmlDeviceGetHandleByIndex": lambda i: f"h{i}",
        "nvmlDeviceGetUUID": lambda h: f"GPU-0000000{h[1]}-0000-0000-0000-000000000000",
        "nvmlDeviceGetPciInfo": lambda h: SimpleNamespace(busId=b"00000000:3B:00.0"),
        "nvmlDeviceGetName": lambda h: "NVIDIA H100 80GB HBM3",
        "nvmlDeviceGetSerial": _error(pynvml.NVML_ERROR_NOT_SUPPORTED),
        "nvmlDeviceGetMinorNumber": lambda h: 0,
        "nvmlDeviceGetTotalEccErrors": lost_or(lambda h, _t, counter: 3 if counter == pynvml.NVML_VOLATILE_ECC else 7),
        "nvmlDeviceGetRetiredPagesPendingStatus": lost_or(_error(pynvml.NVML_ERROR_NOT_SUPPORTED)),
        "nvmlDeviceGetRemappedRows": lost_or(lambda h: (1, 0, 1, 0)),
        "nvmlEventSetCreate": lambda: "event-set",
        "nvmlDeviceRegisterEvents": register,
        "nvmlEventSetWait_v2": wait,
        "nvmlEventSetFree": lambda _s: calls.__setitem__("freed", calls["freed"] + 1),
    }
    for name, replacement in replacements.items():
        monkeypatch.setattr(pynvml, name, replacement)
    return calls


def test_identities_and_signals_come_back_in_gpuheals_types(driver: dict[str, Any]) -> None:
    nvml = RealNvml()
    nvml.init()
    info = nvml.device_info(0)
    assert (info.uuid, info.pci_bus_id, info.pci, info.serial, info.minor_number) == (
        "GPU-00000000-0000-0000-0000-000000000000",
        "00000000:3B:00.0",
        "0000:3b:00.0",
        None,  # unsupported serial: unknown, not a failure
        0,
    )
    # Retired pages unsupported: None ("unknown"); the rest read.
    assert nvml.health_signals(0) == HealthSignals(3, 7, None, RemappedRows(1, 0, True, False))
    with pytest.raises(GpuLostError):
        nvml.health_signals(1)
    with pytest.raises(NvmlCallError, match="no GPU at index 5"):
        nvml.health_signals(5)


def test_xid_events_register_where_supported_and_a_timeout_is_none(driver: dict[str, Any]) -> None:
    nvml = RealNvml()
    nvml.init()
    nvml.device_info(0)
    assert nvml.register_xid_events() == (0,)
    event = nvml.wait_xid_event(0.1)
    assert event is not None and (event.xid, event.index, event.uuid[:12]) == (79, 0, "GPU-00000000")
    assert nvml.wait_xid_event(0.1) is None
    nvml.shutdown()
    nvml.shutdown()
    assert driver == {"freed": 1, "shutdown": 1}


def test_a_lost_gpu_is_skipped_when_registering_for_xid_events(
    driver: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def register(handle: str, _types: int, _set: Any) -> None:
        if handle == "h1":
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)

    monkeypatch.setattr(pynvml, "nvmlDeviceRegisterEvents", register)
    nvml = RealNvml()
    nvml.init()
    assert nvml.register_xid_events() == (0,)


def test_other_nvml_failures_are_call_errors(driver: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pynvml, "nvmlDeviceGetName", _error(pynvml.NVML_ERROR_NO_PERMISSION))
    nvml = RealNvml()
    nvml.init()
    with pytest.raises(NvmlCallError, match="GPU 0: Insufficient Permissions"):
        nvml.device_info(0)


# --- opt-in: a machine with an NVIDIA GPU and driver --------------------------------------------------


@needs_gpu
def test_real_gpus_enumerate_and_report_their_signals() -> None:
    nvml = RealNvml()
    nvml.init()
    try:
        count = nvml.device_count()
        assert count > 0
        infos = [nvml.device_info(i) for i in range(count)]
        assert all(i.uuid.startswith(("GPU-", "MIG-")) for i in infos)
        assert len({i.uuid for i in infos}) == count
        assert all(i.pci.count(":") == 2 for i in infos)
        for index in range(count):
            assert isinstance(nvml.health_signals(index), HealthSignals)
        nvml.register_xid_events()
        begun = time.monotonic()
        event = nvml.wait_xid_event(0.2)
        assert time.monotonic() - begun < 2.0  # the wait is bounded, so shutdown is prompt
        assert event is None or event.xid > 0
    finally:
        nvml.shutdown()


@needs_gpu
def test_the_probe_prints_the_real_gpus() -> None:
    out = io.StringIO()
    assert main(["--wait", "0.2"], out=out) == 0
    report = json_values(out.getvalue())[0]
    assert report["gpu_count"] == len(report["gpus"]) > 0
    assert all("health" in gpu and gpu["uuid"] for gpu in report["gpus"])
