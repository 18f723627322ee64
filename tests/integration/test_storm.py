"""A fault storm on a 1,000-node simulated fleet: 300 nodes fault at once, the governor holds the line.

What is out of service is counted from the simulated cluster's own Node objects (a watch sees every
change), not from gpuheal's state. The worker is its own `gpuheal worker` process, as in production.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gpuheal.control import governor
from gpuheal.control.governor import governor_id_for
from gpuheal.domain.operator import OperatorAction
from gpuheal.domain.phases import Phase
from gpuheal.domain.remediation import RemediationStatus
from gpuheal_sim.demo.quarantine import counting_quarantines
from tests.integration.conftest import StackFactory, WorkerFactory, eventually, phase_of

RACK = "sim.gpuheal.io/rack"
NODES, PER_RACK, BUDGET = 1000, 10, 30
# The breaker trips once 15% of the GPU nodes (150) were quarantined within its window.
BREAKER_SHARE = 0.15
LIMITS = (
    *("--max-remediations", str(BUDGET), "--max-remediating-percent", "100"),
    *("--budget-group-label", RACK, "--max-per-group", "1"),
    *("--breaker-share", str(BREAKER_SHARE), "--breaker-at-least", "1"),
)


def untouched(node: Any) -> bool:
    """No cordon, no taint, no label or annotation of gpuheal's on the node."""
    metadata, spec = node.metadata, node.spec
    marks = [k for k in {**(metadata.annotations or {}), **(metadata.labels or {})} if k.startswith("gpuheal.io/")]
    return not spec.unschedulable and not spec.taints and not marks


@pytest.mark.timeout(900)
async def test_a_storm_of_300_faults_stays_within_budget_trips_the_breaker_and_goes_on_after_a_reset(
    make_stack: StackFactory, spawn_worker: WorkerFactory
) -> None:
    stack = await make_stack(
        in_process_worker=False, nodes=NODES, nodes_per_rack=PER_RACK, gpus_per_node=1, workloads=False
    )
    # As a large fleet deploys it: the governor in a worker process of its own.
    await spawn_worker(stack, *LIMITS, "--role", "governor")
    await spawn_worker(stack, *LIMITS, "--role", "remediations")
    names = stack.cluster.node_names()
    # Three nodes in each rack fault: the rack budget of one lets a rack's nodes go one at a time.
    faulty = [name for i, name in enumerate(names) if i % PER_RACK < 3]
    governor_id = governor_id_for(stack.task_queue)

    async with counting_quarantines(stack.cluster.kubeconfig, RACK) as count:
        handles = await asyncio.gather(*(stack.report(node) for node in faulty))

        async def tripped() -> bool:
            return (await governor.status(stack.server.client, governor_id)).state.tripped is not None

        await eventually(tripped, "the breaker tripped", timeout=600)
        granted = await _wait_for_granted_ones(handles)
        state = (await governor.status(stack.server.client, governor_id)).state
        waiting = {w.request.node for w in state.waiting}

        # 150 went through (in flight ones finish); the other 150 wait, their nodes untouched.
        assert len(granted) == 150 and len(waiting) == 150 and not waiting & granted
        assert state.tripped is not None and "150 GPU nodes quarantined" in state.tripped.reason
        assert count.ever == granted, "only the nodes that held a permit were ever taken out of service"
        assert all([untouched(await stack.node(name)) for name in waiting])
        # A simulated node carries a dozen labels; the governor keeps, for each waiting ask, its rack's.
        assert {tuple(w.request.labels) for w in state.waiting} == {(RACK,)}
        assert {await phase_of(h) for h in handles if h.id.removeprefix("remediate-") in waiting} == {"AwaitingBudget"}

        action = OperatorAction(by="oncall", reason="the storm was a bad driver rollout, now rolled back")
        await governor.act(stack.server.client, "reset_breaker", action, governor_id)
        results: list[RemediationStatus] = await asyncio.gather(*(asyncio.wait_for(h.result(), 600) for h in handles))

    assert [r.phase for r in results] == [Phase.RESOLVED] * 300, {r.reason for r in results}
    assert count.ever == set(faulty)
    assert count.most <= BUDGET, f"{count.most} nodes were out of service at once; the budget is {BUDGET}"
    assert max(count.most_per_group.values()) == 1, "two nodes of one rack were out of service at once"
    assert all(stack.cluster.reboot_requests(node) == 1 for node in faulty)
    final = (await governor.status(stack.server.client, governor_id)).state
    assert (final.held, final.waiting, final.tripped) == ((), (), None)


async def _wait_for_granted_ones(handles: list[Any]) -> set[str]:
    """The nodes whose remediations hold or held a permit, once every one of those has ended."""
    while True:
        statuses: list[RemediationStatus] = await asyncio.gather(
            *(h.query("status", result_type=RemediationStatus) for h in handles)
        )
        granted = [s for s in statuses if s.permit is not None]
        if all(s.phase.is_final for s in granted):
            return {s.node for s in granted}
        await asyncio.sleep(0.5)
