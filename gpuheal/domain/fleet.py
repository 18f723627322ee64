"""The fleet's limits on remediation: how many nodes may be out of service at once, and when to stop.

One governor per cluster (gpuheal.workflows.governor) holds these limits and hands out permits: a
remediation asks for one before it touches its node and returns it when it ends, whatever the
ending. This module holds the limits, the payloads that cross between the governor and the
remediations, and the rules the governor keeps, as pure functions tested without Temporal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from gpuheal.domain.operator import ActionRefused, RecordedAction
from gpuheal.domain.workflow_contract import SignalContract, WorkflowContract

GOVERNOR_ID = "gpuheal-governor"
# How long an ask waits for its grant before the remediation waits for a signal instead. In a storm
# grants come within a second or two: a grant collected by the ask saves the remediation a workflow
# task and the governor a signal, and the node is quarantined in the task that asked.
COLLECT_WITHIN = timedelta(seconds=5)


def governor_task_queue(governor_id: str) -> str:
    """The task queue a governor runs on, which every worker also polls: named after the governor, so
    its workflow tasks wait behind no remediation's, and no cluster's queue is another's governor's."""
    return governor_id


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FleetBudget(_Strict):
    """How many remediations may hold their nodes out of service at once."""

    max_concurrent: int = Field(default=10, ge=1)
    # At most this share of the GPU nodes (those `gpu_node_selector` selects), but one at least: a
    # small fleet must still be able to repair a node.
    max_percent: float = Field(default=10.0, gt=0, le=100)
    gpu_node_selector: str = Field(default="nvidia.com/gpu.present", min_length=1)
    # A node label that groups nodes which must not be out of service together (a rack, a zone, an
    # NVLink domain), and how many of one group may be; "" for no groups.
    group_label: str = ""
    max_per_group: int = Field(default=1, ge=1)

    def limit(self, gpu_nodes: int) -> int:
        """The number of permits that may be held at once with `gpu_nodes` GPU nodes in the fleet."""
        return min(self.max_concurrent, max(1, math.floor(gpu_nodes * self.max_percent / 100)))

    def group_of(self, labels: Mapping[str, str]) -> str:
        """The node's group ("" when the policy names none, or the node carries no such label)."""
        return labels.get(self.group_label, "") if self.group_label else ""

    def naming_group(self, labels: Mapping[str, str]) -> dict[str, str]:
        """Of a node's labels, those an ask carries: the one that names its group, if any.

        Not all of them: a GPU node with feature discovery carries hundreds, and the governor keeps
        every waiting ask in its state, which continue-as-new must carry in one payload. (A group
        label the policy names only after the ask leaves that ask in no group.)
        """
        return {self.group_label: labels[self.group_label]} if self.group_label in labels else {}


class BreakerPolicy(_Strict):
    """When too many nodes were quarantined lately, stop until a person has looked."""

    # Trips when this share of the GPU nodes was quarantined within `window` …
    share: float = Field(default=0.2, gt=0, le=1)
    window: timedelta = timedelta(hours=1)
    # … but never for fewer quarantines than this (on a small fleet one fault is a large share).
    at_least: int = Field(default=5, ge=1)
    # A fault that waited longer than this for its permit is checked against the node's state now
    # before anything is done to the node: it may have recovered meanwhile.
    recheck_after: timedelta = timedelta(minutes=10)

    def threshold(self, gpu_nodes: int) -> int:
        """How many quarantines within the window trip the breaker."""
        return max(self.at_least, math.floor(gpu_nodes * self.share))


class FleetPolicy(_Strict):
    """The governor's limits; `governed=False` lets every remediation go at once (not for production)."""

    governed: bool = True
    budget: FleetBudget = Field(default_factory=FleetBudget)
    breaker: BreakerPolicy = Field(default_factory=BreakerPolicy)
    # How often the governor counts the GPU nodes while remediations wait, and asks Temporal whether
    # the holders of its permits still run (a terminated remediation cannot return its permit).
    count_every: timedelta = timedelta(minutes=1)
    reclaim_every: timedelta = timedelta(minutes=5)


# ---- what crosses between a remediation and the governor ---------------------------------------------


