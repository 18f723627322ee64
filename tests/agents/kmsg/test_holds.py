"""The end of the node's remediation, read from its marks as the agent's node watch delivers them."""

from __future__ import annotations

import asyncio
from typing import Any

from gpuheal.agents.kmsg.holds import RemediationHolds
from gpuheal.domain.marks import ESCALATION_ANNOTATION, REMEDIATION_ANNOTATION
from tests.agents.kmsg.test_monitor import Clock


def node(**annotations: str) -> dict[str, Any]:
    return {"metadata": {"name": "gpu-node-7", "annotations": annotations}, "status": {}}


HELD_BY_A = {REMEDIATION_ANNOTATION: "remediate-gpu-node-7/run-a"}
HELD_BY_B = {REMEDIATION_ANNOTATION: "remediate-gpu-node-7/run-b"}


async def test_an_end_is_told_once_with_when_the_node_was_last_seen_held() -> None:
    clock = Clock()
    ends: list[float] = []

    async def ended(held_seen_at: float) -> None:
        ends.append(held_seen_at)

    holds = RemediationHolds(ended, clock=clock)
    holds.observe(node())  # not held: nothing has ended
    holds.observe(node(**HELD_BY_A))
    clock.now += 5
    holds.observe(node(**HELD_BY_A, other="touched"))  # a heartbeat while held
    clock.now += 5
    holds.observe(node(**HELD_BY_A, **{ESCALATION_ANNOTATION: "no approval"}))  # escalated: still held
    clock.now += 5
    holds.observe(node())  # released
    holds.observe(node())  # and still released: no second end
    await asyncio.sleep(0)
    assert ends == [110.0]
    assert holds.holder is None

    holds.observe(node(**HELD_BY_A))
    clock.now += 1
    holds.observe(node(**HELD_BY_B))  # another remediation took the node over: the first one ended
    await asyncio.sleep(0)
    assert ends == [110.0, 115.0]
    assert holds.holder == HELD_BY_B[REMEDIATION_ANNOTATION]
    await holds.close()


async def test_a_failing_end_is_logged_and_the_next_still_told() -> None:
    calls: list[float] = []

    async def ended(held_seen_at: float) -> None:
        calls.append(held_seen_at)
        raise RuntimeError("the sink is gone")

    holds = RemediationHolds(ended, clock=Clock())
    for _ in range(2):
        holds.observe(node(**HELD_BY_A))
        holds.observe({"metadata": {"annotations": None}})
        await asyncio.sleep(0)
    assert len(calls) == 2
    await holds.close()
