"""The GPU reset order (see gpuheal.domain.node_orders): the worker writes it into the node annotation
`gpuheal.io/gpu-reset-request`; the agent resets the named GPUs, waits for proof (the driver's reset
acknowledgement in the kernel log, or NVML seeing the GPU healthy again) and answers in the node
condition `GpuReset`."""

from __future__ import annotations

from pydantic import Field

from gpuheal.domain.marks import GPU_RESET_REQUEST_ANNOTATION
from gpuheal.domain.node_orders import NodeOrder, NodeReport, OrderKind

__all__ = ["GPU_RESET", "GPU_RESET_CONDITION", "GPU_RESET_REQUEST_ANNOTATION", "GpuResetOrder", "GpuResetReport"]

GPU_RESET_CONDITION = "GpuReset"


class GpuResetOrder(NodeOrder):
    """Reset these GPUs on this node."""

    gpus: list[str] = Field(min_length=1)


class GpuResetReport(NodeReport):
    """What the agent did with reset order `id`."""

    # How the reset was proven: "kernel-log" (the driver's acknowledgement) or "nvml"; empty when not.
    confirmed_by: str = ""


GPU_RESET = OrderKind(
    name="GPU reset",
    annotation=GPU_RESET_REQUEST_ANNOTATION,
    condition=GPU_RESET_CONDITION,
    order=GpuResetOrder,
    report=GpuResetReport,
    reason_ok="ResetConfirmed",
    reason_failed="ResetFailed",
)