class PermitRequest(_Strict):
    """A remediation asks for a permit (the governor's `request` signal); asking twice is harmless."""

    # "<workflow id>/<run id>" of the remediation: one permit per run.
    permit_id: str = Field(min_length=1)
    workflow_id: str = Field(min_length=1)
    run_id: str = Field(min_length=1)
    node: str = Field(min_length=1)
    asked_at: datetime
    # The node's label that names its group (FleetBudget.naming_group; filled in by the activity that asks).
    labels: dict[str, str] = Field(default_factory=dict)


class PermitGrant(_Strict):
    """The governor's answer (the remediation's `permit` signal): the node may be taken out of service."""

    permit_id: str
    governor_id: str
    granted_at: datetime
    # A fault that waited longer than this is re-checked against the node before anything is done.
    recheck_after: timedelta


class PermitReturn(_Strict):
    """A remediation gives its permit back, or withdraws its request (the governor's `release` signal)."""

    permit_id: str = Field(min_length=1)
    # How the remediation ended, for the governor's log.
    outcome: str = ""


class PermitGiveBack(_Strict):
    """The `release` signal for `governor_id`, sent by the remediation's step that gives its permit back."""

    governor_id: str = Field(min_length=1)
    returned: PermitReturn


class PermitGivenBack(_Strict):
    """Whether the governor was there to take it: a governor that is gone has nothing to take back."""

    governor_found: bool


class PermitAsked(_Strict):
    """What asking for a permit found: whether the fleet is governed, and by which workflow."""

    governed: bool
    governor_id: str = ""
    # The node's bootID when the permit was asked for: a fault re-checked later compares with it.
    boot_id: str = ""
    # The permit, where the ask waited for it and it came (collected: the governor does not signal it).
    grant: PermitGrant | None = None
    # The node is labelled gpuheal.io/hold=true: nothing was asked (`collect_permit_unless_held`).
    held: bool = False


class PermitRequests(_Strict):
    """Asks for permits to collect, sent together by one worker (the governor's `collect_all` signal)."""

    requests: tuple[PermitRequest, ...]


class GrantQuery(_Strict):
    """Which of these permits the governor has granted (the `grants` query, which collecting asks poll)."""

    permit_ids: tuple[str, ...]


class Grants(_Strict):
    grants: tuple[PermitGrant, ...] = ()
    # Asked about and left waiting by a pass (the budget, the breaker or a pause holds them): their
    # asks stop waiting at once rather than hold the workers' slots for nothing.
    waiting: tuple[str, ...] = ()


class HeldPermit(_Strict):
    permit_id: str
    workflow_id: str
    run_id: str
    node: str
    group: str
    granted_at: datetime


class Waiting(_Strict):
    """A request that waits, and why (for `gpuheal budget` and the UI)."""

    request: PermitRequest
    why: str = ""
    # The asker collects its grant with the `grants` query (it waits for it in its ask): not signalled.
    collects: bool = False


class GovernorState(_Strict):
    """Everything the governor knows; carried across continue-as-new."""

    held: tuple[HeldPermit, ...] = ()
    # In arrival order.
    waiting: tuple[Waiting, ...] = ()
    # When each permit within the breaker's window was granted.
    recent_grants: tuple[datetime, ...] = ()
    gpu_nodes: int = 0
    counted_at: datetime | None = None
    tripped: RecordedAction | None = None
    paused: RecordedAction | None = None
    # The latest operator actions and trips, newest last.
    log: tuple[RecordedAction, ...] = ()
    # Permits returned lately: a late duplicate of their request is not queued again.
    returned: tuple[str, ...] = ()


class GovernorInput(_Strict):
    policy: FleetPolicy = Field(default_factory=FleetPolicy)
    state: GovernorState = Field(default_factory=GovernorState)
    # Continue as new once the history is this long (or when Temporal suggests it sooner).
    history_limit: int = Field(default=10_000, ge=10)


class GovernorStatus(_Strict):
    """The answer of the governor's `status` query (`gpuheal budget`, `gpuheal breaker status`)."""

    policy: FleetPolicy
    state: GovernorState
    # Permits that may be held at once now, and quarantines within the window that trip the breaker.
    limit: int
    threshold: int
    quarantined_in_window: int


