"""RemediationWorkflow: one node, from a fatal GPU fault back to service.

The workflow runs under the id `remediate-<node>`. Detectors start it with signal-with-start and the
`fault` signal, so a second fault on the same node joins the running remediation instead of starting
another; a joining fault can only raise the action. The workflow then quarantines the node, drains
it, asks a person when the policy or the fault requires one, repairs it, checks that its GPUs report
healthy and puts it back in service. A fault that a GPU reset can fix first asks the node's agent to
reset the GPUs; a reset that fails or cannot be proven falls back to a reboot through the provider
that owns the node (AWS, Azure, GCP, Nebius, Redfish, …), and a reboot only counts once the node is
Ready with a bootID other than the one it had before. Every wait is a durable timer, so a worker can die at any point and another one
carries on where it stopped.

gpuheal undoes only what it did: a node that was cordoned before stays cordoned, and when a person
uncordons the node mid-way the workflow stands down and removes its own marks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, NoReturn, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

from gpuheal.workflows import search_attributes as attrs

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from gpuheal.domain.actions import RecommendedAction
    from gpuheal.domain.budgets import never_allows
    from gpuheal.domain.faults import Fault
    from gpuheal.domain.gpu_health import HealthBar, gpu_health_problem
    from gpuheal.domain.gpu_reset import GpuResetOrder
    from gpuheal.domain.phases import Phase
    from gpuheal.domain.policy import RemediationPolicy
    from gpuheal.domain.remediation import (
        Decision,
        PhaseEntry,
        RecordedDecision,
        RemediationInput,
        RemediationStatus,
    )
    from gpuheal.domain.steps import (
        DrainProgress,
        DrainRequest,
        GpuResetRequest,
        MachineRequest,
        MachineState,
        NodeRecord,
        NodeRef,
        NodeState,
        Outcome,
        QuarantineRequest,
        RebootRequest,
        RebootResult,
        ReleaseRequest,
        Step,
    )

ResultT = TypeVar("ResultT", bound=BaseModel)

# Marks workflows that accept GPU health only when it was reported after the repair (histories from
# before it accepted any GpuHealthy=True and replay that way). Runs since then decide it in their
# first workflow task under _HEALTH_BAR_FROM_START; this id is asked only for histories from before
# that, at the point where they recorded it.
_REPORTED_AFTER_REPAIR = "gpu-health-reported-after-repair"
# The same decision, taken before the first command. Asked where _REPORTED_AFTER_REPAIR was, right
# after a local activity's result, a replay could ask it one workflow task early: a query answered
# while that result waited splits the task between the activity's marker and the patch marker, and
# replay, which takes the result from the earlier task, asks before the later marker is announced.
# The first activation comes from the start event alone, so replay asks it where the run did.
_HEALTH_BAR_FROM_START = "gpu-health-bar-decided-at-start"
# Kubernetes calls are short; retry them patiently (an API server outage must not end a remediation).
_LOCAL_STEPS = frozenset({Step.QUARANTINE, Step.OBSERVE, Step.RELEASE, Step.RESET_GPUS, Step.WITHDRAW_GPU_RESET})
# How long the workflow waits before running a reboot step again whose attempts ran out on the
# Kubernetes API rather than on the provider.
_STEP_AGAIN = timedelta(minutes=1)
_K8S_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10))


class _Ended(Exception):
    """Raised inside the workflow to end the remediation early with a final phase and reason."""

    def __init__(self, phase: Phase, reason: str) -> None:
        super().__init__(reason)
        self.phase = phase
        self.reason = reason


@workflow.defn(name="RemediationWorkflow")
class RemediationWorkflow:
    """Quarantine, drain, repair, verify and release one node."""

    @workflow.init
    def __init__(self, request: RemediationInput) -> None:
        self._node = request.node
        self._policy: RemediationPolicy = request.policy
        self._faults: list[Fault] = []
        self._seen_event_ids: set[str] = set()
        self._action = RecommendedAction.NONE
        self._phase = Phase.DETECTED
        self._history: list[PhaseEntry] = []
        self._reason = ""
        self._decision: RecordedDecision | None = None
        self._drain: DrainProgress | None = None
        # When each budget first said it can never allow a disruption, on the passes since.
        self._never_since: dict[str, datetime] = {}
        self._record: NodeRecord | None = None
        self._repair_log: list[str] = []
        # Whether GPU health must be reported after the repair; decided in the first activation.
        self._health_bar_from_start = False

    # ---- signals and query -------------------------------------------------------------------

    @workflow.signal(name="fault")
    def fault(self, fault: Fault) -> None:
        """A fault on this node; joins the remediation and may raise its action."""
        if fault.event_id and fault.event_id in self._seen_event_ids:
            return
        if fault.event_id:
            self._seen_event_ids.add(fault.event_id)
        if not fault.action.is_actionable:
            return
        self._faults.append(fault)
        raised = self._action.escalate(fault.action)
        if raised is not self._action:
            self._action = raised
            if self._history:
                workflow.logger.info("action raised to %s by a new fault", raised.name)
        self._publish()

    @workflow.signal(name="approve")
    def approve(self, decision: Decision) -> None:
        """An operator approves the repair (`gpuheal approve NODE --by NAME`)."""
        self._decide(decision, approved=True)

    @workflow.signal(name="reject")
    def reject(self, decision: Decision) -> None:
        """An operator rejects the repair; the node stays cordoned for a person."""
        self._decide(decision, approved=False)

    @workflow.query(name="status")
    def status(self) -> RemediationStatus:
        """Where the remediation stands."""
        return RemediationStatus(
            node=self._node,
            phase=self._phase,
            action=self._action,
            xids=sorted({f.xid for f in self._faults if f.xid is not None}),
            gpu_uuids=self._gpu_uuids(),
            faults=len(self._faults),
            reason=self._reason,
            decision=self._decision,
            drain=self._drain,
            repair=list(self._repair_log),
            history=list(self._history),
        )

    # ---- the run -----------------------------------------------------------------------------

    @workflow.run
    async def run(self, request: RemediationInput) -> RemediationStatus:
        self._health_bar_from_start = workflow.patched(_HEALTH_BAR_FROM_START)
        # The first fault is delivered with the start (signal-with-start).
        await workflow.wait_condition(lambda: bool(self._faults))
        self._enter(Phase.DETECTED)
        try:
            record = await self._quarantine()
            await self._drain_node(record)
            self._enter(Phase.DRAINED)
            if self._needs_approval():
                await self._await_approval(record)
            await self._repair()
            await self._release(record, Outcome.RESOLVED, "")
            self._finish(Phase.RESOLVED, "")
        except _Ended as ended:
            self._finish(ended.phase, ended.reason)
        except ActivityError as error:
            # A step failed for good (a non-retryable error): leave the node as it is for a person.
            self._finish(Phase.FAILED, f"{error.message}: {error.cause}")
        except asyncio.CancelledError:
            # An operator cancelled the remediation: hand the node back as gpuheal found it.
            if self._record is not None:
                await self._release(self._record, Outcome.RESOLVED, "")
            self._finish(Phase.CANCELLED, "cancelled by an operator; the node was handed back as gpuheal found it")
        return self.status()

    async def _quarantine(self) -> NodeRecord:
        record = await self._step(
            Step.QUARANTINE,
            QuarantineRequest(node=self._node, holder=self._holder(), reason=self._fault_summary()),
            NodeRecord,
            summary=f"cordon + taint {self._node}",
        )
        if not record.exists:
            raise _Ended(Phase.FAILED, f"node {self._node} does not exist")
        if not record.managed:
            raise _Ended(Phase.CANCELLED, f"node {self._node} is labelled gpuheal.io/managed=false")
        self._record = record
        self._enter(Phase.QUARANTINED)
        return record

    async def _drain_node(self, record: NodeRecord) -> None:
        """Drain pass after drain pass, with a durable backoff between them, until the node is empty."""
        self._enter(Phase.DRAINING)
        policy = self._policy.drain
        started = workflow.now()
        wait = policy.retry_initial
        while True:
            elapsed = workflow.now() - started
            progress = await self._step(
                Step.DRAIN,
                DrainRequest(
                    node=self._node,
                    holder=self._holder(),
                    policy=policy,
                    delete_overdue=elapsed >= policy.delete_after,
                ),
                DrainProgress,
                summary=f"drain pass on {self._node}",
                timeout=self._policy.timeouts.drain_pass,
                heartbeat=self._policy.timeouts.drain_heartbeat,
            )
            self._drain = progress
            if progress.uncordoned:
                await self._stand_down(record)
            if progress.done:
                return
            held = self._held_for_good(progress)
            if held:
                await self._escalate(record, held)
            elapsed = workflow.now() - started
            if elapsed >= policy.timeout:
                await self._escalate(
                    record,
                    f"drain did not finish within {policy.timeout}: "
                    f"{len(progress.remaining)} pod(s) remain ({_pod_list(progress)}){_failures(progress)}",
                )
            if progress.evicted or progress.deleted:
                wait = policy.retry_initial
            pause = min(wait, policy.timeout - elapsed)
            if elapsed < policy.delete_after:
                pause = min(pause, policy.delete_after - elapsed)
            await workflow.sleep(pause, summary=f"{len(progress.remaining)} pod(s) still on the node")
            wait = min(wait * 2, policy.retry_max)

    def _held_for_good(self, progress: DrainProgress) -> str:
        """Why the drain can never finish, or "": pods held by a budget that can never allow a disruption.

        A budget counts once it has said so on every pass for `drain.never_allows_for`, so that a status
        read while the disruption controller catches up with an edit, or a transient sync failure,
        does not end the drain.
        """
        now = workflow.now()
        current: dict[str, str] = {}
        for hold in progress.holds:
            why = never_allows(hold.budget)
            if why is not None and hold.budget.ref not in current:
                current[hold.budget.ref] = (
                    f"pod {hold.pod.namespace}/{hold.pod.name} is held by PodDisruptionBudget {hold.budget.ref}, "
                    f"which can never allow a disruption: {why}"
                )
        self._never_since = {ref: self._never_since.get(ref, now) for ref in current}
        confirmed = self._policy.drain.never_allows_for
        held = [why for ref, why in current.items() if now - self._never_since[ref] >= confirmed]
        return "drain cannot finish: " + "; ".join(held) if held else ""

    def _needs_approval(self) -> bool:
        return self._policy.repair.require_approval or self._action.needs_person

    async def _await_approval(self, record: NodeRecord) -> None:
        self._enter(Phase.AWAITING_APPROVAL)
        timeout = self._policy.repair.approval_timeout
        try:
            await workflow.wait_condition(lambda: self._decision is not None, timeout=timeout)
        except TimeoutError:
            await self._escalate(record, f"no approval within {timeout}")
        assert self._decision is not None
        if not self._decision.approved:
            await self._escalate(record, f"rejected by {self._decision.approver}: {self._decision.reason}")
        # The node may have been handed back while the workflow waited for a person.
        state = await self._observe()
        if not state.unschedulable:
            await self._stand_down(record)

    async def _repair(self) -> None:
        """Reset the GPUs when the fault allows it, else (or when the reset fails) reboot; then verify."""
        repair = self._policy.repair
        if self._action is RecommendedAction.COMPONENT_RESET and repair.gpu_reset and self._gpu_uuids():
            failure = await self._reset_gpus()
            if failure is None:
                return
            workflow.logger.info("GPU reset on %s failed (%s); rebooting instead", self._node, failure)
            # An agent still busy with the order (or one restarted after the reboot) must not reset later.
            await self._step(
                Step.WITHDRAW_GPU_RESET,
                GpuResetRequest(node=self._node, holder=self._holder(), gpus=self._gpu_uuids()),
                NodeRef,
                summary=f"withdraw the GPU reset order on {self._node}",
            )
            self._repair_log.append(f"GPU reset did not repair the node ({failure}); rebooting instead")
            self._action = self._action.escalate(RecommendedAction.RESTART_VM)
        back, boot = await self._reboot()
        self._enter(Phase.VERIFYING)
        problem = await self._gpu_problem(back, self._health_bar(boot))
        if problem is not None:
            await self._escalate_current(problem)

    async def _reset_gpus(self) -> str | None:
        """Have the node's agent reset the faulty GPUs: None once they are proven healthy, else why not."""
        self._enter(Phase.REPAIRING)
        repair = self._policy.repair
        gpus = self._gpu_uuids()
        order = await self._step(
            Step.RESET_GPUS,
            GpuResetRequest(node=self._node, holder=self._holder(), gpus=gpus),
            GpuResetOrder,
            summary=f"reset {', '.join(gpus)} on {self._node}",
        )

        def answered(state: NodeState) -> bool:
            return state.gpu_reset is not None and state.gpu_reset.id == order.id

        state = await self._poll_node(answered, repair.gpu_reset_timeout)
        if state.gpu_reset is None or not answered(state):
            return f"the node's agent did not answer within {repair.gpu_reset_timeout}"
        if not state.gpu_reset.ok:
            return state.gpu_reset.detail
        self._repair_log.append(f"GPU reset: {state.gpu_reset.detail}")
        if self._action is RecommendedAction.COMPONENT_RESET:
            self._enter(Phase.VERIFYING)
            bar = HealthBar(after=state.gpu_reset.at, after_what="the GPU reset's answer")
            problem = await self._gpu_problem(state, bar)
            # A fault needing more than a reset may also arrive while the GPUs are verified.
            if problem is not None or self._action is RecommendedAction.COMPONENT_RESET:
                return problem
        return f"a fault needing {self._action.name} arrived during the reset"

    async def _reboot(self) -> tuple[NodeState, RebootResult]:
        """Reboot through the provider, gracefully first when the policy asks; the node back Ready, and the reboot."""
        graceful_timeout = self._policy.repair.graceful_timeout
        if graceful_timeout is not None:
            boot = await self._request_reboot(graceful=True)
            if not boot.graceful:
                return await self._wait_for_node(boot)  # the provider has no gentler restart: this was the reboot
            self._enter(Phase.WAITING_FOR_NODE)
            state = await self._poll_node(_back_after(boot), graceful_timeout)
            if state.boot_id != boot.boot_id_before:
                # Back, or on a new boot and still coming up: the graceful restart happened; forcing
                # one now would reboot twice.
                return await self._wait_for_node(boot)
            workflow.logger.info("%s did not restart gracefully within %s; forcing it", self._node, graceful_timeout)
        return await self._wait_for_node(await self._request_reboot(graceful=False))

    async def _request_reboot(self, *, graceful: bool) -> RebootResult:
        self._enter(Phase.REPAIRING)
        provider = self._policy.repair.provider
        timeouts = self._policy.timeouts
        while True:
            try:
                boot = await self._step(
                    Step.REBOOT,
                    RebootRequest(node=self._node, holder=self._holder(), provider=provider, graceful=graceful),
                    RebootResult,
                    summary=f"{'graceful ' if graceful else ''}reboot via {provider} ({self._action.name})",
                    timeout=timeouts.reboot_call,
                    heartbeat=timeouts.reboot_heartbeat,
                    retry=RetryPolicy(
                        initial_interval=timedelta(seconds=2),
                        maximum_interval=timedelta(minutes=1),
                        maximum_attempts=timeouts.provider_attempts,
                    ),
                )
                break
            except ActivityError as error:
                _reraise_cancellation(error)
                if _refused_for_good(error):
                    await self._escalate_current(f"the reboot could not be requested: {_failure(error)}")
                # The attempts ran out on something other than the provider (the Kubernetes API, lost
                # workers). The request is recorded on the node, so running the step again is safe.
                await workflow.sleep(_STEP_AGAIN, summary=f"reboot step failed ({_failure(error)}); again soon")
        self._repair_log.append(f"{'graceful ' if boot.graceful else ''}reboot via {boot.provider}: {boot.detail}")
        return boot

    async def _wait_for_node(self, boot: RebootResult) -> tuple[NodeState, RebootResult]:
        """Poll, on durable timers, until the node is Ready with a bootID other than before the reboot."""
        self._enter(Phase.WAITING_FOR_NODE)
        timeout = self._policy.repair.node_ready_timeout
        state = await self._poll_node(_back_after(boot), timeout)
        if not _back_after(boot)(state):
            machine = await self._describe_machine(boot.provider)
            await self._escalate_current(
                f"node did not come back Ready with a new bootID within {timeout} "
                f"(provider {machine.provider}: {machine.summary}; request: {boot.detail or 'no detail'}; "
                f"node last seen ready={state.ready}, bootID={state.boot_id or 'unknown'}, "
                f"before {boot.boot_id_before})"
            )
        return state, boot

    async def _describe_machine(self, provider: str) -> MachineState:
        try:
            return await self._step(
                Step.DESCRIBE_MACHINE,
                MachineRequest(node=self._node, provider=provider),
                MachineState,
                summary=f"ask {provider} about {self._node}",
                retry=RetryPolicy(maximum_attempts=3),
            )
        except ActivityError as error:
            _reraise_cancellation(error)
            return MachineState(provider=provider, summary=f"state unknown: {_failure(error)}")

    def _health_bar(self, boot: RebootResult) -> HealthBar:
        """What a GPU health report must come after to prove this repair.

        A provider that reboots: a report on another boot than the one the reboot was requested on,
        or written after the request. A person (the manual provider) repairs before approving, so
        before the step that records the repair: a report on another boot than the one quarantine
        found, or written after the node was quarantined. A reboot recorded by a worker from before
        requests were timed has no time: the moment the workflow began repairing stands in for it.
        """
        if not boot.expects_new_boot and self._record is not None:
            return HealthBar(
                boot_id_before=self._record.boot_id,
                after=self._entered_at(Phase.QUARANTINED),
                after_what="the quarantine",
            )
        return HealthBar(
            boot_id_before=boot.boot_id_before,
            after=boot.requested_at or self._entered_at(Phase.REPAIRING),
            after_what="the reboot request",
        )

    def _entered_at(self, phase: Phase) -> datetime | None:
        """When the workflow last entered `phase`, if it did."""
        return next((entry.entered_at for entry in reversed(self._history) if entry.phase is phase), None)

    async def _gpu_problem(self, back: NodeState, bar: HealthBar) -> str | None:
        """None once the node's GPUs report healthy after the repair (the read that saw the node back counts), else why not."""
        timeout = self._policy.repair.verify_timeout
        if not (self._health_bar_from_start or workflow.patched(_REPORTED_AFTER_REPAIR)):
            state = (
                back if back.gpu_healthy is True else await self._poll_node(lambda s: s.gpu_healthy is True, timeout)
            )
            if state.gpu_healthy is True:
                return None
            detail = (
                state.gpu_message
                if state.gpu_healthy is False
                else "the node has no GpuHealthy condition (is the gpuheal agent running on it?)"
            )
            return f"GPUs did not report healthy within {timeout}: {detail}"

        def problem(state: NodeState) -> str | None:
            return gpu_health_problem(state.gpu_report, state.boot_id, bar)

        state = back if problem(back) is None else await self._poll_node(lambda s: problem(s) is None, timeout)
        missing = problem(state)
        return None if missing is None else f"GPUs did not report healthy within {timeout}: {missing}"

    async def _poll_node(self, done: Callable[[NodeState], bool], timeout: timedelta) -> NodeState:
        deadline = workflow.now() + timeout
        interval = self._policy.repair.node_poll_interval
        while True:
            state = await self._observe()
            if done(state) or workflow.now() >= deadline:
                return state
            await workflow.sleep(min(interval, deadline - workflow.now()))

    async def _observe(self) -> NodeState:
        return await self._step(Step.OBSERVE, NodeRef(node=self._node), NodeState, summary=f"read {self._node}")

    # ---- endings -----------------------------------------------------------------------------

    async def _stand_down(self, record: NodeRecord) -> None:
        reason = "the node was uncordoned by someone else; standing down"
        await self._release(record, Outcome.STOOD_DOWN, reason)
        raise _Ended(Phase.CANCELLED, reason)

    async def _escalate(self, record: NodeRecord, reason: str) -> NoReturn:
        await self._release(record, Outcome.ESCALATED, reason)
        raise _Ended(Phase.ESCALATED, reason)

    async def _escalate_current(self, reason: str) -> NoReturn:
        assert self._record is not None
        await self._escalate(self._record, reason)

    async def _release(self, record: NodeRecord, outcome: Outcome, reason: str) -> None:
        await self._step(
            Step.RELEASE,
            ReleaseRequest(
                node=self._node,
                holder=self._holder(),
                outcome=outcome,
                cordoned_before=record.cordoned_before,
                reason=reason,
            ),
            NodeState,
            summary={
                Outcome.RESOLVED: f"uncordon {self._node}",
                Outcome.ESCALATED: f"leave {self._node} cordoned for a person",
                Outcome.STOOD_DOWN: f"remove gpuheal's marks from {self._node}",
            }[outcome],
        )

    def _finish(self, phase: Phase, reason: str) -> None:
        self._reason = reason
        self._enter(phase)

    # ---- helpers -----------------------------------------------------------------------------

    async def _step(
        self,
        step: Step,
        request: BaseModel,
        result_type: type[ResultT],
        *,
        summary: str,
        timeout: timedelta | None = None,
        heartbeat: timedelta | None = None,
        retry: RetryPolicy = _K8S_RETRY,
    ) -> ResultT:
        """Run one step. Short node calls run as local activities, the rest as activities.

        A local activity runs inside the workflow task that asks for it, so quarantine, reads and
        release cost no extra round trip through the server; in a storm of faults that is most of
        the load. Drain passes (which heartbeat) and reboot requests (which must be recorded before
        the next step) stay regular activities. Both kinds are retried, so every step is idempotent.
        """
        if step in _LOCAL_STEPS:
            local: ResultT = await workflow.execute_local_activity(
                step.value,
                request,
                result_type=result_type,
                start_to_close_timeout=self._policy.timeouts.node_call,
                retry_policy=_K8S_RETRY,
                summary=summary,
            )
            return local
        result: ResultT = await workflow.execute_activity(
            step.value,
            request,
            result_type=result_type,
            start_to_close_timeout=timeout or self._policy.timeouts.node_call,
            heartbeat_timeout=heartbeat,
            retry_policy=retry,
            summary=summary,
        )
        return result

    def _decide(self, decision: Decision, *, approved: bool) -> None:
        if self._decision is not None:
            return  # the first decision stands
        self._decision = RecordedDecision(
            approved=approved, approver=decision.approver, reason=decision.reason, at=workflow.now()
        )

    def _enter(self, phase: Phase) -> None:
        self._phase = phase
        self._history.append(PhaseEntry(phase=phase, entered_at=workflow.now()))
        self._publish()

    def _publish(self) -> None:
        """Mirror the state into search attributes and the UI's current details."""
        if not self._history:
            return
        updates: list[SearchAttributeUpdate[Any]] = [
            attrs.NODE.value_set(self._node),
            attrs.PHASE.value_set(self._phase.value),
            attrs.ACTION.value_set(self._action.name),
            attrs.GPUS.value_set(self._gpu_uuids()),
        ]
        xids = [f.xid for f in self._faults if f.xid is not None]
        if xids:
            updates.append(attrs.XID.value_set(xids[-1]))
        workflow.upsert_search_attributes(updates)
        workflow.set_current_details(self._details())

    def _details(self) -> str:
        lines = [
            f"**{self._phase.value}** — node `{self._node}`",
            f"action {self._action.name}; {len(self._faults)} fault(s): {self._fault_summary()}",
        ]
        if self._drain is not None and self._phase is Phase.DRAINING:
            lines.append(
                f"drain: {self._drain.evicted} evicted, {len(self._drain.remaining)} remaining, "
                f"{len(self._drain.blocked)} blocked by a disruption budget"
            )
        if self._phase is Phase.AWAITING_APPROVAL:
            lines.append(f"waiting for `gpuheal approve {self._node} --by NAME` (or reject)")
        if self._repair_log:
            lines.append(f"repair: {'; '.join(self._repair_log)}")
        if self._reason:
            lines.append(f"reason: {self._reason}")
        return "\n\n".join(lines)

    def _fault_summary(self) -> str:
        parts = [
            f"XID {f.xid}" if f.xid is not None else (f.message or f.source or f.action.name) for f in self._faults[-3:]
        ]
        return ", ".join(parts)

    def _gpu_uuids(self) -> list[str]:
        return sorted({uuid for f in self._faults for uuid in f.gpu_uuids})

    def _holder(self) -> str:
        info = workflow.info()
        return f"{info.workflow_id}/{info.run_id}"


