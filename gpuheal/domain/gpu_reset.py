"""The GPU reset handshake between a remediation and the agent on the node.

The remediation cannot reach a node's agent directly (its sockets are local to the node), so the
Kubernetes API carries the conversation. The worker writes an order into the node annotation
`gpuheal.io/gpu-reset-request`; the agent, which watches its own node, resets the named GPUs,
waits for proof (the driver's reset acknowledgement in the kernel log, or NVML seeing the GPU
healthy again) and answers in the node condition `GpuReset`, whose message is the report. The
agent writes only node status, as it already does for `GpuHealthy`, so it needs no right to
change anything else on any node.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from gpuheal.domain.marks import GPU_RESET_REQUEST_ANNOTATION

__all__ = ["GPU_RESET_CONDITION", "GPU_RESET_REQUEST_ANNOTATION", "GpuResetOrder", "GpuResetReport"]

# The answer, written by the agent: status "True" (confirmed) or "False", message a GpuResetReport as JSON.
GPU_RESET_CONDITION = "GpuReset"
REASON_CONFIRMED = "ResetConfirmed"
REASON_FAILED = "ResetFailed"


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class GpuResetOrder(_Message):
    """Reset these GPUs on this node. `id` is unique per order; the report must carry it back."""

    id: str
    holder: str
    gpus: list[str] = Field(min_length=1)
    at: datetime
    # The node's bootID when the order was written; an agent on a later boot ignores the order.
    boot_id: str = ""


class GpuResetReport(_Message):
    """What the agent did with order `id`."""

    id: str
    ok: bool
    # One line for people: what was reset, or why it failed or could not be confirmed.
    detail: str
    # How the reset was proven: "kernel-log" (the driver's acknowledgement) or "nvml"; empty when not.
    confirmed_by: str = ""
    at: datetime
