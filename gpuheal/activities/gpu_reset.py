"""The GPU reset activity: hand the node's agent an order to reset GPUs (see gpuheal.domain.gpu_reset).

The order goes into a node annotation; the agent answers in the node's `GpuReset` condition, which
the workflow waits for through `wait_for_node` (condition GpuResetAnswered). One order per remediation run and round: its
id is the holder (and the round after a person's retry), so a retried activity finds and returns the
order it already wrote.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from kubernetes.aio import client
from kubernetes.aio.client.models import V1Node
from pydantic import ValidationError
from temporalio import activity

from gpuheal.activities.contract import implements, node_gone
from gpuheal.activities.kube import annotations_of, boot_id_of, merge_patch_node, on_fresh_node
from gpuheal.domain import contracts
from gpuheal.domain.gpu_reset import GPU_RESET_REQUEST_ANNOTATION, GpuResetOrder
from gpuheal.domain.steps import GpuResetRequest, NodeRef


class GpuResetActivities:
    """Orders GPU resets from the nodes' agents."""

    def __init__(self, api: client.ApiClient) -> None:
        self._core = client.CoreV1Api(api)

    @implements(contracts.RESET_GPUS)
    async def request_gpu_reset(self, request: GpuResetRequest) -> GpuResetOrder:
        """Write the reset order for the node's agent, once per remediation run."""

        async def order(node: V1Node | None) -> GpuResetOrder:
            if node is None:
                raise node_gone(request.node)
            earlier = _read_order(annotations_of(node).get(GPU_RESET_REQUEST_ANNOTATION, ""))
            if earlier is not None and earlier.id == request.request_id:
                return earlier
            fresh = GpuResetOrder(
                id=request.request_id,
                holder=request.holder,
                gpus=request.gpus,
                at=datetime.now(UTC),
                boot_id=boot_id_of(node),
            )
            await merge_patch_node(
                self._core, node, {"metadata": {"annotations": {GPU_RESET_REQUEST_ANNOTATION: fresh.model_dump_json()}}}
            )
            activity.logger.info("ordered a reset of %s on %s", ", ".join(request.gpus), request.node)
            return fresh

        return await on_fresh_node(self._core, request.node, order)

    @implements(contracts.WITHDRAW_GPU_RESET)
    async def withdraw_gpu_reset(self, request: GpuResetRequest) -> NodeRef:
        """Take this run's order back, so an agent that is late (or restarted) never resets after a reboot."""

        async def withdraw(node: V1Node | None) -> NodeRef:
            if node is not None:
                earlier = _read_order(annotations_of(node).get(GPU_RESET_REQUEST_ANNOTATION, ""))
                if earlier is not None and earlier.id == request.request_id:
                    await merge_patch_node(
                        self._core, node, {"metadata": {"annotations": {GPU_RESET_REQUEST_ANNOTATION: None}}}
                    )
            return NodeRef(node=request.node)

        return await on_fresh_node(self._core, request.node, withdraw)


def _read_order(raw: str) -> GpuResetOrder | None:
    if not raw:
        return None
    try:
        return GpuResetOrder.model_validate(json.loads(raw))
    except (ValueError, ValidationError):
        return None
