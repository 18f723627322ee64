"""RemediationWorkflow: one node, from a fatal GPU fault back to service.

The workflow runs under the id `remediate-<node>`. Detectors start it with signal-with-start and the
`fault` signal, so a second fault on the same node joins the running remediation instead of starting
another; a joining fault can only raise the action. The workflow then quarantines the node, drains
it, asks a person when the policy or the fault requires one, repairs it, checks that its GPUs report
healthy and puts it back in service. A fault that a GPU reset can fix first asks the node's agent to
reset the GPUs; a reset that fails or cannot be proven falls back to a reboot through the provider
that owns the node (AWS, Azure, GCP, Nebius, Redfish, …), and a reboot only counts once the node is
Ready with a bootID other than the one it had before.

The workflow only carries out decisions: what comes next after each step is a pure function in
gpuheal.domain.decisions, and every step runs through its typed contract (gpuheal.domain.contracts).
Waiting for the node (back from a reboot, a GPU reset answered, GPUs healthy) is one heartbeating
activity, `wait_for_node`, so a long wait writes a handful of events; the drain's backoff and the
approval wait are durable timers. A worker can die at any point and another one carries on where it
stopped. A node deleted mid-way ends the remediation as Failed.

A remediation that escalates is not over: it holds the node cordoned in Escalated (and its fleet
permit, since the node is out of service) and stays open, in the UI's Running list, until a person
resumes it once the hardware is fixed (gpuheal checks the node and puts it back), retries the stage
that escalated, or releases the node as it is: each an Update that records who and why.

gpuheal undoes only what it did: a node that was cordoned before stays cordoned, and when a person
uncordons the node mid-way the workflow stands down and removes its own marks. An operator's cancel
that comes while a step acts on the node (a drain pass, a reboot or termination request) waits for
that step to end before the node is handed back and the permit returned (runs begun under 0.3.0;
contracts.StepContract.acts_on_node): the permit lets no other node out of service while this one's
action is still under way.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

from gpuheal.workflows import metrics, patches
from gpuheal.workflows import search_attributes as attrs
from gpuheal.workflows.run_step import run_step

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from gpuheal.domain import contracts, decisions
    from gpuheal.domain.actions import RecommendedAction
    from gpuheal.domain.contracts import FailureType, StepContract
    from gpuheal.domain.decisions import PROCEED, RESOLVED, RETRY, Next, PersonAction, ResetOutcome, Rung, Verdict
    from gpuheal.domain.faults import Fault
    from gpuheal.domain.fleet import (
        PERMIT_SIGNAL,
        RELEASE_SIGNAL,
        PermitAsked,
        PermitGiveBack,
        PermitGrant,
        PermitRequest,
        PermitReturn,
    )
    from gpuheal.domain.gpu_health import HealthBar
    from gpuheal.domain.history import HistoryRequest, history_query, repeat_offence
    from gpuheal.domain.node_wait import (
        DiagnosticsAnswered,
        GpuCheckAnswered,
        GpuResetAnswered,
        GpusHealthy,
        HoldLifted,
        NodeCondition,
        NodeGone,
        NodeWaitRequest,
        NodeWaitResult,
    )
    from gpuheal.domain.operator import OperatorAction, RecordedAction, recorded
    from gpuheal.domain.phases import Phase
    from gpuheal.domain.policy import MANUAL_PROVIDER, RemediationPolicy, RepairStrategy
    from gpuheal.domain.rehearsal import rehearse
    from gpuheal.domain.remediation import (
        ApprovalSignal,
        NodeRelease,
        PhaseEntry,
        RecordedDecision,
        RemediationInput,
        RemediationStatus,
    )
    from gpuheal.domain.remediation_contract import FAULT_SIGNAL, REMEDIATION
    from gpuheal.domain.steps import (
        DiagnosticsRequest,
        DrainProgress,
        DrainRequest,
        GpuCheckRequest,
        GpuResetRequest,
        MachineRequest,
        MachineState,
        NodeRecord,
        NodeRef,
        NodeState,
        Outcome,
        ProviderNamed,
        QuarantineRequest,
        RebootRequest,
        RebootResult,
        ReleaseRequest,
        ReplaceRequest,
    )
    from gpuheal.domain.ui_text import code, elapsed, phase_checklist, plain

RequestT = TypeVar("RequestT", bound=BaseModel)
ResultT = TypeVar("ResultT", bound=BaseModel)

# Runs started before remediations asked the fleet governor for a permit replay without asking.
_PERMIT_PATCH = "fleet-permit"
# … those started before repeat offenders were looked for, without looking …
_HISTORY_PATCH = "repeat-offenders"
# … those that escalated before escalated runs were held for a person, to their old ending …
_HOLD_PATCH = "escalated-hold"
# … those started before a node's gpuheal.io/hold label was heeded, without reading it …
_NODE_HOLD_PATCH = "node-hold-label"
# … and those started before a fault no provider can fix, joining after the approval step, stopped
# the reboot for a person, by rebooting.
_PERSON_FAULT_PATCH = "person-fault-before-reboot"
# … and those started before a remediation's first ask waited for its permit, with an ask that did not.
_COLLECT_PATCH = "collected-permit"
# … and those started before the read for the hold label and the first ask were one step.
_COLLECT_UNLESS_HELD_PATCH = "collect-unless-held"
# … and those started before the phase's start was published (GpuhealPhaseSince), without it …
_PHASE_SINCE_PATCH = "phase-since"
# Before a round's first reboot, the provider "auto" picks is read, so the step's summary names it (a
# name of its own: "reboot-provider-named" marked a heavier read, dropped before any release).
_PROVIDER_NAMED_PATCH = "reboot-provider-read"
# The patches above came before gpuheal 0.2.0: a run begun under it has them all (gpuheal.workflows.patches).
_FOLDED = patches.Folded(
    {
        patches.RELEASE_0_2_0: (
            _PERMIT_PATCH,
            _HISTORY_PATCH,
            _HOLD_PATCH,
            _NODE_HOLD_PATCH,
            _PERSON_FAULT_PATCH,
            _COLLECT_PATCH,
            _COLLECT_UNLESS_HELD_PATCH,
            _PHASE_SINCE_PATCH,
            _PROVIDER_NAMED_PATCH,
        )
    }
)
# How long a remediation waits for its permit before it asks again.
_ASK_AGAIN = timedelta(minutes=10)
# The escalated wait's timer, as the UI shows it.
_HELD_SUMMARY = "escalated: held for a person (resume, retry or release); the node is read again then"
# How long the workflow waits before running a reboot step again whose attempts ran out on the
# Kubernetes API rather than on the provider.
_STEP_AGAIN = timedelta(minutes=1)


@workflow.defn(name=REMEDIATION.name)
class RemediationWorkflow:
    """Quarantine, drain, repair, verify and release one node."""

    @workflow.init
    def __init__(self, request: RemediationInput) -> None:
        self._node = request.node
        # A run started without a policy reads the worker's first thing (until then, the defaults:
        # nothing reads the policy before that).
        self._policy: RemediationPolicy = request.policy or RemediationPolicy()
        self._policy_version = request.policy_version
        # A dry run's plan: what the remediation would do, step by step.
        self._plan: list[str] = []
        self._faults: list[Fault] = []
        self._seen_event_ids: set[str] = set()
        self._action = RecommendedAction.NONE
        self._phase = Phase.DETECTED
        self._history: list[PhaseEntry] = []
        self._reason = ""
        self._decision: RecordedDecision | None = None
        # Whether the decision was given for a repair the policy leaves to a person (then it says the
        # repair is done) rather than for a reboot: a fault that joins since may ask for the other.
        self._decided_as_person = False
        self._awaiting_decision = False
        self._drain: DrainProgress | None = None
        # When each budget first said it can never allow a disruption, on the passes since.
        self._never_since: dict[str, datetime] = {}
        self._record: NodeRecord | None = None
        self._repair_log: list[str] = []
        # The fleet governor's answer to the permit request, and its permit once granted.
        self._asked: PermitAsked | None = None
        # The first ask, where the read for the hold label made it (`_wait_while_held`).
        self._asked_with_the_read: PermitAsked | None = None
        self._permit: PermitGrant | None = None
        # When the latest fault was detected (a stale one is re-checked before the node is touched).
        self._fault_at: datetime | None = None
        # Escalated: whether the run waits for a person now, what they asked for (until carried out),
        # and all they did.
        self._held_for_person = False
        self._asked_of_us: RecordedAction | None = None
        self._keep_cordoned = False
        self._actions: list[RecordedAction] = []
        # Which newer behaviours this run has (patches decided in its first activation: asked later,
        # right after a local activity's result, a query that splits that task makes replay ask early).
        self._holds_for_person = False
        self._heeds_hold_label = False
        self._looks_for_offences = False
        self._asks_for_permit = False
        self._asks_for_person_faults = False
        self._stamps_phase_since = False
        # The phase whose start GpuhealPhaseSince holds.
        self._stamped_phase: Phase | None = None
        # The search attributes as upserted (once per activation in runs begun under 0.2.0, once per
        # workflow task under 0.3.0).
        self._published = attrs.Published()
        # The permit goes back by a local step (runs begun under 0.3.0), not by a signal of the workflow's own.
        self._returns_by_step = False
        # Resolved by a GPU reset: an ending that reads the faults after its last step
        # (_return_permit_shielded says why its permit goes back by a signal).
        self._resolved_by_reset = False
        # A cancel waits for a step that acts on the node to end (runs begun under 0.3.0), where older
        # runs handed the node back at once.
        self._waits_out_steps = False
        # What the run waits on now (a step's or a timer's summary), for the UI's current details.
        self._now = ""
        # The provider that took this round's latest reboot request, as its step answered ("": none yet).
        self._rebooted_via = ""
        # The provider and machine read before this round's first reboot (patch reboot-provider-read).
        self._named = ProviderNamed()
        # How many repairs (GPU resets, reboots) the run asked for: runs without any are no offence.
        self._repairs = 0
        # The GPU checks ordered so far (each is a new order).
        self._checks = 0
        # Decided to replace the machine (known faulty), and why the machine was terminated ("": not).
        self._condemned = False
        self._terminated = ""
        # The boot of the machine terminated: the node on another boot is a new machine under its name.
        self._terminated_boot = ""
        # Where the diagnostics bundles collected before reboots are.
        self._bundles: list[str] = []
        # How often the run escalated, whether the latest escalation was an approval's (a rejection,
        # nobody deciding), and the round of the repair (a person's retry starts a new one).
        self._escalations = 0
        self._approval_escalated = False
        self._round = 0

    # ---- signals and query -------------------------------------------------------------------

    @workflow.signal(name=FAULT_SIGNAL.name)
    def fault(self, fault: Fault) -> None:
        """A fault on this node; joins the remediation and may raise its action."""
        if fault.event_id and fault.event_id in self._seen_event_ids:
            return
        if fault.event_id:
            self._seen_event_ids.add(fault.event_id)
        if not fault.action.is_actionable:
            return
        self._faults.append(fault)
        now = workflow.now()
        self._fault_at = min(fault.detected_at, now) if fault.detected_at is not None else now
        raised = self._action.escalate(fault.action)
        if raised is not self._action:
            self._action = raised
            if self._history:
                self._log("action raised to %s by a new fault", raised.name)
        self._publish()

    @workflow.signal(name=PERMIT_SIGNAL.name)
    def permit(self, grant: PermitGrant) -> None:
        """The fleet governor grants this run its permit: the node may be taken out of service."""
        if grant.permit_id == self._holder() and self._permit is None:
            self._permit = grant
            self._publish()

    @workflow.signal(name="approve")
    def approve(self, decision: ApprovalSignal) -> None:
        """An operator approves the repair (kept for callers of the signal; the first decision stands)."""
        self._decide(decision, approved=True)

    @workflow.signal(name="reject")
    def reject(self, decision: ApprovalSignal) -> None:
        """An operator rejects the repair; the node stays cordoned for a person."""
        self._decide(decision, approved=False)

    @workflow.update(name="approve")
    def approve_now(self, decision: ApprovalSignal) -> RecordedDecision:
        """An operator approves the repair (`gpuheal approve NODE --by NAME --reason WHY`) and gets the
        recorded decision back, or at once the reason it was refused."""
        return self._decide(decision, approved=True)

    @approve_now.validator
    def _check_approval(self, decision: ApprovalSignal) -> None:
        decisions.check_decision(
            self._awaiting_decision, self._phase, self._decision, decision.approver, decision.reason
        )

    @workflow.update(name="reject")
    def reject_now(self, decision: ApprovalSignal) -> RecordedDecision:
        """An operator rejects the repair (`gpuheal reject NODE --by NAME --reason WHY`); the node stays
        cordoned for a person."""
        return self._decide(decision, approved=False)

    @reject_now.validator
    def _check_rejection(self, decision: ApprovalSignal) -> None:
        decisions.check_decision(
            self._awaiting_decision, self._phase, self._decision, decision.approver, decision.reason
        )

    @workflow.update(name=PersonAction.RESUME.value)
    def resume(self, action: OperatorAction) -> RecordedAction:
        """The hardware of the escalated node is fixed (`gpuheal resume NODE --by NAME --reason WHY`):
        gpuheal checks that the node is Ready with healthy GPUs and puts it back in service."""
        return self._take(PersonAction.RESUME, action)

    @resume.validator
    def _check_resume(self, action: OperatorAction) -> None:
        self._check_person_action(action)

    @workflow.update(name=PersonAction.RETRY.value)
    def retry(self, action: OperatorAction) -> RecordedAction:
        """Run the stage that escalated again (`gpuheal retry NODE …`): the drain, or the repair; a
        retry of a repair nobody approved is the person's approval."""
        return self._take(PersonAction.RETRY, action)

    @retry.validator
    def _check_retry(self, action: OperatorAction) -> None:
        self._check_person_action(action)

    @workflow.update(name=PersonAction.RELEASE.value)
    def release(self, action: NodeRelease) -> RecordedAction:
        """Let go of the escalated node as it is, unrepaired (`gpuheal release NODE …`): back to
        service, or left cordoned with `keep_cordoned`."""
        self._keep_cordoned = action.keep_cordoned
        return self._take(PersonAction.RELEASE, action)

    @release.validator
    def _check_release(self, action: NodeRelease) -> None:
        self._check_person_action(action)

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
            actions=list(self._actions),
            permit=self._permit,
            drain=self._drain,
            repair=list(self._repair_log),
            history=list(self._history),
            policy_version=self._policy_version,
            plan=list(self._plan),
            diagnostics=list(self._bundles),
        )

    # ---- the run -----------------------------------------------------------------------------

    @workflow.run
    async def run(self, request: RemediationInput) -> RemediationStatus:
        # Asked first (gpuheal.workflows.patches): runs begun under 0.2.0 or later upsert once per
        # activation, those begun under 0.3.0 or later once per workflow task, give their permit back
        # by a local step and, cancelled, wait for a step that acts on the node to end.
        under_0_3_0 = patches.since(patches.RELEASE_0_3_0)
        self._published.begin(batched=patches.since(patches.RELEASE_0_2_0), across_local_steps=under_0_3_0)
        self._returns_by_step = self._waits_out_steps = under_0_3_0
        self._holds_for_person = _FOLDED.patched(_HOLD_PATCH)
        self._heeds_hold_label = _FOLDED.patched(_NODE_HOLD_PATCH)
        self._looks_for_offences = _FOLDED.patched(_HISTORY_PATCH)
        self._asks_for_person_faults = _FOLDED.patched(_PERSON_FAULT_PATCH)
        self._collects_permit = _FOLDED.patched(_COLLECT_PATCH)
        self._collects_unless_held = _FOLDED.patched(_COLLECT_UNLESS_HELD_PATCH)
        self._stamps_phase_since = _FOLDED.patched(_PHASE_SINCE_PATCH)
        self._names_provider = _FOLDED.patched(_PROVIDER_NAMED_PATCH)
        # The first fault is delivered with the start (signal-with-start).
        await workflow.wait_condition(lambda: bool(self._faults))
        self._enter(Phase.DETECTED)
        # Asked where runs before the hold label asked it (first in _await_permit), still in the first
        # activation: after a local activity's result, a query that splits the task makes replay ask early.
        self._asks_for_permit = _FOLDED.patched(_PERMIT_PATCH)
        if request.policy is None:
            snapshot = await self._run(
                contracts.CURRENT_POLICY, NodeRef(node=self._node), summary="the worker's policy"
            )
            self._policy, self._policy_version = snapshot.policy, snapshot.version
            self._publish()
        try:
            try:
                verdict = await (self._rehearse() if self._policy.dry_run else self._remediate())
                if verdict.release is not None:
                    await self._release(verdict.release, verdict.reason)
                self._finish(verdict.phase, verdict.reason)
            except ActivityError as error:
                # A step failed for good (a non-retryable error): leave the node as it is for a person.
                gone = _failure_type(error) is FailureType.NODE_GONE
                self._finish(
                    Phase.FAILED,
                    decisions.node_deleted(self._node).reason if gone else f"{error.message}: {error.cause}",
                )
            except asyncio.CancelledError:
                # An operator cancelled the remediation: hand the node back as gpuheal found it, unless
                # it was escalated (known faulty): then it stays cordoned for a person.
                kept = self._escalations > 0 or self._condemned
                if self._record is not None:
                    await self._release(Outcome.STOOD_DOWN if kept else Outcome.RESOLVED, "")
                self._finish(
                    Phase.CANCELLED,
                    f"cancelled by an operator {'after it escalated' if self._escalations else 'after its repair did not hold'}"
                    "; gpuheal's marks were removed and the node stays cordoned"
                    if kept
                    else "cancelled by an operator; the node was handed back as gpuheal found it",
                )
        except Exception:
            # A failure the run ends on (a release that failed after a cancel) still gives the permit back.
            # (Not `finally`: a run evicted from the worker's cache must not await on its way out.)
            await self._return_permit_shielded()
            raise
        await self._return_permit_shielded()
        return self.status()

    async def _remediate(self) -> Verdict:
        """Carry the stages out one after the other until one ends the remediation; a stage that
        escalates holds the node for a person, who may have it run again."""
        stages = (
            self._wait_while_held,
            self._await_permit,
            self._quarantine,
            self._drain_node,
            self._look_for_repeat_offence,
            self._approval,
            self._repair,
        )
        for stage in stages:
            verdict = await self._replaced_if_asked(await stage())
            while verdict.next is Next.ESCALATE and self._holds_for_person:
                verdict = await self._held_for_a_person(verdict)
                if verdict.next is Next.RETRY:
                    # The person's retry is their decision: a repeat offence or an approval is not asked again.
                    decided = stage in (self._look_for_repeat_offence, self._approval)
                    verdict = PROCEED if decided else await self._replaced_if_asked(await stage())
            if verdict.ends:
                return verdict
        return RESOLVED

    async def _rehearse(self) -> Verdict:
        """A dry run: read the node and its pods, say what each stage would do (status' plan), and do
        none of it: no write to the cluster, no provider call, no permit."""
        survey = await self._run(
            contracts.SURVEY,
            MachineRequest(node=self._node, provider=self._policy.repair.provider_for(self._action)),
            summary=f"dry run: read {self._node}, its pods and its provider",
        )
        offence = await self._look_for_repeat_offence()
        self._plan = rehearse(
            survey,
            self._policy,
            self._action,
            self._gpu_uuids(),
            offence.reason if offence.next in (Next.ESCALATE, Next.REPLACE) else "",
        )
        return Verdict(Next.REHEARSED, f"dry run: nothing was done; the plan has {len(self._plan)} step(s)")

    async def _held_for_a_person(self, escalation: Verdict) -> Verdict:
        """Keep the node cordoned in Escalated, the run open (and its permit held), until a person
        resumes, retries or releases it; a node deleted or uncordoned meanwhile ends it."""
        first: tuple[str, datetime] | None = None
        while True:
            state = await self._release(Outcome.ESCALATED, escalation.reason)
            self._finish(Phase.ESCALATED, escalation.reason)
            self._escalations += 1
            # What a resume is checked against: the boot and the moment the node first escalated on.
            first = first or (state.boot_id, workflow.now())
            asked = await self._wait_for_person(state)
            if isinstance(asked, Verdict):
                if self._terminated and asked.next is Next.FAIL:
                    # The node of the machine terminated earlier went at last: that was the replacement.
                    return decisions.replaced_late(self._terminated)
                return asked
            self._reason = ""
            if asked.action != PersonAction.RELEASE:  # gpuheal works on the node again: no stale reason on it
                await self._release(Outcome.TAKEN_BACK, "")
            match PersonAction(asked.action):
                case PersonAction.RELEASE:
                    return decisions.released(asked, self._keep_cordoned)
                case PersonAction.RETRY:
                    self._retry(asked)
                    return RETRY
                case PersonAction.RESUME:
                    escalation = await self._check_resumed(asked, *first)
                    if escalation.next is not Next.ESCALATE:
                        return escalation

    async def _wait_for_person(self, state: NodeState) -> RecordedAction | Verdict:
        """The person's action, or how the run ends when the node is deleted or uncordoned first (an
        action that arrives while the node is read wins)."""
        self._asked_of_us = None
        self._held_for_person = True
        held = decisions.still_held(state)
        while self._asked_of_us is None and not held.ends:
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: self._asked_of_us is not None,
                    timeout=self._policy.repair.escalated_recheck,
                    timeout_summary=self._waiting_on(_HELD_SUMMARY),
                )
            if self._asked_of_us is None:
                held = decisions.still_held(await self._observe())
        self._held_for_person = False
        return self._asked_of_us or held

    def _retry(self, asked: RecordedAction) -> None:
        """A new round of the stage that escalated; the person's answer to an approval that escalated
        (a rejection, nobody deciding) is their approval."""
        self._round += 1
        self._repair_log.append(f"retried by {asked.by}: {asked.reason}")
        if self._approval_escalated:
            self._approval_escalated = False
            if self._decision is not None and not self._decision.approved:
                self._repair_log.append(
                    f"{asked.by}'s retry overrides the rejection by {self._decision.approver}: {self._decision.reason}"
                )
            self._decision = RecordedDecision(
                approved=True, approver=asked.by, reason=f"retried: {asked.reason}", at=asked.at
            )
            self._decided_as_person = self._left_to_a_person()

    async def _check_resumed(self, resume: RecordedAction, boot_id: str, escalated_at: datetime) -> Verdict:
        """Resolve a node a person fixed once it is Ready and its GPUs report healthy since it escalated."""
        self._enter(Phase.VERIFYING)
        repair = self._policy.repair
        ready, healthy = decisions.resume_checks(boot_id, escalated_at, resume)
        for condition, timeout in ((ready, repair.node_ready_timeout), (healthy, repair.verify_timeout)):
            waited = await self._wait_for(condition, timeout)
            verdict = decisions.after_resume_check(resume, condition, waited.state, timeout)
            if verdict.next is not Next.PROCEED:
                return verdict
        checked = await self._validated(decisions.resumed(resume))
        # The person who resumed is at hand: a node failing its check goes back to them, not replaced.
        return decisions.escalate(checked.reason) if checked.next is Next.REPLACE else checked

    async def _wait_while_held(self) -> Verdict:
        """Wait in OnHold, the node untouched and no permit asked for, while it is labelled
        gpuheal.io/hold=true; one watch of the node at a time, each up to `repair.hold_watch`."""
        if not self._heeds_hold_label:
            return PROCEED
        if self._collects_unless_held and self._asks_for_permit:
            # The read that looks for the label asks for the permit where there is none (in a storm,
            # one step fewer before quarantine); `_await_permit` goes on from that ask.
            asked = await self._ask_for_permit(contracts.COLLECT_UNLESS_HELD)
            if not asked.held:
                self._asked = self._asked_with_the_read = asked
                return PROCEED
            exists, held = True, True
        else:
            state = await self._observe()
            exists, held = state.exists, state.held
        while exists and held:
            if self._phase is not Phase.ON_HOLD:
                self._enter(Phase.ON_HOLD)
            state = (await self._wait_for(HoldLifted(), self._policy.repair.hold_watch)).state
            exists, held = state.exists, state.held
        return PROCEED if exists else decisions.node_deleted(self._node)

    async def _await_permit(self) -> Verdict:
        """Wait in AwaitingBudget for the fleet governor's permit, the node untouched; a fault that
        waited long for it is checked against the node first (it may have recovered meanwhile)."""
        if not self._asks_for_permit:
            return PROCEED  # a run that had passed this point before remediations asked for permits
        # The first ask waits a moment for the grant and brings it back: in a storm the node is then
        # quarantined in the workflow task that asked, without another for the governor's signal.
        ask = contracts.COLLECT_PERMIT if self._collects_permit else contracts.ASK_PERMIT
        first, self._asked_with_the_read = self._asked_with_the_read, None
        while True:
            self._asked = first or await self._ask_for_permit(ask)
            first = None
            if self._asked.grant is not None:
                self.permit(self._asked.grant)
            if not self._asked.governed or self._permit is not None:
                break
            if ask is contracts.COLLECT_PERMIT:
                ask = contracts.ASK_PERMIT  # its moment passed: asked again at once, to be signalled
                continue
            if self._phase is not Phase.AWAITING_BUDGET:
                self._enter(Phase.AWAITING_BUDGET)
            # Asked again now and then: a governor that was terminated or reset lost the request (the
            # governor keeps requests by id, so asking twice is harmless).
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: self._permit is not None,
                    timeout=_ASK_AGAIN,
                    timeout_summary=self._waiting_on(
                        f"a permit from {self._asked.governor_id}; asked again after {elapsed(_ASK_AGAIN)}"
                    ),
                )
            if self._permit is not None:
                break
        if not self._asked.governed:
            return PROCEED
        assert self._permit is not None and self._fault_at is not None
        if not decisions.needs_recheck(self._permit, self._fault_at):
            return PROCEED
        return decisions.after_stale_recheck(self._asked, self._fault_at, await self._observe())

    async def _ask_for_permit(self, ask: StepContract[PermitRequest, PermitAsked]) -> PermitAsked:
        info = workflow.info()
        waits = {
            contracts.COLLECT_PERMIT: " and wait a moment for it",
            contracts.COLLECT_UNLESS_HELD: " unless the node is on hold, and wait a moment for it",
        }.get(ask, "")
        return await self._run(
            ask,
            PermitRequest(
                permit_id=self._holder(),
                workflow_id=info.workflow_id,
                run_id=info.run_id,
                node=self._node,
                asked_at=workflow.now(),
            ),
            summary=f"ask the fleet governor for a permit{waits}",
        )

    async def _return_permit_shielded(self) -> None:
        """Give the permit back even when an operator's cancel arrives meanwhile (in a run ending
        otherwise; the server takes one cancel per run). The run's last commands: the search
        attributes it set go out before them.

        The permit's safety rests on this: nothing that arrives in the run's last task can send it
        back to acting on the node. Its ending is decided, and the node handed back, before the
        permit goes; from here the run only returns it and ends (a signal only records its fault, the
        Updates are refused outside their waits, a cancel only changes how the run ends). A
        completion the server rejects because a signal or cancel came meanwhile is retried in a new
        task that replays to here and runs the release and this step again (both idempotent): it must
        end the same way. So add no wait after the ending is decided that a signal, an Update or a
        cancel could turn into another step (CONTRIBUTING.md, Changing workflow code).

        One ending reads the faults after its last step: a GPU reset's, which a fault needing more
        than a reset turns into a reboot. A retried task brings such a fault in one activation with
        that step's result, and the SDK runs signal handlers first: the local step would have given
        the permit back in the rejected task, and the retry would reboot the node without it. So a
        run resolved by a reset gives its permit back by a signal (`_permit_by_step`), whose answer
        the run waits for in a task of its own: its last task is no longer the one that decided.
        """
        self._published.flush()
        returning = asyncio.ensure_future(self._return_permit())
        if not self._permit_by_step():
            await asyncio.shield(returning)
            return
        # A local step that outlives the workflow task is heartbeated, and a cancel can come in the
        # next task: the run waits for the step all the same (ended under it, the run would have
        # sdk-core cancel the step, its permit kept until the governor's next check), then ends as
        # cancelled. The step's attempts are few (contracts.RETURN_PERMIT), so the wait is short.
        cancelled = False
        while not returning.done():
            try:
                await asyncio.shield(returning)
            except asyncio.CancelledError:
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError()

    def _permit_by_step(self) -> bool:
        """Whether the permit goes back by the local step (runs begun under 0.3.0, in the task that
        ends the run), not by a signal: not after a GPU reset's ending (_return_permit_shielded)."""
        return self._returns_by_step and not self._resolved_by_reset

    async def _return_permit(self) -> None:
        """Give the permit back (or withdraw the request) whatever the ending; a governor that is gone
        has nothing to take back."""
        if self._asked is None or not self._asked.governed:
            return
        governor_id = self._asked.governor_id
        returned = PermitReturn(permit_id=self._holder(), outcome=self._phase.value)
        if self._permit_by_step():
            # Done within the task that ended the run, which then completes in it.
            try:
                given = await self._run(
                    contracts.RETURN_PERMIT,
                    PermitGiveBack(governor_id=governor_id, returned=returned),
                    summary=f"give the permit back to {governor_id}",
                )
            except ActivityError as error:
                # Refused for good, or its attempts ran out: the run ends all the same, as one whose
                # signal failed did (0.2.0). The governor's holder check takes back the permit of a
                # run that is no longer running (GovernorWorkflow._reclaim, every reclaim_every).
                self._log(
                    "permit not returned to governor %s (%s): reclaimed once the run has ended",
                    governor_id,
                    _failure(error),
                )
                return
            if not given.governor_found:
                self._log("permit not returned: governor %s is gone", governor_id)
            return
        try:
            await workflow.get_external_workflow_handle(governor_id).signal(RELEASE_SIGNAL.name, returned)
        except FailureError as error:
            self._log("permit not returned: governor %s is gone (%s)", governor_id, error)

    async def _quarantine(self) -> Verdict:
        record = await self._run(
            contracts.QUARANTINE,
            QuarantineRequest(node=self._node, holder=self._holder(), reason=self._fault_summary()),
            summary=f"cordon + taint {self._node}",
        )
        verdict = decisions.after_quarantine(record)
        if not verdict.ends:
            self._record = record
            self._enter(Phase.QUARANTINED)
        return verdict

    async def _drain_node(self) -> Verdict:
        """Drain pass after drain pass, with a durable backoff between them, until the node is empty."""
        self._enter(Phase.DRAINING)
        policy = self._policy.drain
        started = workflow.now()
        backoff = policy.retry_initial
        while True:
            progress = await self._run(
                contracts.DRAIN,
                DrainRequest(
                    node=self._node,
                    holder=self._holder(),
                    policy=policy,
                    delete_overdue=workflow.now() - started >= policy.delete_after,
                ),
                summary=f"drain pass on {self._node}",
            )
            self._drain = progress
            verdict = decisions.after_drain_pass(
                progress, policy, workflow.now() - started, self._held_for_good(progress), backoff
            )
            if verdict.next is not Next.AGAIN:
                if not verdict.ends:
                    self._enter(Phase.DRAINED)
                return verdict
            await workflow.sleep(verdict.pause, summary=self._waiting_on(verdict.reason))
            backoff = decisions.next_backoff(progress, policy, backoff)

    def _held_for_good(self, progress: DrainProgress) -> str:
        """Why the drain can never finish, or "" (see decisions.held_for_good); remembers since when."""
        now = workflow.now()
        current = decisions.budgets_never_allowing(progress)
        self._never_since = {ref: self._never_since.get(ref, now) for ref in current}
        return decisions.held_for_good(current, self._never_since, now, self._policy.drain.never_allows_for)

    async def _look_for_repeat_offence(self) -> Verdict:
        """Escalate instead of repairing again a node or GPU whose earlier remediations did not hold."""
        loops = self._policy.loops
        if loops.looks_back <= timedelta(0) or not self._looks_for_offences:
            return PROCEED
        assert self._fault_at is not None
        request = HistoryRequest(
            node=self._node,
            gpus=tuple(self._gpu_uuids()),
            serials=tuple(self._gpu_serials()),
            since=self._fault_at - loops.looks_back,
            run_id=workflow.info().run_id,
        )
        if history_query(request, REMEDIATION.name) is None:
            return PROCEED  # nothing a query can name (see gpuheal.domain.history)
        try:
            history = await self._run(contracts.FIND_HISTORY, request, summary=f"earlier remediations of {self._node}")
        except ActivityError as error:
            self._repair_log.append(
                f"repeat offences not looked for: the history could not be read ({_failure(error)})"
            )
            return PROCEED
        offence = repeat_offence(loops, self._node, request.gpus, request.serials, history, self._fault_at)
        return decisions.beyond_repair(self._policy.repair, self._action, offence) if offence else PROCEED

    async def _approval(self) -> Verdict:
        """Wait for a person's decision where one is needed; the node may be handed back meanwhile."""
        labels = self._record.labels if self._record is not None else {}
        if not decisions.needs_approval(self._policy.repair, self._action, labels):
            return PROCEED
        return await self._ask_person()

    async def _ask_person(self, *, policy_may_approve: bool = True) -> Verdict:
        """Wait in AwaitingApproval for a decision (or the policy's own, unless `policy_may_approve`
        is False: a termination waits for a person the whole timeout), and say whether to go on."""
        self._enter(Phase.AWAITING_APPROVAL)
        repair = self._policy.repair
        first_wait = decisions.approval_wait(repair, self._action) if policy_may_approve else repair.approval_timeout
        # The Updates take a decision only while this wait lasts, not while its outcome is carried out.
        self._awaiting_decision = True
        # A wait that times out leaves no decision: the policy may approve then, else the rule escalates.
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: self._decision is not None,
                timeout=first_wait,
                timeout_summary=self._waiting_on(f"a person's approval or rejection, for up to {elapsed(first_wait)}"),
            )
        if self._decision is None and policy_may_approve:
            self._decision = decisions.auto_approval(repair, self._action, workflow.now())
            self._decided_as_person = self._left_to_a_person()
        if self._decision is None and first_wait < repair.approval_timeout:
            # A fault only a person can fix arrived meanwhile: it waits for a person the whole timeout.
            rest = repair.approval_timeout - first_wait
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: self._decision is not None,
                    timeout=rest,
                    timeout_summary=self._waiting_on(
                        f"a person's approval or rejection (a fault only a person can fix), for up to {elapsed(rest)} more"
                    ),
                )
        self._awaiting_decision = False
        verdict = decisions.after_approval_wait(self._decision, repair.approval_timeout)
        if verdict.ends:
            self._approval_escalated = True
            return verdict
        return decisions.still_held(await self._observe())

    async def _validated(self, verdict: Verdict) -> Verdict:
        """A node repaired (`verdict` resolves it) passes the policy's GPU check before it goes back:
        the node's agent runs it on order, and a node that fails stays out of service."""
        validation = self._policy.validation
        if verdict.next is not Next.RESOLVE or not validation.level:
            return verdict
        self._enter(Phase.VALIDATING)
        order = await self._run(
            contracts.CHECK_GPUS,
            GpuCheckRequest(
                node=self._node, holder=self._holder(), round=self._round, level=validation.level, check=self._checks
            ),
            summary=f"level {validation.level} GPU check on {self._node}",
        )
        self._checks += 1
        answer = await self._wait_for(GpuCheckAnswered(order_id=order.id), validation.timeout)
        report = answer.state.gpu_check
        if answer.reached and report is not None:
            self._repair_log.append(f"GPU check ({report.tool or 'agent'}, level {order.level}): {report.detail}")
        checked = decisions.after_gpu_check(answer, validation, self._policy.repair, self._action)
        return verdict if checked.next is Next.RESOLVE else checked

    async def _repair(self) -> Verdict:
        """Climb the repair ladder (gpuheal.domain.decisions.Rung) until the node is repaired (and has
        passed the policy's GPU check) or a person must look. A machine terminated already is not
        repaired again (a person's retry): its replacement is followed once more."""
        if self._terminated:
            return Verdict(Next.REPLACE, self._terminated)
        # A round of its own: a person's retry may be rebooted by another provider.
        self._rebooted_via = ""
        self._named = ProviderNamed()
        repair = self._policy.repair
        rung = decisions.first_rung(self._action, repair, self._gpu_uuids())
        boot: RebootResult | None = None
        state: NodeState | None = None
        after_reset = False
        # The provider of this round's reboot requests, chosen at the first: a forced restart after a
        # graceful one goes where the graceful one went.
        provider = ""
        while True:
            match rung:
                case Rung.RESET_GPUS:
                    reset = await self._reset_gpus()
                    metrics.gpu_reset(reset)
                    rung = decisions.after_reset(reset, repair)
                    if rung in (Rung.REBOOT, Rung.REBOOT_GRACEFULLY):
                        await self._withdraw_gpu_reset()
                        after_reset = True
                case Rung.REBOOT_GRACEFULLY | Rung.REBOOT:
                    if not provider and decisions.reboot_needs_approval(
                        repair,
                        self._action,
                        after_reset,
                        self._decision,
                        self._decided_as_person,
                        asks_for_person_faults=self._asks_for_person_faults,
                    ):
                        # A reset that did not repair falls back to a reboot the policy has a person
                        # approve; an approval given for another kind of repair is asked for again.
                        if self._decision is not None:
                            self._repair_log.append(
                                f"the approval by {self._decision.approver} was for "
                                f"{'a repair by a person' if self._decided_as_person else 'a reboot'}; "
                                f"{self._action.name} now asks for the other: asked again"
                            )
                            self._decision = None
                        asked = await self._ask_person()
                        if asked.ends:
                            return asked
                    if not provider:
                        provider = repair.provider_for(self._action)
                        await self._collect_diagnostics(provider)
                        if self._names_provider:
                            self._named = await self._name_provider(provider)
                    requested = await self._request_reboot(provider, graceful=rung is Rung.REBOOT_GRACEFULLY)
                    if isinstance(requested, Verdict):
                        return requested
                    boot = requested
                    rung = decisions.after_reboot_request(rung, boot)
                case Rung.AWAIT_GRACEFUL:
                    assert boot is not None and repair.graceful_timeout is not None
                    state = await self._wait_for_node(boot, repair.graceful_timeout)
                    rung = decisions.after_graceful_wait(boot, state)
                    if rung is Rung.REBOOT:
                        self._log(
                            "%s did not restart gracefully within %s; forcing it",
                            self._node,
                            repair.graceful_timeout,
                        )
                case Rung.AWAIT_NODE:
                    assert boot is not None
                    state = await self._wait_for_node(boot, repair.node_ready_timeout)
                    rung = decisions.after_node_wait(boot, state)
                case Rung.VERIFY:
                    assert boot is not None and state is not None
                    self._enter(Phase.VERIFYING)
                    verified = await self._verify(state, self._health_bar(boot))
                    if verified.next is Next.ESCALATE:
                        return decisions.beyond_repair(repair, self._action, verified.reason)
                    return await self._validated(verified)
                case Rung.ESCALATE:
                    assert boot is not None and state is not None
                    return decisions.beyond_repair(repair, self._action, await self._not_back(boot, state))
                case Rung.GONE:
                    return decisions.node_deleted(self._node)
                case Rung.DONE:
                    return RESOLVED

    async def _replaced_if_asked(self, verdict: Verdict) -> Verdict:
        """Carry out a verdict to replace the machine; any other verdict as it is."""
        return await self._replace(verdict.reason) if verdict.next is Next.REPLACE else verdict

    async def _replace(self, why: str) -> Verdict:
        """Have the provider terminate the machine the repair did not fix (its group launches
        another), and end once its node object is gone; a provider that cannot, or a node that
        stays, goes to a person with `why`. Where the policy has a person approve this node's
        repairs, they approve the termination too: an approval of a repair is not one of this."""
        # Known faulty from here: a cancel leaves the node cordoned.
        self._condemned = True
        if not self._terminated:  # a termination asked for again was approved the first time
            refused = await self._approve_termination(why)
            if refused is not None:
                return refused
        self._enter(Phase.REPLACING)
        provider = self._policy.repair.provider_for(self._action)
        self._repair_log.append(f"replacing the machine: {why}")
        try:
            terminated = await self._run(
                contracts.REPLACE,
                ReplaceRequest(
                    node=self._node,
                    holder=self._holder(),
                    round=self._round,
                    provider=provider,
                    boot_id=self._terminated_boot,
                ),
                summary=f"terminate the machine of {self._node} via {provider}",
            )
        except ActivityError as error:
            return decisions.could_not_replace(why, _failure(error))
        self._terminated = why
        self._terminated_boot = self._terminated_boot or terminated.boot_id
        self._repair_log.append(f"machine terminated via {terminated.provider}: {terminated.summary}")
        timeout = self._policy.repair.replace_timeout
        gone = await self._wait_for(NodeGone(boot_id_before=self._terminated_boot), timeout)
        return decisions.after_replacement(why, terminated.summary, gone, timeout)

    async def _approve_termination(self, why: str) -> Verdict | None:
        """Where the policy has a person approve this node's repairs, wait for one to approve the
        termination (never the policy's own approval); the verdict that ends the wait otherwise."""
        labels = self._record.labels if self._record is not None else {}
        if not decisions.needs_approval(self._policy.repair, self._action, labels):
            return None
        self._repair_log.append(f"terminating the machine waits for a person's approval: {why}")
        if self._decision is not None:
            self._repair_log.append(f"the approval by {self._decision.approver} was for the repair")
            self._decision = None
        # What an approval now decides, in the status and the UI.
        self._reason = f"an approval terminates the machine (repair.replace): {why}"
        asked = await self._ask_person(policy_may_approve=False)
        self._reason = ""
        return asked if asked.ends else None

    async def _collect_diagnostics(self, provider: str) -> None:
        """Before the round's first reboot, have the node's agent keep a diagnostics bundle (policy
        diagnostics.collect); the reboot goes ahead whatever the answer, and the repair log says it."""
        collect = self._policy.diagnostics
        if not collect.collect or provider == MANUAL_PROVIDER:  # a person's repair reboots nothing of ours
            return
        order = await self._run(
            contracts.COLLECT_DIAGNOSTICS,
            DiagnosticsRequest(node=self._node, holder=self._holder(), round=self._round, reason=self._fault_summary()),
            summary=f"collect a diagnostics bundle on {self._node}",
        )
        answer = await self._wait_for(DiagnosticsAnswered(order_id=order.id), collect.timeout)
        bundle = answer.state.diagnostics
        self._repair_log.append(decisions.diagnostics_line(answer, collect.timeout))
        if answer.reached and bundle is not None and bundle.ok:
            self._bundles.append(bundle.location)

    async def _reset_gpus(self) -> ResetOutcome:
        """Have the node's agent reset the faulty GPUs, and tell how it went (in the repair log too)."""
        self._enter(Phase.REPAIRING)
        repair = self._policy.repair
        gpus = self._gpu_uuids()
        self._count_repair()
        order = await self._run(
            contracts.RESET_GPUS,
            GpuResetRequest(node=self._node, holder=self._holder(), round=self._round, gpus=gpus),
            summary=f"reset {', '.join(gpus)} on {self._node}",
        )
        answer = await self._wait_for(GpuResetAnswered(order_id=order.id), repair.gpu_reset_timeout)
        report = answer.state.gpu_reset
        if answer.deleted:
            return ResetOutcome.NODE_DELETED
        if report is None or not answer.reached:
            return self._reset_failed(
                ResetOutcome.UNANSWERED, f"the node's agent did not answer within {repair.gpu_reset_timeout}"
            )
        if not report.ok:
            return self._reset_failed(ResetOutcome.FAILED, report.detail)
        self._repair_log.append(f"GPU reset: {report.detail}")
        if self._repaired_by_reset():
            self._enter(Phase.VERIFYING)
            bar = HealthBar(after=report.at, after_what="the GPU reset's answer")
            verified = await self._verify(answer.state, bar)
            if verified.next is Next.FAIL:
                return ResetOutcome.NODE_DELETED
            if verified.ends and verified.next is not Next.RESOLVE:
                return self._reset_failed(ResetOutcome.UNHEALTHY, verified.reason)
            # A fault needing more than a reset may also arrive while the GPUs are verified.
            if self._repaired_by_reset():
                # A reset whose GPUs then fail the policy's check (or prove nothing) falls back to a reboot.
                checked = await self._validated(RESOLVED)
                if checked.next is Next.FAIL:
                    return ResetOutcome.NODE_DELETED
                if checked.next is not Next.RESOLVE:
                    return self._reset_failed(ResetOutcome.UNHEALTHY, checked.reason)
                # A fault needing more than a reset may also arrive while the GPUs are checked.
                if self._repaired_by_reset():
                    self._resolved_by_reset = True
                    return ResetOutcome.REPAIRED
        self._repair_log.append(f"a fault needing {self._action.name} arrived during the reset; rebooting")
        return ResetOutcome.OUTGROWN

    def _left_to_a_person(self) -> bool:
        """Whether the policy leaves the repair of the faults as they stand to a person."""
        return self._policy.repair.strategy_for(self._action) is RepairStrategy.PERSON

    def _repaired_by_reset(self) -> bool:
        """Whether a GPU reset is the repair of the faults as they stand (no fault needing more joined)."""
        return self._policy.repair.strategy_for(self._action) is RepairStrategy.GPU_RESET

    def _reset_failed(self, outcome: ResetOutcome, why: str) -> ResetOutcome:
        self._log("GPU reset on %s failed (%s); rebooting instead", self._node, why)
        self._repair_log.append(f"GPU reset did not repair the node ({why}); rebooting instead")
        return outcome

    async def _withdraw_gpu_reset(self) -> None:
        """An agent still busy with the order (or one restarted after the reboot) must not reset later."""
        await self._run(
            contracts.WITHDRAW_GPU_RESET,
            GpuResetRequest(node=self._node, holder=self._holder(), round=self._round, gpus=self._gpu_uuids()),
            summary=f"withdraw the GPU reset order on {self._node}",
        )
        self._action = self._action.escalate(RecommendedAction.RESTART_VM)

    async def _request_reboot(self, provider: str, *, graceful: bool) -> RebootResult | Verdict:
        """Ask `provider` to reboot; a provider that refuses for good sends the node to a person."""
        self._enter(Phase.REPAIRING)
        self._count_repair()
        # What is known before the step: the provider that took the round's graceful request, else the
        # one read for it, else the policy's ("auto": the step's answer names it, in the current details).
        via = self._rebooted_via or self._named.provider or provider
        while True:
            try:
                boot = await self._run(
                    contracts.REBOOT,
                    RebootRequest(
                        node=self._node,
                        holder=self._holder(),
                        round=self._round,
                        provider=provider,
                        graceful=graceful,
                    ),
                    summary=f"{'graceful ' if graceful else ''}reboot via {via} ({self._action.name})",
                )
                break
            except ActivityError as error:
                if _refused_for_good(error):
                    return decisions.escalate(f"the reboot could not be requested: {_failure(error)}")
                # The attempts ran out on something other than the provider (the Kubernetes API, lost
                # workers). The request is recorded on the node, so running the step again is safe.
                await workflow.sleep(
                    _STEP_AGAIN, summary=self._waiting_on(f"reboot step failed ({_failure(error)}); again soon")
                )
        self._rebooted_via = boot.provider
        self._repair_log.append(f"{'graceful ' if boot.graceful else ''}reboot via {boot.provider}: {boot.detail}")
        return boot

    async def _name_provider(self, provider: str) -> ProviderNamed:
        """The provider `provider` picks for the node and its machine, for the reboot step's summary and
        the details; nothing named when the read fails (the reboot step goes on and says why)."""
        try:
            return await self._run(
                contracts.NAME_PROVIDER,
                MachineRequest(node=self._node, provider=provider),
                summary=f"which provider reboots {self._node} ({provider})",
            )
        except ActivityError:
            return ProviderNamed()

    async def _wait_for_node(self, boot: RebootResult, timeout: timedelta) -> NodeState:
        """The node once back from `boot`, or as last seen when `timeout` passed or it was deleted."""
        self._enter(Phase.WAITING_FOR_NODE)
        return (await self._wait_for(decisions.back_from(boot), timeout)).state

    async def _not_back(self, boot: RebootResult, state: NodeState) -> str:
        """Why a person must look at a node that did not come back, with the provider's view of its machine."""
        machine = await self._describe_machine(boot.provider)
        return (
            f"node did not come back Ready with a new bootID within {self._policy.repair.node_ready_timeout} "
            f"(provider {machine.provider}: {machine.summary}; request: {boot.detail or 'no detail'}; "
            f"node last seen ready={state.ready}, bootID={state.boot_id or 'unknown'}, "
            f"before {boot.boot_id_before})"
        )

    async def _describe_machine(self, provider: str) -> MachineState:
        try:
            return await self._run(
                contracts.DESCRIBE_MACHINE,
                MachineRequest(node=self._node, provider=provider),
                summary=f"ask {provider} about {self._node}",
            )
        except ActivityError as error:
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

    async def _verify(self, back: NodeState, bar: HealthBar) -> Verdict:
        """Resolve once the node's GPUs report healthy after the repair (the state that saw the node back counts)."""
        condition = GpusHealthy(bar=bar)
        timeout = self._policy.repair.verify_timeout
        state = back if condition.met(back) else (await self._wait_for(condition, timeout)).state
        return decisions.after_verify(condition, state, timeout)

    async def _wait_for(self, condition: NodeCondition, timeout: timedelta) -> NodeWaitResult:
        """One activity watches the node until `condition` holds, `timeout` passes or the node is deleted."""
        return await self._run(
            contracts.WAIT_FOR_NODE,
            NodeWaitRequest(node=self._node, condition=condition, timeout=timeout),
            summary=f"wait up to {timeout} for {self._node}: {condition.kind}",
        )

    async def _observe(self) -> NodeState:
        return await self._run(contracts.OBSERVE, NodeRef(node=self._node), summary=f"read {self._node}")

    # ---- carrying steps out ---------------------------------------------------------------------

    async def _release(self, outcome: Outcome, reason: str) -> NodeState:
        assert self._record is not None
        return await self._run(
            contracts.RELEASE,
            ReleaseRequest(
                node=self._node,
                holder=self._holder(),
                outcome=outcome,
                cordoned_before=self._record.cordoned_before,
                reason=reason,
            ),
            summary={
                Outcome.RESOLVED: f"uncordon {self._node}",
                Outcome.ESCALATED: f"leave {self._node} cordoned for a person",
                Outcome.STOOD_DOWN: f"remove gpuheal's marks from {self._node}",
                Outcome.TAKEN_BACK: f"take {self._node} back from the person: its escalation reason goes",
            }[outcome],
        )

    def _finish(self, phase: Phase, reason: str) -> None:
        self._reason = reason
        self._enter(phase)

    async def _run(self, step: StepContract[RequestT, ResultT], request: RequestT, *, summary: str) -> ResultT:
        """Run one step as its contract says, with the policy's timeouts; a local one holds the
        search attributes' upsert until it ends (`attrs.Published.local_step`)."""
        with self._published.local_step() if step.local else contextlib.nullcontext():
            return await run_step(
                step,
                request,
                self._policy.timeouts,
                summary=self._waiting_on(summary),
                outlives_cancel=step.acts_on_node and self._waits_out_steps,
            )

    def _waiting_on(self, what: str) -> str:
        """Say in the UI's current details what the run waits on now (a step, a timer); returns `what`,
        the step's or timer's summary."""
        self._now = what
        # Details only, no command: they change nothing a replay compares.
        workflow.set_current_details(self._details())
        return what

    def _decide(self, decision: ApprovalSignal, *, approved: bool) -> RecordedDecision:
        if self._decision is None:  # the first decision stands
            self._decision = RecordedDecision(
                approved=approved, approver=decision.approver, reason=decision.reason, at=workflow.now()
            )
            self._decided_as_person = self._left_to_a_person()
            # Details only: they are no command, so the history stays as it was for the signals.
            workflow.set_current_details(self._details())
        return self._decision

    def _check_person_action(self, action: OperatorAction) -> None:
        decisions.check_person_action(self._held_for_person, self._phase, self._asked_of_us, action.by, action.reason)

    def _take(self, what: PersonAction, action: OperatorAction) -> RecordedAction:
        """Record a person's action on the escalated remediation; the run carries it out."""
        taken = recorded(what.value, action, workflow.now())
        self._actions.append(taken)
        self._asked_of_us = taken
        self._held_for_person = False
        self._publish()
        return taken

    def _enter(self, phase: Phase) -> None:
        metrics.phase_entered(self._history, phase, self._action, self._faults)
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
        serials = self._gpu_serials()
        if serials:  # set only where known: runs without serials keep the history they had
            updates.append(attrs.SERIALS.value_set(serials))
        xids = [f.xid for f in self._faults if f.xid is not None]
        if xids:
            updates.append(attrs.XID.value_set(xids[-1]))
        if self._policy_version:  # runs begun before policies had versions keep the history they had
            updates.append(attrs.POLICY_VERSION.value_set(self._policy_version))
        if self._stamps_phase_since and self._phase is not self._stamped_phase:
            # When the phase began, for "stuck in a phase" views; a phase entered again goes on from its start.
            self._stamped_phase = self._phase
            updates.append(attrs.PHASE_SINCE.value_set(workflow.now()))
        self._published.set(updates)
        workflow.set_current_details(self._details())

    def _details(self) -> str:
        # Free text (faults' messages, people's reasons, steps' failures) is escaped: shown as written.
        lines = [f"**{self._phase.value}** — node `{self._node}`", phase_checklist(self._history, workflow.now())]
        if self._now and not self._phase.is_final:
            lines.append(f"now: {plain(self._now)}")
        lines.append(f"action {self._action.name}; {len(self._faults)} fault(s): {plain(self._fault_summary())}")
        if self._drain is not None and self._phase is Phase.DRAINING:
            lines.append(
                f"drain: {self._drain.evicted} evicted, {len(self._drain.remaining)} remaining, "
                f"{len(self._drain.blocked)} blocked by a disruption budget"
            )
        if self._phase is Phase.ON_HOLD:
            lines.append(
                f"on hold: `{self._node}` is labelled gpuheal.io/hold=true; "
                f"`kubectl label node {self._node} gpuheal.io/hold-` lets the remediation go on"
            )
        if self._phase is Phase.AWAITING_BUDGET and self._asked is not None:
            lines.append(f"waiting for a permit from `{self._asked.governor_id}` (`gpuheal budget` shows why)")
        if self._phase is Phase.AWAITING_APPROVAL and self._decision is None:
            lines.append(
                f"waiting for approval: `gpuheal approve {self._node} --by NAME --reason WHY` (or `gpuheal reject`)"
            )
        if self._phase is Phase.ESCALATED and self._held_for_person:
            lines.append(
                f"held for a person: `gpuheal resume {self._node}` once fixed, `gpuheal retry {self._node}`, or "
                f"`gpuheal release {self._node}` (each with --by NAME --reason WHY)"
            )
        for taken in self._actions[-3:]:
            lines.append(
                f"{PersonAction(taken.action).done} by {plain(taken.by)} at {taken.at.isoformat()}: {plain(taken.reason)}"
            )
        if self._decision is not None:
            verb = "approved" if self._decision.approved else "rejected"
            lines.append(
                f"{verb} by {plain(self._decision.approver)} at {self._decision.at.isoformat()}: "
                f"{plain(self._decision.reason)}"
            )
        if self._rebooted_via:
            lines.append(f"provider {self._rebooted_via} took the reboot request")
        if self._named.machine:
            lines.append(f"machine {code(self._named.machine)}")
        if self._repair_log:
            lines.append(f"repair: {plain('; '.join(self._repair_log))}")
        for bundle in self._bundles:
            lines.append(f"diagnostics bundle: {code(bundle)}")
        if self._reason:
            lines.append(f"reason: {plain(self._reason)}")
        if self._plan:
            lines.append("dry run, nothing done; it would:\n" + "\n".join(f"- {plain(step)}" for step in self._plan))
        if self._policy_version:
            lines.append(f"policy {self._policy_version}")
        return "\n\n".join(lines)

    def _fault_summary(self) -> str:
        parts = [
            f"XID {f.xid}" if f.xid is not None else (f.message or f.source or f.action.name) for f in self._faults[-3:]
        ]
        return ", ".join(parts)

    def _gpu_uuids(self) -> list[str]:
        return sorted({uuid for f in self._faults for uuid in f.gpu_uuids})

    def _log(self, message: str, *args: object) -> None:
        """Every line of the run names its GPUs (the logger adds the workflow id and, from it, the node)."""
        workflow.logger.info(message, *args, extra={"gpu": self._gpu_uuids()})

    def _count_repair(self) -> None:
        self._repairs += 1
        if self._looks_for_offences:  # runs from before did not publish it (an upsert is a command)
            self._published.set([attrs.REPAIRS.value_set(self._repairs)])

    def _gpu_serials(self) -> list[str]:
        return sorted({serial for f in self._faults for serial in f.gpu_serials})

    def _holder(self) -> str:
        info = workflow.info()
        return f"{info.workflow_id}/{info.run_id}"


def _failure_type(error: ActivityError) -> FailureType | None:
    """The typed failure an activity ended with, if it is one the workflow tells apart."""
    cause = error.cause
    if isinstance(cause, ApplicationError) and cause.type in set(FailureType):
        return FailureType(cause.type)
    return None


def _refused_for_good(error: ActivityError) -> bool:
    """The provider kept failing, or something failed that no retry can change: a person must look."""
    cause = error.cause
    return isinstance(cause, ApplicationError) and (cause.type == FailureType.PROVIDER or cause.non_retryable)


def _failure(error: ActivityError) -> str:
    """The activity's own error message (a provider's, naming the machine and what to do)."""
    cause = error.cause
    return cause.message if isinstance(cause, ApplicationError) else str(cause or error)
