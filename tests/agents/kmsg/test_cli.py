"""`gpuheal kmsg parse`: stdin lines in, one JSON object per event out."""

from __future__ import annotations

import io
import json
from pathlib import Path

from gpuheal.agents.kmsg.cli import main, parse_lines
from gpuheal.agents.kmsg.decide import XidPolicy
from gpuheal.agents.kmsg.gpumap import GpuMap
from gpuheal.domain.actions import RecommendedAction as A
from tests.agents.kmsg.samples import FALLEN_OFF_GROUP, UUID

SAMPLE = "\n".join(
    [
        "[    5.1] NVRM: loading NVIDIA UNIX x86_64 Kernel Module  550.54.15",
        *FALLEN_OFF_GROUP,
        "11,813,6085126134790,-;NVRM: NVRM: Xid (PCI:0001:00:00.0): 74, NVLink: fatal error detected on link 14",
        " SUBSYSTEM=pci",
        "Nov 23 02:07:01 gpu-node-7 kernel: [ 9.9] NVRM: Xid (PCI:0000:3b:00): 13, pid=42, name=python3, Graphics Exception",
        "[Mon Nov 23 02:07:01 2026] nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 20034, Fatal, Link 30 LTSSM Fault Up",
        "NVRM: GPU 0000:3b:00.0: GPU reset complete",
        "",
    ]
)
MAPPED = "GPU-6b3a1c3e-0b0e-4f7e-9a43-1c2d3e4f5a6b"


def test_main_prints_one_json_object_per_event(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"overrides": {"74": "RESTART_BM"}}))
    stdout = io.StringIO()
    assert main(io.StringIO(SAMPLE), stdout, policy, gpu_map=GpuMap({"0000:3b:00.0": MAPPED})) == 0
    objects = [json.loads(line) for line in stdout.getvalue().splitlines()]
    assert objects == [
        {
            "kind": "gpu_fallen_off_bus",
            "xid": 79,
            "pci": "0000:91:00",
            "action": "RESTART_BM",
            "fatal": True,
            "gpu_uuid": UUID,
            "message": "GPU has fallen off the bus.",
        },
        {
            "kind": "xid",
            "xid": 74,
            "pci": "0001:00:00.0",
            "action": "RESTART_BM",
            "fatal": True,
            "message": "NVLink: fatal error detected on link 14",
        },
        {
            "kind": "xid",
            "xid": 13,
            "pci": "0000:3b:00",
            "action": "NONE",
            "fatal": False,
            "gpu_uuid": MAPPED,
            "message": "Graphics Exception",
            "pid": 42,
            "process": "python3",
        },
        {
            "kind": "sxid",
            "sxid": 20034,
            "pci": "0000:05:00.0",
            "action": "RESTART_VM",
            "fatal": True,
            "message": "Fatal, Link 30 LTSSM Fault Up",
            "nvswitch": "nvidia-nvswitch0",
        },
        {
            "kind": "gpu_reset",
            "pci": "0000:3b:00.0",
            "action": "NONE",
            "fatal": False,
            "gpu_uuid": MAPPED,
            "message": "GPU 0000:3b:00.0: GPU reset complete",
        },
    ]


def test_main_reads_undecodable_stdin_and_refuses_a_bad_policy(tmp_path: Path) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(b"\xff\xfe\nNVRM: Xid (PCI:0000:3b:00): 48, D\xffBE\n"), encoding="utf-8")
    stdout = io.StringIO()
    assert main(stdin, stdout, None, gpu_map=GpuMap({})) == 0
    (found,) = [json.loads(line) for line in stdout.getvalue().splitlines()]
    assert (found["xid"], found["action"], found["message"]) == (48, "COMPONENT_RESET", "D\ufffdBE")
    bad = tmp_path / "policy.json"
    bad.write_text("{not json")
    assert main(io.StringIO(SAMPLE), io.StringIO(), bad) == 2
    assert main(io.StringIO(SAMPLE), io.StringIO(), tmp_path / "missing.json") == 2


def test_parse_lines_takes_a_plain_dict_as_gpu_map() -> None:
    lines = ["NVRM: Xid (PCI:0000:3b:00): 79, GPU has fallen off the bus."]
    (found,) = parse_lines(lines, XidPolicy(overrides={79: A.CONTACT_SUPPORT}), {"00000000:3B:00.0": MAPPED})
    assert (found["gpu_uuid"], found["action"], found["fatal"]) == (MAPPED, "CONTACT_SUPPORT", True)
    assert list(parse_lines(["nothing here"])) == []
