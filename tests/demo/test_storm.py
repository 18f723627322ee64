"""`gpuheal demo --storm N --budget K`: N nodes fault at once, at most K are ever out of service.

The count the demo prints comes from the simulated cluster's own nodes (a watch), and the demo
exits 0 only once every remediation resolved within the budget.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes.aio import client

from gpuheal.kubeclient import connect
from gpuheal_sim.demo import quarantine
from gpuheal_sim.demo.quarantine import QuarantineCount, counting_quarantines
from gpuheal_sim.simulator import FleetConfig, SimulatedCluster
from tests.demo.test_demo_lifecycle import GPUHEAL, read_until

STORM = ["demo", "--gpus-per-node", "2", "--reboot-seconds", "0.3", "--port", "0"]


def storm(state: Path, nodes: int, budget: int) -> list[str]:
    return [GPUHEAL, *STORM, "--storm", str(nodes), "--budget", str(budget), "--state-dir", str(state)]


@pytest.mark.timeout(300)
def test_a_storm_waits_for_the_budget_and_every_node_comes_back(tmp_path: Path) -> None:
    result = subprocess.run(storm(tmp_path / "state", 5, 2), capture_output=True, text=True, timeout=280, check=False)

    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    last = out.rstrip().splitlines()[-1]
    match = re.fullmatch(r"max quarantined at once: (\d+)", last)
    assert match, f"the last line is {last!r}"
    assert 1 <= int(match[1]) <= 2
    # The ones beyond the budget waited, untouched, and said why.
    assert re.search(r"gpu-node-00\d  waits: budget full: 2 of 2 remediations under way", out)
    assert len(re.findall(r"│ gpu-node-00\d │ Resolved │", out)) == 5
    assert "injected XID 79 on 5 of 7 nodes at once" in out


@pytest.mark.timeout(300)
def test_a_storm_stopped_midway_leaves_nothing_that_acts_on_the_next_demo(tmp_path: Path) -> None:
    """The demo's Temporal keeps its state; the remediations and the governor of a demo stopped
    midway belonged to a fleet that is gone, and would act on the next fleet's nodes of the same names."""
    state = tmp_path / "state"
    first = subprocess.Popen(
        storm(state, 4, 1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        read_until(first, "Quarantined")
        os.killpg(first.pid, signal.SIGINT)
        first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()

    again = subprocess.run(storm(state, 4, 2), capture_output=True, text=True, timeout=280, check=False)

    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert re.search(r"ended \d+ workflow\(s\) an earlier demo left running: .*gpuheal-governor", again.stdout)
    assert len(re.findall(r"│ gpu-node-00\d │ Resolved │", again.stdout)) == 4


@pytest.mark.parametrize("other", [["--manual"], ["--load", "light"]])
def test_storm_is_refused_with_manual_or_load(other: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gpuheal", "demo", "--storm", "3", *other],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert f"leave out {other[0]}" in result.stderr


def node(name: str, *, cordoned: bool = False, tainted: bool = False, rack: str = "") -> dict[str, object]:
    taints = [{"key": "gpuheal.io/gpu-fault", "effect": "NoSchedule"}] if tainted else []
    labels = {"sim.gpuheal.io/rack": rack} if rack else {}
    return {"metadata": {"name": name, "labels": labels}, "spec": {"unschedulable": cordoned, "taints": taints}}


def test_the_count_follows_every_node_change_and_keeps_the_most_at_once() -> None:
    count = QuarantineCount("sim.gpuheal.io/rack")
    count.observe("ADDED", node("a", rack="r0"))
    count.observe("MODIFIED", node("a", cordoned=True, rack="r0"))
    count.observe("MODIFIED", node("b", tainted=True, rack="r0"))  # tainted before it is cordoned
    count.observe("MODIFIED", node("c", cordoned=True, tainted=True, rack="r1"))
    assert (count.now, count.most) == (3, 3)
    count.observe("MODIFIED", node("a", rack="r0"))
    count.observe("DELETED", node("b", tainted=True, rack="r0"))
    assert (count.now, count.most) == (1, 3)
    assert count.most_per_group == {"r0": 2, "r1": 1}
    assert count.ever == {"a", "b", "c"}


async def test_the_count_goes_on_across_the_watches_the_server_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server ends every watch after its timeoutSeconds (and the client gives up on a request after
    five minutes): a storm that outlasts one watch is still counted, by the next one."""
    monkeypatch.setattr(quarantine, "_WATCH_SECONDS", 1)
    config = FleetConfig(nodes=3, workloads=False)
    async with (
        SimulatedCluster(config, state_dir=tmp_path) as cluster,
        counting_quarantines(cluster.kubeconfig) as count,
        await connect(cluster.kubeconfig) as api,
    ):
        core = client.CoreV1Api(api)
        for name in cluster.node_names():
            await asyncio.sleep(1.2)  # each change after the watch before it has ended
            await core.patch_node(name, {"spec": {"unschedulable": True}})
        await asyncio.sleep(1.2)
        await core.patch_node("gpu-node-000", {"spec": {"unschedulable": False}})
        for _ in range(100):
            if count.now == 2:
                break
            await asyncio.sleep(0.05)
    assert (count.now, count.most, count.ever) == (2, 3, set(cluster.node_names()))
