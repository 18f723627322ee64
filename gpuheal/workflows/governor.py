"""GovernorWorkflow: one per cluster (`gpuheal-governor`), holding the fleet's budget, breaker and pause.

A remediation asks it for a permit before it touches its node (the `request` signal, sent with
signal-with-start, so the governor starts with the first request if it is not running) and returns
the permit when it ends, whatever the ending (the `release` signal). The governor answers requests
in arrival order, as the budget allows (gpuheal.domain.fleet.choose), with the remediation's `permit`
signal; the permits of one pass are signalled together, in one local step. The limits: at most N
remediations at once, at most P% of the GPU nodes, at most K per group of a node label. When too
many nodes were quarantined within the breaker's window, the breaker trips and every new request
waits until a person resets it; a person can also pause the governor. Both are Updates with
validators, so the caller learns at once why an action is refused, and who did what is recorded.

Permits are kept by id ("<workflow id>/<run id>" of the remediation) on both sides: a request asked
twice is held once, a permit returned twice is returned once, and a remediation that vanished
without returning its permit (terminated) is found by asking Temporal about the holders, and its
permit reclaimed. The state lives in the workflow, so a worker crash loses nothing; the history is
kept short with continue-as-new.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import FailureError

from gpuheal.workflows import patches
from gpuheal.workflows.run_step import run_step

with workflow.unsafe.imports_passed_through():
    from gpuheal.domain import contracts, fleet
    from gpuheal.domain.fleet import (
        COLLECT_ALL_SIGNAL,
        COLLECT_SIGNAL,
        CONFIGURE_SIGNAL,
        GOVERNOR,
        PERMIT_SIGNAL,
        RELEASE_SIGNAL,
        REQUEST_SIGNAL,
        FleetPolicy,
        GovernorInput,
        GovernorRefused,
        GovernorState,
        GovernorStatus,
        GrantQuery,
        Grants,
        HeldPermit,
        HolderCheck,
        NodeCountRequest,
        PermitDelivery,
        PermitRequest,
        PermitRequests,
        PermitReturn,
        Waiting,
        governor_task_queue,
    )
    from gpuheal.domain.operator import OperatorAction, RecordedAction, check_who_and_why, recorded
    from gpuheal.domain.policy import StepTimeouts

# Marks the governors that deliver a pass's permits in one step (`_deliver`).
_BATCHED_DELIVERY_PATCH = "batched-permit-delivery"
# Marks the governors that leave a grant to an ask that collects it (`collect`), and keep one delivery
# under way at a time, grants made meanwhile going together in the next (`_deliver_later`).
_COLLECT_PATCH = "collected-permits"
# Marks the governors that take a worker's asks sent together (`collect_all`).
_COLLECT_ALL_PATCH = "collect-all"
# Marks the governors that, started afresh, count the GPU nodes at once and first check their
# holders after `reclaim_every` (`run`), not at a storm's first pass.
_FRESH_START_PATCH = "fresh-start-checks-later"
# The patches above came before gpuheal 0.2.0: a run begun under it has them all (gpuheal.workflows.patches).
_FOLDED = patches.Folded(
    {patches.RELEASE_0_2_0: (_BATCHED_DELIVERY_PATCH, _COLLECT_PATCH, _COLLECT_ALL_PATCH, _FRESH_START_PATCH)}
)
# Operator actions and trips kept in the state (and shown by `gpuheal breaker status`).
_LOG_LENGTH = 50
# Permits whose return arrived recently, so a late duplicate of their request is not queued again.
_RETURNED_KEPT = 1000


@workflow.defn(name=GOVERNOR.name)
class GovernorWorkflow:
    """Hand out permits to remediations within the fleet's limits; stop when a person must look."""

    @workflow.init
    def __init__(self, request: GovernorInput) -> None:
        state = request.state
        self._policy: FleetPolicy = request.policy
        self._held: dict[str, HeldPermit] = {permit.permit_id: permit for permit in state.held}
        # Insertion order is arrival order.
        self._waiting: dict[str, Waiting] = {waiting.request.permit_id: waiting for waiting in state.waiting}
        self._recent: list[datetime] = list(state.recent_grants)
        self._gpu_nodes = state.gpu_nodes
        self._counted_at = state.counted_at
        self._tripped = state.tripped
        self._paused = state.paused
        self._log: list[RecordedAction] = list(state.log)
        self._returned: dict[str, None] = dict.fromkeys(state.returned)
        self._checked_at: datetime | None = None
        self._changed = True
        # Grants being signalled to their remediations, and those granted since that wait for the next delivery.
        self._sending: set[asyncio.Task[None]] = set()
        self._undelivered: list[HeldPermit] = []
        self._delivering = False
        # Decided in the run's first activation (`run`), after the signals that came with it are
        # handled: those requests are taken once it is decided.
        self._leaves_grants_to_collect = False
        self._takes_asks_together = False
        self._decided = False
        self._taken_early: list[tuple[PermitRequest, bool, bool]] = []

    # ---- what remediations send ------------------------------------------------------------------

    @workflow.signal(name=REQUEST_SIGNAL.name)
    def request(self, request: PermitRequest) -> None:
        """A remediation asks for a permit, to be signalled; one already held, waiting or returned is
        not asked again. An ask that was to collect its grant (`collect`) and stopped waiting for it
        asks this way: its grant is signalled, made already or when it comes."""
        self._take(request, collects=False)

    @workflow.signal(name=COLLECT_SIGNAL.name)
    def collect(self, request: PermitRequest) -> None:
        """A remediation asks for a permit that it collects itself, with the `grants` query."""
        self._take(request, collects=True)

    @workflow.signal(name=COLLECT_ALL_SIGNAL.name)
    def collect_all(self, asks: PermitRequests) -> None:
        """Several remediations of one worker ask together, each as with `collect`: in a storm the
        governor takes a worker's asks with one signal, not hundreds."""
        for request in asks.requests:
            self._take(request, collects=True, together=True)

    def _take(self, request: PermitRequest, collects: bool, together: bool = False) -> None:
        if not self._decided:
            self._taken_early.append((request, collects, together))
            return
        if (collects and not self._leaves_grants_to_collect) or (together and not self._takes_asks_together):
            return  # a governor of before `collect` (`collect_all`) left the signal unhandled: its replay must too
        permit_id = request.permit_id
        waiting = self._waiting.get(permit_id)
        if waiting is not None and waiting.collects and not collects:
            self._waiting[permit_id] = waiting.model_copy(update={"collects": False})
        elif permit_id in self._held:
            # Granted to an ask that stopped waiting for it (a governor of before `collect` ignored this).
            if not collects and self._leaves_grants_to_collect:
                self._deliver_later([self._held[permit_id]])
        elif waiting is None and permit_id not in self._returned:
            self._waiting[permit_id] = Waiting(request=request, collects=collects)
            self._changed = True

    @workflow.signal(name=RELEASE_SIGNAL.name)
    def release(self, returned: PermitReturn) -> None:
        """A remediation ended: its permit (or its request, still waiting) is given back."""
        self._held.pop(returned.permit_id, None)
        self._waiting.pop(returned.permit_id, None)
        self._returned[returned.permit_id] = None
        while len(self._returned) > _RETURNED_KEPT:
            del self._returned[next(iter(self._returned))]
        self._changed = True

    @workflow.signal(name=CONFIGURE_SIGNAL.name)
    def configure(self, policy: FleetPolicy) -> None:
        """A worker started with these limits; they apply from the next permit on."""
        if policy != self._policy:
            self._policy = policy
            self._changed = True

    # ---- what operators do -----------------------------------------------------------------------

    @workflow.update(name="pause")
    def pause(self, action: OperatorAction) -> GovernorStatus:
        """Hold every new remediation before it touches its node; those under way finish."""
        self._paused = self._record("pause", action)
        return self.status()

    @pause.validator
    def _check_pause(self, action: OperatorAction) -> None:
        check_who_and_why(action.by, action.reason)
        if self._paused is not None:
            raise GovernorRefused(f"already paused by {self._paused.by} at {_at(self._paused)}: {self._paused.reason}")

    @workflow.update(name="resume")
    def resume(self, action: OperatorAction) -> GovernorStatus:
        """Let the waiting remediations go on, in arrival order, as the budget allows."""
        self._record("resume", action)
        self._paused = None
        return self.status()

    @resume.validator
    def _check_resume(self, action: OperatorAction) -> None:
        check_who_and_why(action.by, action.reason)
        if self._paused is None:
            raise GovernorRefused("the governor is not paused")

    @workflow.update(name="reset_breaker")
    def reset_breaker(self, action: OperatorAction) -> GovernorStatus:
        """Close the tripped breaker: the window starts empty and the waiting remediations go on."""
        self._record("reset_breaker", action)
        self._tripped = None
        self._recent.clear()
        return self.status()

    @reset_breaker.validator
    def _check_reset(self, action: OperatorAction) -> None:
        check_who_and_why(action.by, action.reason)
        if self._tripped is None:
            status = self.status()
            raise GovernorRefused(
                f"the breaker is not tripped ({status.quarantined_in_window} of {status.threshold} "
                f"quarantines within {self._policy.breaker.window})"
            )

    @workflow.query(name="grants")
    def grants(self, query: GrantQuery) -> Grants:
        """The permits among these that are held, for the asks that collect them, and those a pass
        left waiting (their asks stop waiting and have the grant signalled when it comes)."""
        held = tuple(self._held[permit_id] for permit_id in query.permit_ids if permit_id in self._held)
        delivery = self._delivery(held)
        waits = tuple(p for p in query.permit_ids if p in self._waiting and self._waiting[p].why)
        return Grants(grants=tuple(delivery.grant_of(permit) for permit in held), waiting=waits)

    @workflow.query(name="status")
    def status(self) -> GovernorStatus:
        """The limits, the permits held, who waits and why, the breaker and the pause."""
        now = workflow.now()
        return GovernorStatus(
            policy=self._policy,
            state=self._state(),
            limit=self._policy.budget.limit(self._gpu_nodes),
            threshold=self._policy.breaker.threshold(self._gpu_nodes),
            quarantined_in_window=len(fleet.within_window(self._recent, self._policy.breaker.window, now)),
        )

    # ---- the run ---------------------------------------------------------------------------------

    @workflow.run
    async def run(self, request: GovernorInput) -> None:
        # Decided in the first activation: a governor that started before permits were delivered in
        # one step per pass keeps signalling each one itself until it continues as new.
        self._delivers_in_batches = _FOLDED.patched(_BATCHED_DELIVERY_PATCH)
        self._leaves_grants_to_collect = _FOLDED.patched(_COLLECT_PATCH)
        self._takes_asks_together = _FOLDED.patched(_COLLECT_ALL_PATCH)
        self._decided = True
        for early, collects, together in self._taken_early:
            self._take(early, collects, together)
        self._taken_early.clear()
        # A governor started afresh holds nothing that could have ended unseen: the requests it takes
        # come from running remediations, so its first check of them waits a `reclaim_every`; and it
        # counts the GPU nodes now, before a storm's first requests wait for the count. (One that
        # continued as new carries permits, and checks them at once.)
        if _FOLDED.patched(_FRESH_START_PATCH) and not request.state.held and not request.state.waiting:
            self._checked_at = workflow.now()
            await self._count_gpu_nodes()
        while True:
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: self._changed,
                    timeout=self._next_check(),
                    timeout_summary="the next count of GPU nodes, check of the permits' holders, or quarantine "
                    "leaving the breaker's window (a request, a returned permit or an operator ends it sooner)",
                )
            self._changed = False
            info = workflow.info()
            if info.is_continue_as_new_suggested() or info.get_current_history_length() >= request.history_limit:
                # Signals and Updates taken so far are in the state carried over; grants being sent finish first.
                await workflow.wait_condition(lambda: workflow.all_handlers_finished() and not self._sending)
                # Onto the governor's own task queue, where one started before it had one moves.
                workflow.continue_as_new(
                    GovernorInput(policy=self._policy, state=self._state(), history_limit=request.history_limit),
                    task_queue=governor_task_queue(info.workflow_id),
                )
            now = workflow.now()
            if self._waiting and self._due(self._counted_at, self._policy.count_every, now):
                await self._count_gpu_nodes()
            if (self._held or self._waiting) and self._due(self._checked_at, self._policy.reclaim_every, now):
                await self._reclaim()
            self._grant(workflow.now())
            workflow.set_current_details(self._details())

    def _grant(self, now: datetime) -> None:
        self._recent = list(fleet.within_window(self._recent, self._policy.breaker.window, now))
        choice = fleet.choose(self._policy, self._state(), now)
        if choice.trip:
            self._tripped = RecordedAction(action="trip", by="gpuheal", reason=choice.trip, at=now)
            self._log_action(self._tripped)
            workflow.logger.warning("circuit breaker tripped: %s", choice.trip)
        granted: list[HeldPermit] = []
        collected: set[str] = set()
        for request in choice.grant:
            group = self._policy.budget.group_of(request.labels)
            permit = HeldPermit(
                permit_id=request.permit_id,
                workflow_id=request.workflow_id,
                run_id=request.run_id,
                node=request.node,
                group=group,
                granted_at=now,
            )
            if self._waiting.pop(request.permit_id).collects and self._leaves_grants_to_collect:
                collected.add(request.permit_id)
            self._held[request.permit_id] = permit
            self._recent.append(now)
            granted.append(permit)
        for permit_id, why in choice.why.items():
            self._waiting[permit_id] = self._waiting[permit_id].model_copy(update={"why": why})
        if self._leaves_grants_to_collect:
            self._deliver_later([permit for permit in granted if permit.permit_id not in collected])
            return
        if not granted:
            return
        deliveries = [self._deliver(tuple(granted))] if self._delivers_in_batches else map(self._send, granted)
        for delivery in deliveries:
            self._start_sending(delivery)

    def _start_sending(self, delivery: Coroutine[None, None, None]) -> None:
        sending = asyncio.create_task(delivery)
        self._sending.add(sending)
        sending.add_done_callback(self._sending.discard)

    def _deliver_later(self, permits: list[HeldPermit]) -> None:
        """Signal these grants with the next delivery: at once where none is under way."""
        self._undelivered.extend(permits)
        if self._undelivered and not self._delivering:
            self._delivering = True
            self._start_sending(self._deliver_undelivered())

    async def _deliver_undelivered(self) -> None:
        """Deliver the grants not yet delivered, all at once, until none is left (the flag, not the
        task's end, says when: grants made as the last delivery ends are not left behind)."""
        try:
            while self._undelivered:
                permits, self._undelivered = tuple(self._undelivered), []
                await self._deliver(permits)
        finally:
            self._delivering = False

    def _delivery(self, permits: tuple[HeldPermit, ...]) -> PermitDelivery:
        return PermitDelivery(
            permits=permits,
            governor_id=workflow.info().workflow_id,
            recheck_after=self._policy.breaker.recheck_after,
        )

    async def _deliver(self, permits: tuple[HeldPermit, ...]) -> None:
        """Tell the remediations they hold their permits, in one step; runs that have ended lose
        theirs at once."""
        ended = await run_step(
            contracts.DELIVER_PERMITS,
            self._delivery(permits),
            StepTimeouts(),
            summary=f"signal {len(permits)} permit(s) to their remediations",
        )
        for permit in permits:
            if permit.permit_id in ended.permit_ids:
                self._take_back(permit, "its remediation has ended")

    async def _send(self, permit: HeldPermit) -> None:
        """Tell one remediation it holds its permit, with a signal of the governor's own (the way of
        governors started before `_deliver`); a run that has ended loses it at once."""
        handle = workflow.get_external_workflow_handle(permit.workflow_id, run_id=permit.run_id)
        try:
            await handle.signal(PERMIT_SIGNAL.name, self._delivery((permit,)).grant_of(permit))
        except FailureError as error:
            self._take_back(permit, f"its remediation has ended ({error})")

    def _take_back(self, permit: HeldPermit, why: str) -> None:
        if self._held.pop(permit.permit_id, None) is None:
            return  # returned already: a retried delivery found its run ended after it had used the permit
        workflow.logger.info("permit %s reclaimed: %s", permit.permit_id, why)
        # Nothing was quarantined under it: the breaker does not count it.
        if permit.granted_at in self._recent:
            self._recent.remove(permit.granted_at)
        self._changed = True

    async def _count_gpu_nodes(self) -> None:
        selector = self._policy.budget.gpu_node_selector
        counted = await run_step(
            contracts.COUNT_GPU_NODES,
            NodeCountRequest(selector=selector),
            StepTimeouts(),
            summary=f"count the nodes labelled {selector}",
        )
        self._gpu_nodes = counted.count
        self._counted_at = workflow.now()

    async def _reclaim(self) -> None:
        """Take back the permits of remediations that ended without returning them, and drop the
        requests of those that ended while they waited (terminated, reset)."""
        asked = (*self._held.values(), *(_as_held(waiting.request) for waiting in self._waiting.values()))
        ended = await run_step(
            contracts.FIND_ENDED,
            HolderCheck(permits=asked),
            StepTimeouts(),
            summary=f"ask Temporal whether the {len(asked)} holders of permits still run",
        )
        self._checked_at = workflow.now()
        for permit_id in ended.permit_ids:
            if self._held.pop(permit_id, None) is not None:
                workflow.logger.info("permit %s reclaimed: its remediation ended without returning it", permit_id)
            self._waiting.pop(permit_id, None)

    def _next_check(self) -> timedelta | None:
        """How long to wait at most before counting the GPU nodes, checking the holders, or letting the
        oldest quarantine leave the breaker's window (which the UI's details count)."""
        waits = []
        if self._waiting:
            waits.append(self._policy.count_every)
        if self._held or self._waiting:
            waits.append(self._policy.reclaim_every)
        if self._recent:
            leaves = self._recent[0] + self._policy.breaker.window - workflow.now()
            waits.append(max(leaves, timedelta(seconds=1)))
        return min(waits) if waits else None

    @staticmethod
    def _due(last: datetime | None, every: timedelta, now: datetime) -> bool:
        return last is None or now - last >= every

    def _record(self, what: str, action: OperatorAction) -> RecordedAction:
        taken = recorded(what, action, workflow.now())
        self._log_action(taken)
        self._changed = True
        return taken

    def _log_action(self, recorded: RecordedAction) -> None:
        self._log = [*self._log, recorded][-_LOG_LENGTH:]

    def _state(self) -> GovernorState:
        return GovernorState(
            held=tuple(self._held.values()),
            waiting=tuple(self._waiting.values()),
            recent_grants=tuple(self._recent),
            gpu_nodes=self._gpu_nodes,
            counted_at=self._counted_at,
            tripped=self._tripped,
            paused=self._paused,
            log=tuple(self._log),
            returned=tuple(self._returned),
        )

    def _details(self) -> str:
        """The UI's current details: the budget, the breaker, the pause and who waits."""
        status = self.status()
        lines = [
            f"**{len(self._held)} of {status.limit}** permits held ({self._gpu_nodes} GPU nodes); "
            f"{len(self._waiting)} waiting",
            f"breaker: {status.quarantined_in_window} of {status.threshold} quarantines within "
            f"{self._policy.breaker.window}" + (f" — **TRIPPED**: {self._tripped.reason}" if self._tripped else ""),
        ]
        if self._paused is not None:
            lines.append(f"**paused** by {self._paused.by} at {_at(self._paused)}: {self._paused.reason}")
        lines.extend(f"- waiting: `{w.request.node}` — {w.why}" for w in list(self._waiting.values())[:20])
        return "\n\n".join(lines)


def _as_held(request: PermitRequest) -> HeldPermit:
    """A waiting request, in the shape the check of holders takes."""
    return HeldPermit(
        permit_id=request.permit_id,
        workflow_id=request.workflow_id,
        run_id=request.run_id,
        node=request.node,
        group="",
        granted_at=request.asked_at,
    )


def _at(recorded: RecordedAction) -> str:
    return recorded.at.isoformat(timespec="seconds")
