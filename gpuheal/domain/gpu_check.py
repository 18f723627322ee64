"""The GPU check order (see gpuheal.domain.node_orders): after a repair, before the node goes back to
service, the worker writes it into the node annotation `gpuheal.io/gpu-check-request`; the agent
runs a GPU diagnostic (`dcgmi diag -r <level>` where DCGM is present, a check of what NVML reports
otherwise) and answers in the node condition `GpuCheck`. A node whose check fails stays out of
service."""

from __future__ import annotations

from pydantic import Field

from gpuheal.domain.marks import GPU_CHECK_REQUEST_ANNOTATION
from gpuheal.domain.node_orders import NodeOrder, NodeReport, OrderKind

__all__ = ["GPU_CHECK", "GPU_CHECK_CONDITION", "GPU_CHECK_REQUEST_ANNOTATION", "GpuCheckOrder", "GpuCheckReport"]

GPU_CHECK_CONDITION = "GpuCheck"
# DCGM's diagnostic levels: 1 (seconds: software and deployment), 2 (about two minutes), 3 (about
# half an hour), 4 (hours). An NVML check has one level only.
MAX_LEVEL = 4


class GpuCheckOrder(NodeOrder):
    """Check every GPU of this node at DCGM diagnostic `level`."""

    level: int = Field(ge=1, le=MAX_LEVEL)


class GpuCheckReport(NodeReport):
    """How check order `id` went."""

    # What ran: "dcgmi diag -r 2", "nvml".
    tool: str = ""
    # A failed report that found something wrong with the GPUs (a diagnostic's failed result, a lost
    # GPU), as opposed to a check that proved nothing either way (checks off, the tool missing,
    # timed out or unreadable): only the former condemns the machine.
    conclusive: bool = False


GPU_CHECK = OrderKind(
    name="GPU check",
    annotation=GPU_CHECK_REQUEST_ANNOTATION,
    condition=GPU_CHECK_CONDITION,
    order=GpuCheckOrder,
    report=GpuCheckReport,
    reason_ok="CheckPassed",
    reason_failed="CheckFailed",
)
