"""GPU check orders through the simulator's Kubernetes API: the order in the node's annotation, the
agent's answer in its GpuCheck condition, written with the chart's agent account; one watcher
answers reset and check orders side by side."""

from __future__ import annotations

import uuid
from typing import Any

from gpuheal.agents.check import DISABLED, GpuCheckHandler, NvmlChecker
from gpuheal.agents.orders import NodeOrderWatcher
from gpuheal.domain.gpu_check import GPU_CHECK, GpuCheckOrder, GpuCheckReport
from gpuheal.domain.gpu_reset import GPU_RESET, GpuResetOrder, GpuResetReport
from tests.agents.reset.conftest import FOLLOW_FAST, Cluster, Node, cluster, eventually, node, now

__all__ = ["cluster", "node"]  # the fixtures, shared with the reset tests


async def order_check(cluster: Cluster, level: int = 2) -> GpuCheckOrder:
    order = GpuCheckOrder(id=f"remediate-{uuid.uuid4()}/check-0", holder="test", level=level, at=now())
    await cluster.core.patch_node(
        cluster.node,
        {"metadata": {"annotations": {GPU_CHECK.annotation: order.model_dump_json()}}},
        _content_type="application/merge-patch+json",
    )
    return order


async def answer(cluster: Cluster, order_id: str) -> tuple[str, str, GpuCheckReport]:
    found: list[Any] = []

    async def answered() -> bool:
        node = await cluster.core.read_node(cluster.node)
        assert node.status is not None
        condition = next((c for c in node.status.conditions or [] if c.type == GPU_CHECK.condition), None)
        if condition is None:
            return False
        report = GpuCheckReport.model_validate_json(condition.message or "")
        found[:] = [condition, report]
        return report.id == order_id

    await eventually(answered, f"the answer to {order_id}")
    condition, report = found
    return condition.status, condition.reason, report


def watcher(node: Node, handler: GpuCheckHandler) -> NodeOrderWatcher:
    node.watcher(None)  # the reset handler, beside the check's
    assert node.handler is not None
    return NodeOrderWatcher(node.cluster.agent_api, node.cluster.node, [node.handler, handler], settings=FOLLOW_FAST)


async def test_a_check_order_is_answered_in_the_gpucheck_condition_from_nvml(node: Node, cluster: Cluster) -> None:
    checks = GpuCheckHandler(cluster.node, NvmlChecker(node.nvml))
    async with watcher(node, checks):
        passed = await order_check(cluster)
        status, reason, report = await answer(cluster, passed.id)
        assert (status, reason, report.ok, report.tool) == ("True", GPU_CHECK.reason_ok, True, "nvml")

        node.nvml.fail_device(1)
        failed = await order_check(cluster)
        status, reason, report = await answer(cluster, failed.id)

    assert (status, reason, report.ok) == ("False", GPU_CHECK.reason_failed, False)
    assert report.detail.startswith("GPU 1: lost")
    assert checks.checks == 2
    found = await cluster.core.read_node(cluster.node)
    assert found.status is not None
    assert GPU_RESET.condition not in {c.type for c in found.status.conditions or []}, "no reset was ordered"


async def test_an_agent_with_checks_off_answers_at_once_with_a_failure(node: Node, cluster: Cluster) -> None:
    checks = GpuCheckHandler(cluster.node, None)
    async with watcher(node, checks):
        order = await order_check(cluster)
        status, _, report = await answer(cluster, order.id)

    assert (status, report.detail) == ("False", DISABLED)
    assert checks.checks == 0


async def test_an_answered_check_is_not_run_again_by_a_restarted_agent(node: Node, cluster: Cluster) -> None:
    first = GpuCheckHandler(cluster.node, NvmlChecker(node.nvml))
    async with watcher(node, first):
        order = await order_check(cluster)
        await answer(cluster, order.id)
    restarted = GpuCheckHandler(cluster.node, NvmlChecker(node.nvml))
    async with watcher(node, restarted) as again:
        assert await again.handle(await cluster.node_json()) == []
    assert (first.checks, restarted.checks) == (1, 0)


class BrokenResets:
    """A reset handler with a bug: it raises on every order."""

    kind = GPU_RESET
    calls = 0

    async def carry_out(self, order: GpuResetOrder) -> GpuResetReport:
        self.calls += 1
        raise RuntimeError("inventory went away")

    async def answered(self, order: GpuResetOrder, answer: GpuResetReport) -> None:
        raise AssertionError("not answered by the handler itself")


async def test_a_handler_that_raises_answers_its_order_once_and_the_other_kinds_go_on(
    node: Node, cluster: Cluster
) -> None:
    broken = BrokenResets()
    checks = GpuCheckHandler(cluster.node, NvmlChecker(node.nvml))
    watcher = NodeOrderWatcher(cluster.agent_api, cluster.node, [broken, checks], settings=FOLLOW_FAST)
    async with watcher:
        reset = await cluster.order([node.gpus[0].uuid])
        status, _, reset_report = await cluster.report(reset.id)
        check = await order_check(cluster)
        passed = (await answer(cluster, check.id))[2]
        assert await watcher.handle(await cluster.node_json()) == []

    assert (status, reset_report.ok) == ("False", False)
    assert reset_report.detail == "the agent failed to carry the order out: RuntimeError('inventory went away')"
    assert passed.ok and broken.calls == 1
