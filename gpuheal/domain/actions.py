"""Recommended actions, as numbered on the health-event wire, and how they rank.

A node's remediation can only escalate: a second fault may turn a GPU reset into a reboot, never the
other way round. The rank below is that order. Actions a machine cannot carry out on its own
(support cases, diagnostics, replacing the VM) rank above every reboot, because once a person has to
look at the node nothing automatic should take over again.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema


class RecommendedAction(IntEnum):
    """The `RecommendedAction` enum of the PlatformConnector contract, with its wire numbers."""

    NONE = 0
    COMPONENT_RESET = 2
    CONTACT_SUPPORT = 5
    RUN_FIELDDIAG = 6
    RESTART_VM = 15
    RESTART_BM = 24
    REPLACE_VM = 25
    RUN_DCGMEUD = 26
    CUSTOM = 27
    UNKNOWN = 99

    @property
    def rank(self) -> int:
        """Position in the escalation order; a higher rank is a more drastic remedy."""
        return _RANK[self]

    @property
    def needs_person(self) -> bool:
        """True when no provider can carry the action out and an operator must do it."""
        return self.rank >= _RANK[RecommendedAction.REPLACE_VM]

    @property
    def is_actionable(self) -> bool:
        """True for every action that takes the node out of service."""
        return self is not RecommendedAction.NONE

    def escalate(self, other: RecommendedAction) -> RecommendedAction:
        """The more drastic of two actions: what a node gets when both faults apply."""
        return other if other.rank > self.rank else self


_RANK: dict[RecommendedAction, int] = {
    RecommendedAction.NONE: 0,
    RecommendedAction.COMPONENT_RESET: 1,
    RecommendedAction.RESTART_VM: 2,
    RecommendedAction.RESTART_BM: 3,
    RecommendedAction.REPLACE_VM: 4,
    RecommendedAction.RUN_DCGMEUD: 5,
    RecommendedAction.RUN_FIELDDIAG: 6,
    RecommendedAction.CUSTOM: 7,
    RecommendedAction.UNKNOWN: 8,
    RecommendedAction.CONTACT_SUPPORT: 9,
}


# Wire numbers gpuheal takes for one of its own actions. NVSentinel's current health_event.proto
# (data-models/protobufs/health_event.proto) adds REMEDIATE = 28: "remediate the node", leaving the
# how to the remediator. gpuheal's own repair of a node is a reboot through its provider, and
# RESTART_VM is the least drastic reboot: a later, more specific fault (RESTART_BM, or one that
# needs a person) still raises it, and a reboot that does not bring the GPUs back escalates.
_WIRE_ALIASES: dict[int, RecommendedAction] = {28: RecommendedAction.RESTART_VM}


def action_from_wire(number: int) -> RecommendedAction | None:
    """The action a wire number asks for (REMEDIATE is RESTART_VM); None for a number gpuheal does not know."""
    try:
        return RecommendedAction(number)
    except ValueError:
        return _WIRE_ALIASES.get(number)


def _parse_action(value: Any) -> Any:
    """Accept an action by wire number or by name (as people and JSON tools write it)."""
    if isinstance(value, str) and not value.isdigit():
        try:
            return RecommendedAction[value.upper()]
        except KeyError:
            names = ", ".join(a.name for a in RecommendedAction)
            raise ValueError(f"unknown recommended action {value!r}; one of {names}") from None
    return value


# The action as payloads carry it: its name in JSON (readable in the Temporal UI), a name or a number in.
Action = Annotated[
    RecommendedAction,
    BeforeValidator(_parse_action),
    PlainSerializer(lambda action: action.name, return_type=str, when_used="json"),
    # As a schema says it (the policy file's): a name, or a wire number.
    WithJsonSchema({"enum": [*(action.name for action in RecommendedAction), *(int(a) for a in RecommendedAction)]}),
]
