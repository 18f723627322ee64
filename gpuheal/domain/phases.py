"""The phases of a remediation, in the order a healthy run passes through them."""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    """Where a remediation stands; always mirrored in the `GpuhealPhase` search attribute."""

    DETECTED = "Detected"
    # Waiting for the fleet governor's permit (budget, breaker, pause); the node is not touched yet.
    AWAITING_BUDGET = "AwaitingBudget"
    QUARANTINED = "Quarantined"
    DRAINING = "Draining"
    DRAINED = "Drained"
    AWAITING_APPROVAL = "AwaitingApproval"
    REPAIRING = "Repairing"
    WAITING_FOR_NODE = "WaitingForNode"
    VERIFYING = "Verifying"
    RESOLVED = "Resolved"
    ESCALATED = "Escalated"
    CANCELLED = "Cancelled"
    FAILED = "Failed"

    @property
    def is_final(self) -> bool:
        """True once the remediation has ended, one way or another."""
        return self in _FINAL


_FINAL = frozenset({Phase.RESOLVED, Phase.ESCALATED, Phase.CANCELLED, Phase.FAILED})