GOVERNOR = WorkflowContract("GovernorWorkflow", GovernorInput, type(None))
REQUEST_SIGNAL = SignalContract("request", PermitRequest)
# A request whose asker collects the grant itself, for a moment (COLLECT_WITHIN); after that it asks
# with `request`, and a grant it did not collect is signalled.
COLLECT_SIGNAL = SignalContract("collect", PermitRequest)
# … or several such requests of one worker's remediations, sent together.
COLLECT_ALL_SIGNAL = SignalContract("collect_all", PermitRequests)
RELEASE_SIGNAL = SignalContract("release", PermitReturn)
CONFIGURE_SIGNAL = SignalContract("configure", FleetPolicy)
# Sent by the governor to the remediation it grants.
PERMIT_SIGNAL = SignalContract("permit", PermitGrant)


# ---- the rules ---------------------------------------------------------------------------------------


class GovernorRefused(ActionRefused):
    """An operator's action the governor cannot take now; the message says why."""


@dataclass(frozen=True)
class Choice:
    """Which waiting requests get a permit now, in arrival order, and why the others wait."""

    grant: tuple[PermitRequest, ...]
    # Why each request left waiting waits, by permit id.
    why: dict[str, str]
    # Set when this choice trips the breaker: why.
    trip: str = ""


def within_window(grants: Sequence[datetime], window: timedelta, now: datetime) -> tuple[datetime, ...]:
    """The grants still inside the breaker's sliding window."""
    return tuple(at for at in grants if now - at < window)


def choose(policy: FleetPolicy, state: GovernorState, now: datetime) -> Choice:
    """Hand out the permits the budget allows, to the waiting requests in arrival order.

    Nothing is granted while the governor is paused or its breaker tripped. A request whose group
    is full waits without holding back later requests of other groups. When the quarantines within
    the window reach the breaker's threshold, the breaker trips and the rest wait for a person.
    """
    if state.paused is not None:
        paused = f"paused by {state.paused.by}: {state.paused.reason}"
        return Choice((), {w.request.permit_id: paused for w in state.waiting})
    if state.tripped is not None:
        tripped = f"circuit breaker tripped: {state.tripped.reason}"
        return Choice((), {w.request.permit_id: tripped for w in state.waiting})
    budget = policy.budget
    limit = budget.limit(state.gpu_nodes)
    threshold = policy.breaker.threshold(state.gpu_nodes)
    recent = len(within_window(state.recent_grants, policy.breaker.window, now))
    groups: dict[str, int] = {}
    for permit in state.held:
        groups[permit.group] = groups.get(permit.group, 0) + 1
    held = len(state.held)
    granted: list[PermitRequest] = []
    why: dict[str, str] = {}
    trip = ""
    for waiting in state.waiting:
        request = waiting.request
        group = budget.group_of(request.labels)
        if trip:
            why[request.permit_id] = f"circuit breaker tripped: {trip}"
        elif held >= limit:
            why[request.permit_id] = f"budget full: {held} of {limit} remediations under way"
        elif group and groups.get(group, 0) >= budget.max_per_group:
            why[request.permit_id] = (
                f"group {budget.group_label}={group} full: {groups[group]} of {budget.max_per_group} under way"
            )
        elif recent >= threshold:
            trip = (
                f"{recent} GPU nodes quarantined within {policy.breaker.window} "
                f"(threshold {threshold} of {state.gpu_nodes} GPU nodes)"
            )
            why[request.permit_id] = f"circuit breaker tripped: {trip}"
        else:
            granted.append(request)
            held += 1
            recent += 1
            if group:
                groups[group] = groups.get(group, 0) + 1
    return Choice(tuple(granted), why, trip)


# ---- the governor's own steps ----------------------------------------------------------------------


class NodeCountRequest(_Strict):
    selector: str


class NodeCount(_Strict):
    count: int


class HolderCheck(_Strict):
    """The permits whose holders the governor asks Temporal about."""

    permits: tuple[HeldPermit, ...]


class PermitDelivery(_Strict):
    """Permits just granted, to be signalled to their remediations in one step."""

    permits: tuple[HeldPermit, ...]
    governor_id: str
    recheck_after: timedelta

    def grant_of(self, permit: HeldPermit) -> PermitGrant:
        """The `permit` signal's payload for one of them."""
        return PermitGrant(
            permit_id=permit.permit_id,
            governor_id=self.governor_id,
            granted_at=permit.granted_at,
            recheck_after=self.recheck_after,
        )


class EndedHolders(_Strict):
    """The permit ids whose remediation run has ended (or never existed)."""

    permit_ids: tuple[str, ...] = ()
