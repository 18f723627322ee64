"""The payloads of RemediationWorkflow: its input, signals and the `status` query's answer."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from gpuheal.domain.actions import Action
from gpuheal.domain.fleet import PermitGrant
from gpuheal.domain.operator import OperatorAction, RecordedAction
from gpuheal.domain.phases import Phase
from gpuheal.domain.policy import RemediationPolicy
from gpuheal.domain.steps import DrainProgress


class RemediationInput(BaseModel):
    """What the workflow starts with. The fault itself arrives through the `fault` signal."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node: str = Field(min_length=1)
    # None: the policy in force on the worker when the run begins (its policy file, or the defaults).
    policy: RemediationPolicy | None = None
    # The version of `policy` (gpuheal.domain.policy_document.policy_version), shown with the run.
    policy_version: str = ""


class ApprovalSignal(BaseModel):
    """The body of the `approve` and `reject` signals: `{"approver": …, "reason": …}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    approver: str = Field(min_length=1)
    reason: str = ""


class RecordedDecision(BaseModel):
    """A decision as the workflow recorded it: who, what and when."""

    approved: bool
    approver: str
    reason: str
    at: datetime


class NodeRelease(OperatorAction):
    """The body of the `release` Update: who lets go of the escalated node, why, and whether it
    stays cordoned for them (else it goes back to service, unless it was cordoned before gpuheal)."""

    keep_cordoned: bool = False


class PhaseEntry(BaseModel):
    """When the workflow entered a phase."""

    phase: Phase
    entered_at: datetime


class RemediationStatus(BaseModel):
    """The answer of the `status` query."""

    node: str
    phase: Phase
    action: Action
    xids: list[int]
    gpu_uuids: list[str]
    faults: int
    reason: str = ""
    decision: RecordedDecision | None = None
    # What people did with the remediation while it was escalated (resume, retry, release), in order.
    actions: list[RecordedAction] = Field(default_factory=list)
    # The fleet governor's permit this run holds (or held), once granted.
    permit: PermitGrant | None = None
    drain: DrainProgress | None = None
    # What the repair did, step by step ("GPU reset …", "reboot via aws: …"), for operators.
    repair: list[str] = Field(default_factory=list)
    history: list[PhaseEntry]
    # The version of the policy the run decides by ("": a run begun before policies had versions).
    policy_version: str = ""
    # A dry run's plan: what the remediation would have done, step by step (gpuheal.domain.rehearsal).
    plan: list[str] = Field(default_factory=list)
    # Where the diagnostics bundles collected before its reboots are (policy diagnostics.collect).
    diagnostics: list[str] = Field(default_factory=list)
