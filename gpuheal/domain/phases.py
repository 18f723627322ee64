"""The phases of a remediation, in the order a healthy run passes through them."""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    """Where a remediation stands; always mirrored in the `GpuhealPhase` search attribute."""

    DETECTED = "Detected"
    # The node is labelled gpuheal.io/hold=true: nothing is done (not even a permit asked for) until it goes.
    ON_HOLD = "OnHold"
    # Waiting for the fleet governor's permit (budget, breaker, pause); the node is not touched yet.
    AWAITING_BUDGET = "AwaitingBudget"
    QUARANTINED = "Quarantined"
    DRAINING = "Draining"
    DRAINED = "Drained"
    AWAITING_APPROVAL = "AwaitingApproval"
    REPAIRING = "Repairing"
    WAITING_FOR_NODE = "WaitingForNode"
    VERIFYING = "Verifying"
    # The node's agent runs the policy's GPU check (validation.level) before the node goes back.
    VALIDATING = "Validating"
    # The repair did not hold and the policy allows replacement: the provider terminates the machine
    # (its group launches another) and the run waits for the node object to go.
    REPLACING = "Replacing"
    RESOLVED = "Resolved"
    # The machine was terminated and its node deleted: the node is gone from service for good.
    REPLACED = "Replaced"
    # Held for a person: the node stays cordoned until they resume, retry or release the remediation.
    ESCALATED = "Escalated"
    # A person released an escalated node as it was, unrepaired.
    RELEASED = "Released"
    CANCELLED = "Cancelled"
    FAILED = "Failed"
    # A dry run (policy `dry_run`): what the remediation would have done is in its status' plan; nothing was done.
    DRY_RUN = "DryRun"

    @property
    def is_final(self) -> bool:
        """True once the remediation has ended, one way or another."""
        return self in _FINAL

    @property
    def is_settled(self) -> bool:
        """True once nothing more happens without a person: ended, or escalated to one."""
        return self in _FINAL or self is Phase.ESCALATED


_FINAL = frozenset({Phase.RESOLVED, Phase.REPLACED, Phase.RELEASED, Phase.CANCELLED, Phase.FAILED, Phase.DRY_RUN})
