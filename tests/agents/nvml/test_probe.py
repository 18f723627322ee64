"""The probe's output, driven by FakeNvml (the real-GPU run is opt-in in test_real)."""

from __future__ import annotations

import io
import json
import threading
from typing import Any

import pytest

from gpuheal.agents.nvml.probe import EXIT_UNAVAILABLE, main
from gpuheal_sim.fake_nvml import FakeNvml


def json_values(text: str) -> list[Any]:
    """Every JSON value in `text`, in order (the probe prints one object, then one line per event)."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    position = 0
    while (position := len(text) - len(text[position:].lstrip())) < len(text):
        value, position = decoder.raw_decode(text, position)
        values.append(value)
    return values


def test_the_probe_prints_gpus_signals_and_xid_events() -> None:
    nvml = FakeNvml("probe-node", count=2)
    nvml.set_ecc_dbe(1, 1)
    nvml.set_unsupported(0)
    timer = threading.Timer(0.1, nvml.inject_xid, args=(1, 79))
    timer.start()
    out = io.StringIO()
    try:
        assert main(["--wait", "0.6"], nvml=nvml, out=out) == 0
    finally:
        timer.cancel()
    report, registered, *events = json_values(out.getvalue())
    assert [g["uuid"] for g in report["gpus"]] == [g.uuid for g in nvml.gpus]
    assert report["gpus"][1]["health"]["ecc_dbe_volatile"] == 1
    assert report["gpus"][0]["pci"] == "00000000:00:00.0" and report["gpus"][0]["minor"] == 0
    assert registered["xid_events_registered"] == [0, 1]
    assert [(e["xid"], e["index"]) for e in events] == [(79, 1)]
    assert nvml.shutdown_calls == 1


def test_a_lost_gpu_is_reported_and_the_others_still_are() -> None:
    nvml = FakeNvml("probe-node", count=3)
    nvml.fail_device(1)
    out = io.StringIO()
    assert main(["--wait", "0"], nvml=nvml, out=out) == 0
    (report,) = json_values(out.getvalue())
    assert [g.get("uuid") for g in report["gpus"]] == [nvml.gpus[0].uuid, None, nvml.gpus[2].uuid]
    assert report["gpus"][1] == {"index": 1, "error": "GPU 1: GPU is lost"}


def test_no_nvml_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--wait", "0"], nvml=FakeNvml(available=False)) == EXIT_UNAVAILABLE
    assert "NVML is not available on this machine" in capsys.readouterr().err
