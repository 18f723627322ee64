"""The `gpuheal` console script as a person runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def run_gpuheal(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "gpuheal", *args], input=stdin, capture_output=True, timeout=60, check=False
    )


def test_kmsg_parse_prints_one_json_object_per_event_and_skips_the_rest() -> None:
    log = (
        b"3,812,6085126134786,-;NVRM: NVRM: Xid (PCI:0001:00:00.0): 79, GPU has fallen off the bus\n"
        b"[ 4821.337154] NVRM: loading NVIDIA UNIX x86_64 Kernel Module\n"
        b"Nov 23 02:07:01 host kernel: [ 4821.337154] NVRM: Xid (PCI:0000:3b:00): 48, DBE (0x1) detected\n"
        b"\xff\xfe not text at all\n"
    )
    result = run_gpuheal("kmsg", "parse", stdin=log)

    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(e["kind"], e["xid"], e["pci"], e["action"], e["fatal"]) for e in events] == [
        ("xid", 79, "0001:00:00.0", "RESTART_BM", True),
        ("xid", 48, "0000:3b:00", "COMPONENT_RESET", True),
    ]


def test_kmsg_parse_applies_a_policy_override(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"overrides": {"13": "RESTART_BM"}}))
    line = b"[ 1.0] NVRM: Xid (PCI:0000:3b:00): 13, Graphics Exception\n"

    result = run_gpuheal("kmsg", "parse", "--policy", str(policy), stdin=line)

    assert result.returncode == 0, result.stderr
    [event] = [json.loads(x) for x in result.stdout.splitlines()]
    assert (event["action"], event["fatal"]) == ("RESTART_BM", True)


def test_approve_without_a_temporal_server_fails_with_a_clear_reason() -> None:
    result = run_gpuheal("approve", "gpu-node-001", "--by", "alice", "--address", "127.0.0.1:1")

    assert result.returncode == 1
    assert b"cannot reach Temporal" in result.stderr


def test_worker_refuses_an_unknown_provider_before_connecting_anywhere() -> None:
    result = run_gpuheal("worker", "--providers", "aws,ibm", "--address", "127.0.0.1:1")

    assert result.returncode == 2
    assert b"unknown provider(s) ibm; choose from redfish, aws, azure, gcp, nebius, manual" in result.stderr


def test_agent_refuses_nvidia_smi_resets_of_fake_gpus() -> None:
    result = run_gpuheal("agent", "--node", "n1", "--fake-gpus", "2", "--gpu-reset", "nvidia-smi")

    assert result.returncode == 2
    assert b"nvidia-smi cannot reset fake GPUs" in result.stderr


def test_agent_reads_its_kernel_log_from_one_end_at_most() -> None:
    result = run_gpuheal("agent", "--node", "n1", "--fake-gpus", "1", "--from-start", "--from-end")

    assert result.returncode == 2
    assert b"choose one of --from-start and --from-end" in result.stderr
    assert b"Traceback" not in result.stderr
