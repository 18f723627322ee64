"""The order activities: hand the node's agent an order (see gpuheal.domain.node_orders: a GPU reset, a
GPU check, a diagnostics bundle), or take a reset back.

The order goes into the node annotation of its kind; the agent answers in the node condition of
that kind, which the workflow waits for through `wait_for_node` (GpuResetAnswered,
GpuCheckAnswered, DiagnosticsAnswered). Each order's id is the request's (the holder, and the round after a person's
retry; a check adds its number in the run), so a retried activity finds and returns the order it
already wrote.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from kubernetes.aio import client
from kubernetes.aio.client.models import V1Node
from pydantic import ValidationError
from temporalio import activity

from gpuheal.activities.contract import implements, node_gone
from gpuheal.activities.kube import annotations_of, boot_id_of, merge_patch_node, on_fresh_node
from gpuheal.domain import contracts
from gpuheal.domain.diagnostics import DIAGNOSTICS, DiagnosticsOrder
from gpuheal.domain.gpu_check import GPU_CHECK, GpuCheckOrder
from gpuheal.domain.gpu_reset import GPU_RESET, GpuResetOrder
from gpuheal.domain.node_orders import OrderKind, OrderT
from gpuheal.domain.steps import DiagnosticsRequest, GpuCheckRequest, GpuResetRequest, NodeRef


class NodeOrderActivities:
    """Orders GPU resets and GPU checks from the nodes' agents."""

    def __init__(self, api: client.ApiClient) -> None:
        self._core = client.CoreV1Api(api)

    @implements(contracts.RESET_GPUS)
    async def request_gpu_reset(self, request: GpuResetRequest) -> GpuResetOrder:
        """Write the reset order for the node's agent, once per remediation run and round."""
        order = await self._write(GPU_RESET, request.node, request.request_id, holder=request.holder, gpus=request.gpus)
        activity.logger.info(
            "ordered a reset of %s on %s", ", ".join(request.gpus), request.node, extra={"gpu": request.gpus}
        )
        return order

    @implements(contracts.CHECK_GPUS)
    async def request_gpu_check(self, request: GpuCheckRequest) -> GpuCheckOrder:
        """Write the check order for the node's agent, once per check of the run."""
        order = await self._write(GPU_CHECK, request.node, request.order_id, holder=request.holder, level=request.level)
        activity.logger.info("ordered a level %d GPU check on %s", request.level, request.node)
        return order

    @implements(contracts.COLLECT_DIAGNOSTICS)
    async def request_diagnostics(self, request: DiagnosticsRequest) -> DiagnosticsOrder:
        """Write the diagnostics order for the node's agent, once per remediation run and round."""
        order = await self._write(
            DIAGNOSTICS, request.node, request.order_id, holder=request.holder, reason=request.reason
        )
        activity.logger.info("ordered a diagnostics bundle on %s", request.node)
        return order

    @implements(contracts.WITHDRAW_GPU_RESET)
    async def withdraw_gpu_reset(self, request: GpuResetRequest) -> NodeRef:
        """Take this run's order back, so an agent that is late (or restarted) never resets after a reboot."""

        async def withdraw(node: V1Node | None) -> NodeRef:
            if node is not None:
                earlier = _read_order(GPU_RESET, node)
                if earlier is not None and earlier.id == request.request_id:
                    await merge_patch_node(
                        self._core, node, {"metadata": {"annotations": {GPU_RESET.annotation: None}}}
                    )
            return NodeRef(node=request.node)

        return await on_fresh_node(self._core, request.node, withdraw)

    async def _write(self, kind: OrderKind[OrderT, Any], name: str, order_id: str, **fields: Any) -> OrderT:
        """The order `order_id` of `kind` on the node: the one written already, or a new one on the
        node's current boot."""

        async def write(node: V1Node | None) -> OrderT:
            if node is None:
                raise node_gone(name)
            earlier = _read_order(kind, node)
            if earlier is not None and earlier.id == order_id:
                return earlier
            fresh = kind.order(id=order_id, at=datetime.now(UTC), boot_id=boot_id_of(node), **fields)
            await merge_patch_node(
                self._core, node, {"metadata": {"annotations": {kind.annotation: fresh.model_dump_json()}}}
            )
            return fresh

        return await on_fresh_node(self._core, name, write)


def _read_order(kind: OrderKind[OrderT, Any], node: V1Node) -> OrderT | None:
    raw = annotations_of(node).get(kind.annotation, "")
    if not raw:
        return None
    try:
        return kind.order.model_validate(json.loads(raw))
    except (ValueError, ValidationError):
        return None
