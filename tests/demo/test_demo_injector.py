"""`gpuheal demo --via injector`: the fault goes in through the fault injector's central API and agent."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.timeout(300)
def test_the_demo_injects_through_the_injector_and_follows_the_fault_id_to_resolved(tmp_path: Path) -> None:
    state = tmp_path / "state"
    demo = ["demo", "--via", "injector", "--nodes", "2", "--gpus-per-node", "2", "--reboot-seconds", "0.5"]
    result = subprocess.run(
        [sys.executable, "-m", "gpuheal", *demo, "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # The fault id the API answered with, on the line that names the node.
    [node] = re.findall(
        r"on (\S+) through POST /api/v1/faults/gpu/inject/xid-79: fault xid79-[0-9a-f]{16};", result.stdout
    )
    assert "Resolved" in result.stdout
    assert f"{node} is back in service" in result.stdout
    # The record came through the simulated /dev/kmsg (the kernel's user facility: 11), not the demo's own write.
    records = (state / "nodes" / node / "kmsg.log").read_text().splitlines()
    assert [r for r in records if "Xid" in r and r.startswith("11,")], records
    assert not [r for r in records if r.startswith("3,1042,")]
    # The API found the agent as the chart's injector-api account (list pods in its namespace), not as an admin.
    assert "as the chart's injector-api account" in result.stdout
    assert (state / "credentials" / "injector-api.kubeconfig").is_file()


def test_a_storm_cannot_go_through_the_injector() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gpuheal", "demo", "--via", "injector", "--storm", "3"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "leave out --via injector" in result.stderr
