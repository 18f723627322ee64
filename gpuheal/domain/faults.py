"""A fault: what a detector reports about one node, reduced to what remediation needs."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from gpuheal.domain.actions import Action


class Fault(BaseModel):
    """One actionable GPU fault on a node; the payload of the workflow's `fault` signal."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node: str = Field(min_length=1)
    action: Action
    xid: int | None = None
    gpu_uuids: tuple[str, ...] = ()
    message: str = ""
    # The detector that saw it (agent name / check name).
    source: str = ""
    # The health event id, so a fault delivered twice is counted once.
    event_id: str = ""
    detected_at: datetime | None = None
