"""The remediations a fleet's faults would have started, on a virtual clock, under one policy.

The rules are the ones the workflows run by, called as they call them: a fault starts its node's
remediation, or joins the one under way; the remediation waits for the governor's permit
(`choose`: the budget, the groups, the breaker, in arrival order); with it, it is quarantined (which
the breaker counts), then it is escalated if it is a repeat offender (`repeat_offence`, against the
remediations before it), waits for a person where the policy asks one (`needs_approval`), or is
repaired. What only a real run can tell is assumed: a repair takes `repair_time` and holds. Nobody
acts: a tripped breaker stays tripped, an escalated or unapproved remediation holds its permit and
its node to the end.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.decisions import needs_approval
from gpuheal.domain.fleet import FleetPolicy, GovernorState, HeldPermit, PermitRequest, Waiting, choose
from gpuheal.domain.history import EarlierRemediation, RemediationHistory, repeat_offence
from gpuheal.domain.marks import workflow_id_for
from gpuheal.domain.phases import Phase
from gpuheal.domain.policy import RemediationPolicy
from gpuheal.replay.reading import TimedFault


@dataclass
class RunReplay:
    """One remediation as the replay ran it."""

    node: str
    run_id: str
    started_at: datetime
    action: RecommendedAction
    faults: int = 1
    gpus: set[str] = field(default_factory=set)
    serials: set[str] = field(default_factory=set)
    fault_at: datetime | None = None
    phase: Phase = Phase.AWAITING_BUDGET
    reason: str = ""
    # Why it waited for its permit (the latest reason), and when it got it.
    waited: str = ""
    granted_at: datetime | None = None
    ended_at: datetime | None = None
    repairs: int = 0

    def joined(self, fault: TimedFault) -> None:
        self.faults += 1
        self.action = self.action.escalate(fault.fault.action)
        self.gpus.update(fault.fault.gpu_uuids)
        self.serials.update(fault.fault.gpu_serials)
        self.fault_at = fault.at

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


def replay(
    faults: Iterable[TimedFault],
    nodes: Iterable[str],
    policy: RemediationPolicy,
    fleet: FleetPolicy,
    *,
    gpu_nodes: int,
    repair_time: timedelta,
) -> list[NodeReplay]:
    """Run the faults (of `nodes`, and any other node they name) through the policy, in time order."""
    return _Fleet(policy, fleet, gpu_nodes, repair_time).run(faults, nodes)


class _Fleet:
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
        # Repairs that end, by time: (when, order of scheduling, run).
        self._ending: list[tuple[datetime, int, RunReplay]] = []
        self._scheduled = itertools.count()
        self._runs = 0

    def run(self, faults: Iterable[TimedFault], nodes: Iterable[str]) -> list[NodeReplay]:
        for node in nodes:
            self._nodes.setdefault(node, NodeReplay(node))
        for fault in sorted(faults, key=lambda timed: timed.at):
            self._end_repairs(until=fault.at)
            self._fault(fault)
            self._grant(fault.at)
        self._end_repairs(until=None)
        return [self._nodes[node] for node in sorted(self._nodes)]

    def _fault(self, timed: TimedFault) -> None:
        node = timed.fault.node
        run = self._open.get(node)
        if run is not None:
            run.joined(timed)
            return
        self._runs += 1
        run = RunReplay(
            node=node,
            run_id=f"replay-{self._runs}",
            started_at=timed.at,
            action=timed.fault.action,
            gpus=set(timed.fault.gpu_uuids),
            serials=set(timed.fault.gpu_serials),
            fault_at=timed.at,
        )
        self._nodes.setdefault(node, NodeReplay(node)).runs.append(run)
        self._open[node] = run
        if self._fleet.governed:
            self._waiting.append(run)
        else:
            self._quarantined(run, timed.at)

    def _end_repairs(self, until: datetime | None) -> None:
        """Resolve the repairs that end by `until` (all of them: None), granting what they free."""
        while self._ending and (until is None or self._ending[0][0] <= until):
            at, _, run = heapq.heappop(self._ending)
            run.phase, run.ended_at, run.reason = Phase.RESOLVED, at, ""
            del self._open[run.node]
            if run in self._held:
                self._held.remove(run)
            self._grant(at)

    def _grant(self, now: datetime) -> None:
        """The governor's pass: permits for the waiting runs the budget and the breaker allow."""
        if not self._fleet.governed or not self._waiting:
            return
        if self._tripped:
            for run in self._waiting:
                run.waited = run.reason = f"circuit breaker tripped: {self._tripped}"
            return
        by_id = {run.run_id: run for run in self._waiting}
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
        run.phase = Phase.QUARANTINED
        assert run.fault_at is not None
        offence = repeat_offence(self._policy.loops, run.node, run.gpus, run.serials, self._history(run), run.fault_at)
        if offence:
            run.phase, run.reason = Phase.ESCALATED, offence
        elif needs_approval(self._policy.repair, run.action, {}):
            run.phase, run.reason = Phase.AWAITING_APPROVAL, "waits for a person's approval (nobody acts in a replay)"
        else:
            run.phase, run.repairs = Phase.REPAIRING, 1
            heapq.heappush(self._ending, (now + self._repair_time, next(self._scheduled), run))

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
            if run is not current and run.started_at <= current.started_at
        ]
        return RemediationHistory(remediations=tuple(earlier))
