"""Flood control windows, and the PCI address → GPU UUID map."""

from __future__ import annotations

import sys
import types
from collections.abc import Mapping
from pathlib import Path

import pytest

from gpuheal.agents.kmsg.dedupe import Deduper, Released
from gpuheal.agents.kmsg.gpumap import PROC_GPUS, GpuMap, nvml_gpus, read_proc_gpus

UUID_A = "GPU-6b3a1c3e-0b0e-4f7e-9a43-1c2d3e4f5a6b"
UUID_B = "GPU-b6c3b2be-c55b-d076-fa0e-d464e4c7e08b"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_pass_per_window_with_the_count_carried() -> None:
    clock = Clock()
    dedupe: Deduper[str, None] = Deduper(60.0, clock=clock)
    assert dedupe.admit("a") == 0
    assert all(dedupe.admit("a") is None for _ in range(4999))
    assert dedupe.admit("b") == 0  # other keys have windows of their own
    assert dedupe.pending() == {"a": 4999}
    clock.now += 59.9
    assert dedupe.admit("a") is None
    clock.now += 0.1
    assert dedupe.admit("a") == 5000  # the next window passes and carries what the last one held back
    assert dedupe.admit("a") is None
    clock.now += 120
    assert dedupe.admit("b") == 0


def test_forget_clear_and_bounds() -> None:
    clock = Clock()
    dedupe: Deduper[tuple[str, int], None] = Deduper(60.0, clock=clock, max_keys=3)
    for n in range(5):
        assert dedupe.admit(("gpu", n)) == 0
    assert len(dedupe) == 3  # the oldest windows went first
    assert dedupe.admit(("gpu", 0)) == 0
    dedupe.forget(lambda key: key[1] == 4)
    assert dedupe.admit(("gpu", 4)) == 0
    dedupe.clear()
    assert len(dedupe) == 0
    no_window: Deduper[str, None] = Deduper(0.0, clock=clock)
    assert no_window.admit("x") == 0
    assert no_window.admit("x") == 0
    with pytest.raises(ValueError, match="negative"):
        Deduper(-1.0)


def test_release_ends_every_window_and_hands_back_recent_drops() -> None:
    clock = Clock()
    dedupe: Deduper[str, str] = Deduper(60.0, clock=clock)
    assert dedupe.admit("old", "old 1") == 0
    assert dedupe.admit("old", "old 2") is None  # dropped at 1000
    assert dedupe.admit("recent", "recent 1") == 0
    assert dedupe.admit("quiet", "quiet 1") == 0  # nothing dropped: nothing to hand back
    clock.now += 10
    assert dedupe.admit("recent", "recent 2") is None
    assert dedupe.admit("recent", "recent 3") is None  # dropped at 1010: the last one is kept
    assert dedupe.release(since=1005.0) == [Released("recent", 2, "recent 3")]
    assert len(dedupe) == 0
    assert dedupe.admit("old", "old 3") == 0, "every window ended, the folded ones too"


def _information(folder: Path, uuid: str, bus: str | None) -> None:
    folder.mkdir(parents=True)
    lines = [
        "Model: \t\t NVIDIA H100 80GB HBM3",
        "IRQ:   \t\t 133",
        f"GPU UUID: \t {uuid}",
        "Video BIOS: \t 96.00.61.00.01",
    ]
    if bus:
        lines.append(f"Bus Location: \t {bus}")
    lines.append("Device Minor: \t 0")
    (folder / "information").write_text("\n".join(lines) + "\n")


def test_proc_information_files(tmp_path: Path) -> None:
    _information(tmp_path / "0000:3b:00.0", UUID_A, "0000:3b:00.0")
    _information(tmp_path / "0001:00:00.0", "GPU-" + UUID_B[4:].upper(), None)  # no Bus Location line
    _information(tmp_path / "0000:5d:00.0", "GPU-????????-????-????-????-????????????", "0000:5d:00.0")
    (tmp_path / "0000:86:00.0").mkdir()  # no information file
    assert read_proc_gpus(tmp_path) == {"0000:3b:00.0": UUID_A, "0001:00:00.0": UUID_B}
    assert read_proc_gpus(tmp_path / "missing") == {}
    gpus = GpuMap(proc_root=tmp_path)
    for written in ("0000:3b:00", "0000:3b:00.0", "00000000:3B:00.0", "PCI:0000:3b:00"):
        assert gpus.lookup(written) == UUID_A
    assert gpus.lookup("0001:00:00") == UUID_B
    assert gpus.lookup("not an address") is None


def test_injected_sources_and_rate_limited_refresh() -> None:
    clock = Clock()
    reads: list[int] = []
    table: dict[str, str] = {"00000000:3B:00.0": UUID_A}

    def source() -> Mapping[str, str]:
        reads.append(1)
        if len(reads) == 3:
            raise RuntimeError("NVML went away")
        return dict(table)

    gpus = GpuMap(source, clock=clock, refresh_interval=30.0)
    assert gpus.lookup("0000:3b:00") == UUID_A
    table["0000:86:00.0"] = UUID_B
    assert gpus.lookup("0000:86:00") is None  # an unknown address re-reads at most once per interval
    assert len(reads) == 1
    clock.now += 30
    assert gpus.lookup("0000:86:00") == UUID_B
    clock.now += 30
    gpus.refresh()  # fails: the last good map stays
    assert gpus.known() == {"0000:3b:00.0": UUID_A, "0000:86:00.0": UUID_B}
    assert GpuMap({"0000:3b:00.0": UUID_A}).known() == {"0000:3b:00.0": UUID_A}


def test_nvml_source_through_a_stand_in_module(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    devices = [(b"00000000:3B:00.0", "GPU-" + UUID_A[4:].upper()), ("00000001:00:00.0", UUID_B)]
    fake = types.ModuleType("pynvml")
    fake.nvmlInit = lambda: calls.append("init")  # type: ignore[attr-defined]
    fake.nvmlShutdown = lambda: calls.append("shutdown")  # type: ignore[attr-defined]
    fake.nvmlDeviceGetCount = lambda: len(devices)  # type: ignore[attr-defined]
    fake.nvmlDeviceGetHandleByIndex = lambda index: index  # type: ignore[attr-defined]
    fake.nvmlDeviceGetUUID = lambda handle: devices[handle][1]  # type: ignore[attr-defined]
    fake.nvmlDeviceGetPciInfo = lambda handle: types.SimpleNamespace(busId=devices[handle][0])  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert nvml_gpus() == {"0000:3b:00.0": UUID_A, "0001:00:00.0": UUID_B}
    assert calls == ["init", "shutdown"]


@pytest.mark.skipif(not PROC_GPUS.is_dir(), reason="no NVIDIA driver on this machine")
def test_the_real_driver_and_nvml_agree() -> None:
    from_proc = read_proc_gpus()
    assert from_proc
    assert nvml_gpus() == from_proc
