"""`GpuCheckHandler`: carries out the GPU check orders written on the node (gpuheal.domain.gpu_check)
with the agent's checker; with none (`--gpu-check off`, or NVML wanted and absent) an order is
answered with a failure at once, so the worker never waits in vain and the node stays out."""

from __future__ import annotations

import logging

from gpuheal.agents.check.checkers import GpuChecker
from gpuheal.agents.orders.watcher import report
from gpuheal.domain.gpu_check import GPU_CHECK, GpuCheckOrder, GpuCheckReport
from gpuheal.domain.node_orders import OrderKind

log = logging.getLogger(__name__)

DISABLED = "GPU checks are off on this node's agent (start it with --gpu-check auto, dcgmi or nvml)"


class GpuCheckHandler:
    """Runs the checker an order asks for, one order at a time."""

    def __init__(self, node: str, checker: GpuChecker | None) -> None:
        self.node = node
        self._checker = checker
        # How many checks ran.
        self.checks = 0

    @property
    def kind(self) -> OrderKind[GpuCheckOrder, GpuCheckReport]:
        return GPU_CHECK

    async def carry_out(self, order: GpuCheckOrder) -> GpuCheckReport:
        if self._checker is None:
            log.warning("GPU check order %s on %s refused: checks are off", order.id, self.node)
            return report(GPU_CHECK, order.id, ok=False, detail=DISABLED)
        log.info("GPU check order %s on %s: level %d with %s", order.id, self.node, order.level, self._checker.name)
        self.checks += 1
        result = await self._checker.check(order.level)
        (log.info if result.ok else log.error)("GPU check order %s on %s: %s", order.id, self.node, result.detail)
        return report(
            GPU_CHECK, order.id, ok=result.ok, detail=result.detail, tool=result.tool, conclusive=result.conclusive
        )

    async def answered(self, order: GpuCheckOrder, answer: GpuCheckReport) -> None:
        """Nothing follows a check's answer: the worker reads it from the condition."""
