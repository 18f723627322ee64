"""What a person does to gpuheal's workflows: who acts, why, and the refusal when they cannot.

The fleet governor (pause, resume, reset the breaker) and a remediation held for a person (resume,
retry, release) take the same payload and record the same answer, so `gpuheal` and the `temporal`
CLI speak to both alike and the UI shows who did what, when and why.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class OperatorAction(BaseModel):
    """Who acts and why; both are required."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    by: str = Field(min_length=1)
    reason: str = Field(min_length=1)


class RecordedAction(BaseModel):
    """A person's (or gpuheal's own) action as a workflow recorded it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: str
    by: str
    reason: str
    at: datetime


class ActionRefused(ValueError):
    """An action a workflow cannot take now; the message says why (an Update's validator raises it)."""


def check_who_and_why(who: str, why: str, *, verb: str = "acts", field: str = "by") -> None:
    """Raise ActionRefused unless the action names who takes it and why (blank counts as missing)."""
    if not who.strip():
        raise ActionRefused(f"say who {verb} ({field})")
    if not why.strip():
        raise ActionRefused("say why (reason)")


def recorded(what: str, action: OperatorAction, at: datetime) -> RecordedAction:
    """The action as the workflow keeps it, its names trimmed."""
    return RecordedAction(action=what, by=action.by.strip(), reason=action.reason.strip(), at=at)
