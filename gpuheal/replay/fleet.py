"""The remediations a fleet's faults would have started, on a virtual clock, under one policy.

The rules are the ones the workflows run by, called as they call them: a fault starts its node's
remediation, or joins the one under way (an event id counts once); the remediation waits for the
governor's permit (`choose`: the budget and the breaker, in arrival order); with it, it is
quarantined (which the breaker counts), then escalated if it is a repeat offender (`repeat_offence`,
against the remediations before it; or replaced where `repair.replace` allows and no person must
approve it, `beyond_repair`), waits for a person where the policy asks one
(`needs_approval`), or is repaired. An approval nobody gives is given on gpuheal's behalf, or
escalates, when the policy's wait runs out (`approval_wait`, `auto_approval`, `after_approval_wait`).
What only a real run can tell is assumed: a repair (or a replacement, whose provider is assumed able
to terminate machines) takes `repair_time` and holds. Nobody acts: a
tripped breaker stays tripped, an escalated remediation holds its permit and its node to the end.
Under a `dry_run` policy a remediation ends at once in DryRun, with no permit.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum

from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.decisions import (
    Next,
    after_approval_wait,
    approval_wait,
    auto_approval,
    beyond_repair,
    needs_approval,
)
from gpuheal.domain.fleet import FleetPolicy, GovernorState, HeldPermit, PermitRequest, Waiting, choose, within_window
from gpuheal.domain.history import EarlierRemediation, RemediationHistory, repeat_offence
from gpuheal.domain.marks import workflow_id_for
from gpuheal.domain.phases import Phase
from gpuheal.domain.policy import RemediationPolicy, RepairStrategy
from gpuheal.replay.reading import TimedFault


@dataclass
class RunReplay:
    """One remediation as the replay ran it."""

    node: str
    run_id: str
    started_at: datetime
    action: RecommendedAction
    fault_at: datetime
    faults: int = 1
    gpus: set[str] = field(default_factory=set)
    serials: set[str] = field(default_factory=set)
    # The health event ids of its faults: an event delivered twice counts once, as in the workflow.
    event_ids: set[str] = field(default_factory=set)
    phase: Phase = Phase.AWAITING_BUDGET
    reason: str = ""
    # Why it waited for its permit (the latest reason), and when it got it.
    waited: str = ""
    granted_at: datetime | None = None
    ended_at: datetime | None = None
    repairs: int = 0
    # Whether its repair was a reboot (else a GPU reset, or a person's): the node booted again.
    rebooted: bool = False

    def joined(self, timed: TimedFault) -> None:
        fault = timed.fault
        if fault.event_id in self.event_ids:
            return
        self.event_ids.add(fault.event_id)
        self.faults += 1
        self.action = self.action.escalate(fault.action)
        self.gpus.update(fault.gpu_uuids)
        self.serials.update(fault.gpu_serials)
        self.fault_at = timed.at

    def as_json(self) -> dict[str, object]:
        return {
            "run": self.run_id,
            "phase": self.phase.value,
            "action": self.action.name,
            "faults": self.faults,
            "gpus": sorted(self.gpus),
            "started_at": self.started_at.isoformat(),
            "granted_at": self.granted_at.isoformat() if self.granted_at else None,
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "waited": self.waited,
            "reason": self.reason,
        }


@dataclass
class NodeReplay:
    """What would have happened on one node."""

    node: str
    runs: list[RunReplay] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {
            "node": self.node,
            "remediations": len(self.runs),
            "outcomes": [run.phase.value for run in self.runs],
            "runs": [run.as_json() for run in self.runs],
        }


class _Timer(Enum):
    REPAIRED = "repaired"
    REPLACED = "replaced"
    APPROVAL = "approval"


class Fleet:
    """The remediations of the faults it is told of, in time order, and the timers they set."""

    def __init__(self, policy: RemediationPolicy, fleet: FleetPolicy, gpu_nodes: int, repair_time: timedelta) -> None:
        self._policy = policy
        self._fleet = fleet
        self._gpu_nodes = gpu_nodes
        self._repair_time = repair_time
        self._nodes: dict[str, NodeReplay] = {}
        self._open: dict[str, RunReplay] = {}
        self._waiting: list[RunReplay] = []
        self._held: list[RunReplay] = []
        self._grants: list[datetime] = []
        self._tripped = ""
        # What happens next to a run, by time: (when, order of setting, run, what).
        self._timers: list[tuple[datetime, int, RunReplay, _Timer]] = []
        self._set = itertools.count()
        self._runs = itertools.count(1)

    def node(self, name: str) -> None:
        """A node of the fleet, shown even when nothing happens to it."""
        self._nodes.setdefault(name, NodeReplay(name))

    def nodes(self) -> list[NodeReplay]:
        return [self._nodes[node] for node in sorted(self._nodes)]

    def fault(self, timed: TimedFault) -> None:
        """A fault the node's agent reported: it joins the node's remediation, or starts one."""
        node = timed.fault.node
        run = self._open.get(node)
        if run is not None:
            run.joined(timed)
            return
        run = RunReplay(
            node=node,
            run_id=f"replay-{next(self._runs)}",
            started_at=timed.at,
            action=timed.fault.action,
            fault_at=timed.at,
            gpus=set(timed.fault.gpu_uuids),
            serials=set(timed.fault.gpu_serials),
            event_ids={timed.fault.event_id},
        )
        self._nodes.setdefault(node, NodeReplay(node)).runs.append(run)
        if self._policy.dry_run:
            run.phase, run.ended_at = Phase.DRY_RUN, timed.at
            run.reason = "dry run: nothing was done"
            return
        self._open[node] = run
        if not self._fleet.governed:
            self._quarantined(run, timed.at)
            return
        self._waiting.append(run)
        self._grant(timed.at)

    def next_ended(self, until: datetime | None) -> RunReplay | None:
        """Run the timers due by `until` (all of them: None) up to the next repair that ends; that
        run (Resolved), or None when none ends by then."""
        while self._timers and (until is None or self._timers[0][0] <= until):
            at, _, run, what = heapq.heappop(self._timers)
            if what is _Timer.APPROVAL:
                self._approval_ran_out(run, at)
                continue
            replaced = what is _Timer.REPLACED
            run.phase, run.ended_at = (Phase.REPLACED if replaced else Phase.RESOLVED), at
            run.reason = f"{run.reason}; replaced" if replaced else ""
            del self._open[run.node]
            if run in self._held:
                self._held.remove(run)
            self._grant(at)
            return run
        return None

    def _grant(self, now: datetime) -> None:
        """The governor's pass: permits for the waiting runs the budget and the breaker allow."""
        if not self._waiting:
            return
        if self._tripped:
            for run in self._waiting:
                run.waited = run.reason = f"circuit breaker tripped: {self._tripped}"
            return
        by_id = {run.run_id: run for run in self._waiting}
        # As the governor does: only the grants inside the breaker's window are kept (a month's would
        # make every pass longer than the last).
        self._grants = list(within_window(self._grants, self._fleet.breaker.window, now))
        choice = choose(self._fleet, self._state(now), now)
        for request in choice.grant:
            run = by_id[request.permit_id]
            self._waiting.remove(run)
            self._held.append(run)
            self._grants.append(now)
            run.granted_at, run.reason = now, ""
            self._quarantined(run, now)
        for permit_id, why in choice.why.items():
            by_id[permit_id].waited = by_id[permit_id].reason = why
        self._tripped = choice.trip

    def _state(self, now: datetime) -> GovernorState:
        def request(run: RunReplay) -> PermitRequest:
            return PermitRequest(
                permit_id=run.run_id,
                workflow_id=workflow_id_for(run.node),
                run_id=run.run_id,
                node=run.node,
                asked_at=run.started_at,
            )

        held = tuple(
            HeldPermit(
                permit_id=run.run_id,
                workflow_id=workflow_id_for(run.node),
                run_id=run.run_id,
                node=run.node,
                group="",
                granted_at=run.granted_at or now,
            )
            for run in self._held
        )
        return GovernorState(
            held=held,
            waiting=tuple(Waiting(request=request(run)) for run in self._waiting),
            recent_grants=tuple(self._grants),
            gpu_nodes=self._gpu_nodes,
        )

    def _quarantined(self, run: RunReplay, now: datetime) -> None:
        """The node is out of service: escalate a repeat offender, wait for a person where the policy
        asks one, or repair."""
        offence = repeat_offence(self._policy.loops, run.node, run.gpus, run.serials, self._history(run), run.fault_at)
        repair = self._policy.repair
        # A termination a person must approve waits for them (never for the policy's own approval),
        # and nobody acts here: it stays escalated.
        replaced = beyond_repair(repair, run.action, offence).next is Next.REPLACE
        if offence and replaced and not needs_approval(repair, run.action, {}):
            # A new machine, as a reboot's new boot is for the node's agent.
            run.phase, run.reason, run.rebooted = Phase.REPLACING, offence, True
            self._at(self._later(now, self._repair_time), run, _Timer.REPLACED)
        elif offence:
            run.phase, run.reason = Phase.ESCALATED, offence
        elif needs_approval(self._policy.repair, run.action, {}):
            run.phase, run.reason = Phase.AWAITING_APPROVAL, "waits for a person's approval"
            self._at(now + approval_wait(self._policy.repair, run.action), run, _Timer.APPROVAL)
        else:
            self._repair(run, now)

    def _approval_ran_out(self, run: RunReplay, at: datetime) -> None:
        """Nobody decided: gpuheal approves where the policy lets it, else the run escalates."""
        decision = auto_approval(self._policy.repair, run.action, at)
        if decision is not None:
            self._repair(run, at)
            return
        run.phase, run.reason = Phase.ESCALATED, after_approval_wait(None, self._policy.repair.approval_timeout).reason

    def _repair(self, run: RunReplay, now: datetime) -> None:
        run.phase, run.repairs, run.reason = Phase.REPAIRING, 1, ""
        run.rebooted = self._policy.repair.strategy_for(run.action) is RepairStrategy.REBOOT
        self._at(self._later(now, self._repair_time), run, _Timer.REPAIRED)

    def _at(self, when: datetime, run: RunReplay, what: _Timer) -> None:
        heapq.heappush(self._timers, (when, next(self._set), run, what))

    @staticmethod
    def _later(now: datetime, wait: timedelta) -> datetime:
        try:
            return now + wait
        except OverflowError:  # the log ends at the calendar's end: the repair ends with it
            return datetime.max.replace(tzinfo=now.tzinfo)

    def _history(self, current: RunReplay) -> RemediationHistory:
        """The remediations before `current`, as visibility would show them."""
        earlier = [
            EarlierRemediation(
                workflow_id=workflow_id_for(run.node),
                run_id=run.run_id,
                node=run.node,
                phase=run.phase.value,
                gpus=tuple(sorted(run.gpus)),
                serials=tuple(sorted(run.serials)),
                repairs=run.repairs,
                started_at=run.started_at,
                closed_at=run.ended_at,
            )
            for node in self._nodes.values()
            for run in node.runs
            if run is not current
        ]
        return RemediationHistory(remediations=tuple(earlier))
