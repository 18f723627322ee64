"""A fault: what a detector reports about one node, reduced to what remediation needs."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from gpuheal.domain.actions import Action

# Temporal refuses a signal whose input is over `limit.blobSize.error` (2 MiB by default) with
# INVALID_ARGUMENT, and logs every payload over `limit.blobSize.warn` (512 KiB); see
# temporalio/temporal, common/dynamicconfig/constants.go. A fault's free text is cut far below
# that: with the intake's limits on names and GPUs, a whole fault stays under the warning limit.
MAX_MESSAGE_BYTES = 16 * 1024
MAX_SOURCE_BYTES = 1024


class Fault(BaseModel):
    """One actionable GPU fault on a node; the payload of the workflow's `fault` signal."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node: str = Field(min_length=1)
    action: Action
    xid: int | None = None
    gpu_uuids: tuple[str, ...] = ()
    # The faulty GPUs' board serials, where the detector knows them (NVML does).
    gpu_serials: tuple[str, ...] = ()
    message: str = ""
    # The detector that saw it (agent name / check name).
    source: str = ""
    # The health event id, so a fault delivered twice is counted once.
    event_id: str = ""
    detected_at: datetime | None = None
