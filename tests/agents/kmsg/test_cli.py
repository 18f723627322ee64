"""`gpuheal kmsg parse`: stdin lines in, one JSON object per event out."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

from gpuheal.agents.kmsg.cli import FIELDS, main, parse_lines
from gpuheal.agents.kmsg.decide import XidPolicy
from gpuheal.agents.kmsg.gpumap import GpuMap
from gpuheal.domain.actions import RecommendedAction as A
from tests.agents.kmsg.samples import FALLEN_OFF_GROUP, UUID, VALID_LINES

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
            "kind": "xid",
            "xid": 79,
            "fallen_off_bus": True,
            "pci": "0000:91:00",
            "action": "RESTART_BM",
            "fatal": True,
            "gpu_uuid": UUID,
            "message": "GPU has fallen off the bus.",
        },
        {
            "kind": "xid",
            "xid": 74,
            "fallen_off_bus": False,
            "pci": "0001:00:00.0",
            "action": "RESTART_BM",
            "fatal": True,
            "message": "NVLink: fatal error detected on link 14",
        },
        {
            "kind": "xid",
            "xid": 13,
            "fallen_off_bus": False,
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


def _documented_fields() -> list[str]:
    """The fields the README's `gpuheal kmsg parse` table names, in its order."""
    readme = (Path(__file__).parents[3] / "README.md").read_text("utf-8")
    _, found, section = readme.partition("### `gpuheal kmsg parse`")
    assert found, "the README documents `gpuheal kmsg parse` under its own heading"
    section = section.split("\n#", 1)[0]
    return [match[1] for match in re.finditer(r"^\| `([a-z_]+)` \|", section, re.MULTILINE)]


def test_the_output_is_the_documented_contract() -> None:
    """Every object has the README's fields in its order, of its types; what is always there is there."""
    assert _documented_fields() == list(FIELDS)
    lines = [
        *VALID_LINES,
        *FALLEN_OFF_GROUP,
        "NVRM: GPU 0000:3b:00.0: GPU reset did not complete",
        "kernel: [ 4821.337154] NVRM: Xid (PCI:0000:3b:a0.0): 79, pid=1234, name=python3, GPU has fallen off the bus.",
    ]
    objects = list(parse_lines(lines, gpu_map={"0000:3b:00.0": MAPPED}))
    kinds = {found["kind"] for found in objects}
    assert kinds == {"xid", "sxid", "gpu_reset", "gpu_reset_failed"}
    always = {"kind", "pci", "action", "fatal", "message"}
    by_kind = {"xid": {"xid", "fallen_off_bus"}, "sxid": {"sxid"}, "gpu_reset": set(), "gpu_reset_failed": set()}
    optional = {"gpu_uuid", "pid", "process", "nvswitch"}
    types = {"xid": int, "sxid": int, "pid": int, "fatal": bool, "fallen_off_bus": bool}
    for found in objects:
        keys = list(found)
        assert keys == [field for field in FIELDS if field in found], "fields come in the documented order"
        kind = str(found["kind"])
        assert always | by_kind[kind] <= set(keys) <= always | by_kind[kind] | optional, found
        for key, value in found.items():
            assert type(value) is types.get(key, str), (key, value)
        assert found["action"] in A.__members__
        json.dumps(found)
    xid_79 = objects[-1]
    assert (xid_79["kind"], xid_79["xid"], xid_79["fallen_off_bus"], xid_79["pid"]) == ("xid", 79, True, 1234)
    assert (xid_79["pci"], xid_79["process"], xid_79["action"]) == ("0000:3b:a0.0", "python3", "RESTART_BM")