def _pod_list(progress: DrainProgress, limit: int = 5) -> str:
    names = [f"{p.namespace}/{p.name}" for p in progress.remaining[:limit]]
    more = len(progress.remaining) - limit
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")


def _failures(progress: DrainProgress, limit: int = 5) -> str:
    """The pods the API server refused for another reason than a budget, with its answer."""
    if not progress.failed:
        return ""
    named = [f"{f.pod.namespace}/{f.pod.name} ({f.error})" for f in progress.failed[:limit]]
    more = len(progress.failed) - limit
    return "; eviction failed for " + ", ".join(named) + (f" and {more} more" if more > 0 else "")


def _back_after(boot: RebootResult) -> Callable[[NodeState], bool]:
    """Whether a read shows the node back from this reboot: Ready, and on a new boot where one is due."""

    def back(state: NodeState) -> bool:
        return state.ready and (not boot.expects_new_boot or state.boot_id != boot.boot_id_before)

    return back


def _reraise_cancellation(error: ActivityError) -> None:
    """An operator's cancel reaches a waiting step as its failure; it must end the run as Cancelled."""
    if isinstance(error.cause, CancelledError):
        raise asyncio.CancelledError() from error


def _refused_for_good(error: ActivityError) -> bool:
    """The provider kept failing, or something failed that no retry can change: a person must look."""
    cause = error.cause
    return isinstance(cause, ApplicationError) and (cause.type == "ProviderError" or cause.non_retryable)


def _failure(error: ActivityError) -> str:
    """The activity's own error message (a provider's, naming the machine and what to do)."""
    cause = error.cause
    return cause.message if isinstance(cause, ApplicationError) else str(cause or error)
