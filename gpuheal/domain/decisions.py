"""What a remediation does next: pure decisions that RemediationWorkflow carries out.

Every function here reads what the workflow has seen (a node record, a drain pass, an operator's
decision, a reset's answer, a reboot's result, a node read) and returns the next step as a value:
a `Verdict` for the stages (go on, or end the remediation this way) and a `Rung` for the repair
ladder (reset → reboot, gracefully first where the policy asks → force → verify → escalate). The
workflow holds no rule of its own, and these are tested without Temporal (tests/domain).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.budgets import never_allows
from gpuheal.domain.fleet import PermitAsked, PermitGrant
from gpuheal.domain.gpu_health import HealthBar, gpu_health_problem
from gpuheal.domain.node_wait import BackFromReboot, GpusHealthy, NodeWaitResult
from gpuheal.domain.operator import ActionRefused, RecordedAction, check_who_and_why
from gpuheal.domain.phases import Phase
from gpuheal.domain.policy import DrainPolicy, RepairPolicy, RepairStrategy, ValidationPolicy
from gpuheal.domain.remediation import RecordedDecision
from gpuheal.domain.steps import DrainProgress, NodeRecord, NodeState, Outcome, RebootResult

STAND_DOWN_REASON = "the node was uncordoned by someone else; standing down"


class Next(StrEnum):
    """Where a stage of the remediation leads."""

    # On to the next stage.
    PROCEED = "proceed"
    # The node is repaired: hand it back to service.
    RESOLVE = "resolve"
    # Run the stage's step again after `Verdict.pause` (another drain pass).
    AGAIN = "again"
    # Hand the node to a person: it stays cordoned, with the reason annotated.
    ESCALATE = "escalate"
    # A person took the node back: remove gpuheal's marks and leave their cordon as it is.
    STAND_DOWN = "stand_down"
    # End without touching the node (it is gone, or not gpuheal's to manage).
    FAIL = "fail"
    IGNORE = "ignore"
    # The node recovered by itself while its fault waited for a permit: resolved, nothing done to it.
    RECOVERED = "recovered"
    # A person asked to run the stage that escalated again.
    RETRY = "retry"
    # A person released an escalated node as it is: back to service, or left cordoned for them.
    RELEASE = "release"
    RELEASE_CORDONED = "release_cordoned"
    # A dry run said what it would do, and did nothing.
    REHEARSED = "rehearsed"
    # The repair did not hold and the policy allows replacement: terminate the machine (`reason` says why).
    REPLACE = "replace"
    # The machine was terminated and the node is gone.
    REPLACED = "replaced"


# How each ending leaves the node (None: untouched) and the phase the remediation ends in.
_ENDINGS: dict[Next, tuple[Outcome | None, Phase]] = {
    Next.RESOLVE: (Outcome.RESOLVED, Phase.RESOLVED),
    Next.ESCALATE: (Outcome.ESCALATED, Phase.ESCALATED),
    Next.STAND_DOWN: (Outcome.STOOD_DOWN, Phase.CANCELLED),
    Next.FAIL: (None, Phase.FAILED),
    Next.IGNORE: (None, Phase.CANCELLED),
    Next.RECOVERED: (None, Phase.RESOLVED),
    Next.RELEASE: (Outcome.RESOLVED, Phase.RELEASED),
    Next.RELEASE_CORDONED: (Outcome.STOOD_DOWN, Phase.RELEASED),
    Next.REHEARSED: (None, Phase.DRY_RUN),
    Next.REPLACED: (None, Phase.REPLACED),
}


@dataclass(frozen=True)
class Verdict:
    """The next step of a stage, and why; `pause` before running the stage's step AGAIN."""

    next: Next
    reason: str = ""
    pause: timedelta = timedelta(0)

    @property
    def ends(self) -> bool:
        return self.next in _ENDINGS

    @property
    def release(self) -> Outcome | None:
        """How the node is handed back when this verdict ends the remediation; None: not at all."""
        return _ENDINGS[self.next][0]

    @property
    def phase(self) -> Phase:
        """The final phase this verdict ends the remediation in."""
        return _ENDINGS[self.next][1]


PROCEED = Verdict(Next.PROCEED)
RESOLVED = Verdict(Next.RESOLVE)
RETRY = Verdict(Next.RETRY)


def escalate(reason: str) -> Verdict:
    return Verdict(Next.ESCALATE, reason)


def beyond_repair(repair: RepairPolicy, action: RecommendedAction, reason: str) -> Verdict:
    """The repair did not hold (`reason`): replace the machine where the policy allows it, else ask a
    person. Faults the policy leaves to a person stay theirs."""
    if repair.replace and repair.strategy_for(action) is not RepairStrategy.PERSON:
        return Verdict(Next.REPLACE, reason)
    return escalate(reason)


def after_gpu_check(
    answer: NodeWaitResult, validation: ValidationPolicy, repair: RepairPolicy, action: RecommendedAction
) -> Verdict:
    """A node that passed its GPU check is resolved; one whose GPUs failed it stays out of service
    (replaced where the policy allows); one whose check proved nothing (not answered, checks off,
    the tool missing or unreadable) goes to a person: a misconfigured agent must not condemn machines."""
    report = answer.state.gpu_check
    if answer.deleted:
        return node_deleted(answer.state.node)
    if report is None or not answer.reached:
        return escalate(
            f"the node's agent did not answer the level {validation.level} GPU check within {validation.timeout}"
        )
    if not report.ok:
        by = f" ({report.tool})" if report.tool else ""
        if not report.conclusive:
            return escalate(f"the level {validation.level} GPU check{by} proved nothing: {report.detail}")
        return beyond_repair(
            repair, action, f"the GPUs failed the level {validation.level} GPU check{by}: {report.detail}"
        )
    return RESOLVED


def diagnostics_line(answer: NodeWaitResult, timeout: timedelta) -> str:
    """The repair log's line on a diagnostics bundle asked for before a reboot, which goes ahead anyway."""
    bundle = answer.state.diagnostics
    if answer.deleted:
        return "diagnostics not collected: the node was deleted"
    if bundle is None or not answer.reached:
        return f"diagnostics not collected: the node's agent did not answer within {timeout}; rebooting anyway"
    if not bundle.ok:
        return f"diagnostics not collected: {bundle.detail}; rebooting anyway"
    return f"diagnostics: {bundle.detail} at {bundle.location}"


def after_replacement(why: str, terminated: str, gone: NodeWaitResult, timeout: timedelta) -> Verdict:
    """The machine was terminated (`terminated` says how): replaced once its node is deleted; a node
    still there after `timeout` goes to a person, as the reason the repair did not hold."""
    if gone.deleted:
        return Verdict(Next.REPLACED, f"{why}; replaced: {terminated}, and the node was deleted")
    if gone.reached:
        return Verdict(Next.REPLACED, f"{why}; replaced: {terminated}, and a new machine took the node's name")
    return escalate(f"{why}; the machine was terminated ({terminated}) but the node was not deleted within {timeout}")


def replaced_late(why: str) -> Verdict:
    """The node of a machine terminated earlier was deleted while a person was asked: replaced after all."""
    return Verdict(Next.REPLACED, f"{why}; replaced: the machine was terminated and its node was deleted later")


def could_not_replace(why: str, failure: str) -> Verdict:
    """The provider could not terminate the machine: a person looks at the node, told both reasons."""
    return escalate(f"{why}; the machine could not be replaced: {failure}")


def node_deleted(node: str) -> Verdict:
    return Verdict(Next.FAIL, f"node {node} was deleted during the remediation")


def needs_recheck(grant: PermitGrant, fault_at: datetime) -> bool:
    """A fault that waited for its permit longer than the governor's `recheck_after` (a breaker that
    stayed tripped for hours, a long pause) is checked against the node before anything is done."""
    return grant.granted_at - fault_at > grant.recheck_after


def after_stale_recheck(asked: PermitAsked, fault_at: datetime, now: NodeState) -> Verdict:
    """Go on unless the node recovered while its fault waited: its GPUs report healthy since the
    fault (on a new boot, or in a report written after the fault), as the health bar of a repair
    would prove it. A node that only rebooted, with no health report since, is still repaired."""
    if not now.exists:
        return node_deleted(now.node)
    bar = HealthBar(boot_id_before=asked.boot_id, after=fault_at, after_what="the fault")
    if gpu_health_problem(now.gpu_report, now.boot_id, bar) is not None:
        return PROCEED
    rebooted = f" (rebooted: boot {asked.boot_id} → {now.boot_id})" if asked.boot_id != now.boot_id else ""
    return Verdict(
        Next.RECOVERED,
        f"the node recovered while the fault waited for a permit{rebooted}: its GPUs report healthy since "
        f"{fault_at.isoformat()}; nothing was done to it",
    )


def after_quarantine(record: NodeRecord) -> Verdict:
    """Whether gpuheal may go on with a node it just tried to quarantine."""
    if not record.exists:
        return Verdict(Next.FAIL, f"node {record.node} does not exist")
    if not record.managed:
        return Verdict(Next.IGNORE, f"node {record.node} is labelled gpuheal.io/managed=false")
    return PROCEED


# ---- the drain -------------------------------------------------------------------------------


def budgets_never_allowing(progress: DrainProgress) -> dict[str, str]:
    """Budgets that held a pod this pass and can never allow a disruption, by ref, with why for people."""
    current: dict[str, str] = {}
    for hold in progress.holds:
        why = never_allows(hold.budget)
        if why is not None and hold.budget.ref not in current:
            current[hold.budget.ref] = (
                f"pod {hold.pod.namespace}/{hold.pod.name} is held by PodDisruptionBudget {hold.budget.ref}, "
                f"which can never allow a disruption: {why}"
            )
    return current


def held_for_good(current: dict[str, str], never_since: dict[str, datetime], now: datetime, confirm: timedelta) -> str:
    """Why the drain can never finish, or "": a budget has said it can never allow a disruption for `confirm`.

    `never_since` holds when each budget in `current` first said so, on the passes since. Waiting
    for confirmation keeps a status read while the disruption controller catches up with an edit,
    or a transient sync failure, from ending the drain.
    """
    held = [why for ref, why in current.items() if now - never_since[ref] >= confirm]
    return "drain cannot finish: " + "; ".join(held) if held else ""


def after_drain_pass(
    progress: DrainProgress, policy: DrainPolicy, elapsed: timedelta, held: str, backoff: timedelta
) -> Verdict:
    """What follows a drain pass `elapsed` into the drain; `backoff` is the wait the backoff has reached.

    AGAIN pauses for the backoff, cut short where the drain's deadline or the moment its
    DeleteAfterTimeout pods are due comes sooner.
    """
    if progress.uncordoned:
        return Verdict(Next.STAND_DOWN, STAND_DOWN_REASON)
    if progress.done:
        return PROCEED
    if held:
        return escalate(held)
    if elapsed >= policy.timeout:
        return escalate(
            f"drain did not finish within {policy.timeout}: "
            f"{len(progress.remaining)} pod(s) remain ({_pod_list(progress)}){_failures(progress)}"
        )
    pause = min(_wait(progress, policy, backoff), policy.timeout - elapsed)
    if elapsed < policy.delete_after:
        pause = min(pause, policy.delete_after - elapsed)
    return Verdict(Next.AGAIN, f"{len(progress.remaining)} pod(s) still on the node", pause)


def next_backoff(progress: DrainProgress, policy: DrainPolicy, backoff: timedelta) -> timedelta:
    """The backoff for the pass after the next: this pass's wait doubled, up to `retry_max`."""
    return min(_wait(progress, policy, backoff) * 2, policy.retry_max)


def _wait(progress: DrainProgress, policy: DrainPolicy, backoff: timedelta) -> timedelta:
    """The wait after this pass: back to the start when it moved pods."""
    return policy.retry_initial if progress.evicted or progress.deleted else backoff


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


# ---- approval --------------------------------------------------------------------------------


# Who approves when the policy's auto_approve_after passes without a person's decision.
AUTO_APPROVER = "gpuheal"


class DecisionRefused(ActionRefused):
    """An operator's approval or rejection that this remediation cannot take; the message says why."""


def needs_approval(policy: RepairPolicy, action: RecommendedAction, labels: Mapping[str, str]) -> bool:
    """A person approves every repair the policy asks it for (all, those of some actions, or those of
    the nodes its selector names, by their `labels`), and any fault no provider can fix."""
    in_pool = bool(policy.approval_node_selector) and all(
        labels.get(key) == value for key, value in policy.approval_node_selector.items()
    )
    left_to_a_person = action.needs_person or policy.strategy_for(action) is RepairStrategy.PERSON
    return policy.require_approval or action in policy.approval_for or in_pool or left_to_a_person


# The actions whose repair is a reboot: a policy that names one in approval_for has a person approve
# every reboot, also one a GPU reset falls back to.
REBOOT_ACTIONS = frozenset({RecommendedAction.RESTART_VM, RecommendedAction.RESTART_BM})


def reboot_needs_approval(
    policy: RepairPolicy,
    action: RecommendedAction,
    after_reset: bool,
    decided: RecordedDecision | None,
    decided_as_person: bool = False,
    *,
    asks_for_person_faults: bool = False,
) -> bool:
    """Whether a person must approve the reboot step now: one nobody approved yet, as the policy asks
    for the node's `action` (a repair it leaves to a person among them), and any reboot a GPU reset
    fell back to (`after_reset`) where the policy names reboots; and one approved for another kind of
    repair (`decided_as_person`: the approval said a person's repair was done, or allowed a reboot,
    and a fault that joined since asks for the other). With `asks_for_person_faults` (runs begun since
    it was so), a reboot nobody approved also waits for a person when a fault no provider can fix joined
    after the approval step passed (during a GPU reset, say)."""
    person = policy.strategy_for(action) is RepairStrategy.PERSON
    if decided is not None:
        return person != decided_as_person
    return (
        person
        or (asks_for_person_faults and action.needs_person)
        or action in policy.approval_for
        or (after_reset and bool(policy.approval_for & REBOOT_ACTIONS))
    )


def approval_wait(policy: RepairPolicy, action: RecommendedAction) -> timedelta:
    """How long to wait for a person: until the auto-approval where the policy allows one for this
    action, else until the approval timeout."""
    if policy.auto_approve_after is not None and _auto_approves(policy, action):
        return policy.auto_approve_after
    return policy.approval_timeout


def auto_approval(policy: RepairPolicy, action: RecommendedAction, at: datetime) -> RecordedDecision | None:
    """gpuheal's own approval once nobody decided within the wait, where the policy allows one."""
    if not _auto_approves(policy, action):
        return None
    reason = f"nobody decided within {policy.auto_approve_after}; the policy approves then"
    return RecordedDecision(approved=True, approver=AUTO_APPROVER, reason=reason, at=at)


def _auto_approves(policy: RepairPolicy, action: RecommendedAction) -> bool:
    # A fault no provider can fix needs a person's hands, not only a person's word.
    # … and the repairs the policy leaves to a person are theirs to say done.
    return (
        policy.auto_approve_after is not None
        and not action.needs_person
        and policy.strategy_for(action) is not RepairStrategy.PERSON
    )


def check_decision(waiting: bool, phase: Phase, decided: RecordedDecision | None, approver: str, reason: str) -> None:
    """Raise DecisionRefused unless a person may decide now: the remediation is `waiting` for approval
    (in `phase`), no decision was taken yet, and the decision names who took it and why."""
    check_who_and_why(approver, reason, verb="decides", field="approver")
    if decided is not None:
        verb = "approved" if decided.approved else "rejected"
        raise DecisionRefused(f"already {verb} by {decided.approver} at {decided.at.isoformat()}")
    if not waiting:
        raise DecisionRefused(f"the remediation is not waiting for approval (phase {phase.value})")


def after_approval_wait(decision: RecordedDecision | None, timeout: timedelta) -> Verdict:
    """Go on with an approval; escalate on a rejection or when nobody decided within `timeout`."""
    if decision is None:
        return escalate(f"no approval within {timeout}")
    if not decision.approved:
        return escalate(f"rejected by {decision.approver}: {decision.reason}")
    return PROCEED


def still_held(state: NodeState) -> Verdict:
    """Go on while the node is still cordoned; a person who uncordoned it has taken it back."""
    if not state.exists:
        return node_deleted(state.node)
    return PROCEED if state.unschedulable else Verdict(Next.STAND_DOWN, STAND_DOWN_REASON)


# ---- held for a person -----------------------------------------------------------------------


class PersonAction(StrEnum):
    """What a person does with an escalated remediation (each an Update of the workflow)."""

    # The hardware is fixed: gpuheal checks the node and puts it back in service.
    RESUME = "resume"
    # Run the stage that escalated again (the drain, the repair).
    RETRY = "retry"
    # Let go of the node as it is, unrepaired: back to service, or left cordoned for the person.
    RELEASE = "release"

    @property
    def done(self) -> str:
        return {"resume": "resumed", "retry": "retried", "release": "released"}[self.value]


def check_person_action(held: bool, phase: Phase, taken: RecordedAction | None, by: str, reason: str) -> None:
    """Raise DecisionRefused unless a person may act on the escalated remediation now: it is `held`
    for a person (in `phase`), no action is being carried out (`taken`), and they say who and why."""
    check_who_and_why(by, reason)
    if taken is not None:
        raise DecisionRefused(
            f"already {PersonAction(taken.action).done} by {taken.by} at {taken.at.isoformat()}; "
            "that is being carried out"
        )
    if not held:
        raise DecisionRefused(
            f"the remediation is not escalated (phase {phase.value}); only an escalated one is resumed, "
            "retried or released"
        )


def released(action: RecordedAction, keep_cordoned: bool) -> Verdict:
    """End as a person released the node: uncordoned (unless cordoned before gpuheal), or left cordoned."""
    if keep_cordoned:
        return Verdict(Next.RELEASE_CORDONED, f"released by {action.by}, left cordoned: {action.reason}")
    return Verdict(Next.RELEASE, f"released by {action.by} unrepaired: {action.reason}")


def resume_checks(boot_id: str, escalated_at: datetime, resume: RecordedAction) -> tuple[BackFromReboot, GpusHealthy]:
    """What a resumed node must show before it goes back, in order: Ready, then GPUs reported
    healthy on another boot than the one it first escalated on (the person rebooted it), or in a
    report written after it escalated (the agent reports when the GPUs' health changes)."""
    bar = HealthBar(boot_id_before=boot_id, after=escalated_at, after_what="the escalation")
    return BackFromReboot(boot_id_before=boot_id, expects_new_boot=False), GpusHealthy(bar=bar)


def after_resume_check(
    resume: RecordedAction, condition: BackFromReboot | GpusHealthy, state: NodeState, timeout: timedelta
) -> Verdict:
    """Go on when the resumed node meets `condition`; back to the person when it did not within `timeout`."""
    if not state.exists:
        return node_deleted(state.node)
    missing = condition.missing(state)
    if missing is None:
        return PROCEED
    return escalate(f"resumed by {resume.by}, but the node failed the check within {timeout}: {missing}")


def resumed(resume: RecordedAction) -> Verdict:
    return Verdict(Next.RESOLVE, f"resumed by {resume.by} ({resume.reason}); the node passed the checks")


# ---- the repair ladder -----------------------------------------------------------------------


class Rung(StrEnum):
    """A step of the repair ladder."""

    RESET_GPUS = "reset_gpus"
    # Ask the provider for a graceful restart.
    REBOOT_GRACEFULLY = "reboot_gracefully"
    # Wait `repair.graceful_timeout` for the graceful restart to begin.
    AWAIT_GRACEFUL = "await_graceful"
    # Ask the provider for a (force) restart.
    REBOOT = "reboot"
    # Wait for the node to come back from the reboot.
    AWAIT_NODE = "await_node"
    VERIFY = "verify"
    # The node is repaired.
    DONE = "done"
    # The repair did not work: a person takes over.
    ESCALATE = "escalate"
    # The node was deleted mid-repair: the remediation fails.
    GONE = "gone"


class ResetOutcome(StrEnum):
    """How a GPU reset ended."""

    # The agent confirmed the reset and the GPUs then reported healthy.
    REPAIRED = "repaired"
    # The agent did not answer within `repair.gpu_reset_timeout`.
    UNANSWERED = "unanswered"
    # The agent answered that the reset failed.
    FAILED = "failed"
    # The reset was confirmed, but the GPUs did not report healthy after it.
    UNHEALTHY = "unhealthy"
    # A fault that needs more than a reset arrived meanwhile.
    OUTGROWN = "outgrown"
    # The node was deleted while the reset was waited for.
    NODE_DELETED = "node_deleted"


def first_rung(action: RecommendedAction, policy: RepairPolicy, gpus: list[str]) -> Rung:
    """Reset the GPUs when the fault allows it and names them, else reboot."""
    if policy.strategy_for(action) is RepairStrategy.GPU_RESET and gpus:
        return Rung.RESET_GPUS
    return _reboot(policy)


def after_reset(outcome: ResetOutcome, policy: RepairPolicy) -> Rung:
    """A repaired node is done, a deleted one gone; any other reset falls back to a reboot."""
    if outcome is ResetOutcome.NODE_DELETED:
        return Rung.GONE
    return Rung.DONE if outcome is ResetOutcome.REPAIRED else _reboot(policy)


def after_reboot_request(rung: Rung, boot: RebootResult) -> Rung:
    """After a graceful request, wait for the graceful restart, or, where the provider has none, for
    the restart it did; after a force restart (which may find a graceful one that happened late), for
    the node."""
    return Rung.AWAIT_GRACEFUL if rung is Rung.REBOOT_GRACEFULLY and boot.graceful else Rung.AWAIT_NODE


def after_graceful_wait(boot: RebootResult, state: NodeState) -> Rung:
    """A node on a new boot (back, or still coming up) restarted gracefully; forcing one now would reboot twice."""
    if not state.exists:
        return Rung.GONE
    return Rung.AWAIT_NODE if state.boot_id != boot.boot_id_before else Rung.REBOOT


def after_node_wait(boot: RebootResult, state: NodeState) -> Rung:
    """Verify a node back from its reboot; one that did not come back goes to a person."""
    if not state.exists:
        return Rung.GONE
    return Rung.VERIFY if back_from(boot).met(state) else Rung.ESCALATE


def after_verify(condition: GpusHealthy, state: NodeState, timeout: timedelta) -> Verdict:
    """Resolve when the GPUs proved healthy on `state`; escalate when they did not within `timeout`."""
    if not state.exists:
        return node_deleted(state.node)
    missing = condition.missing(state)
    return RESOLVED if missing is None else escalate(f"GPUs did not report healthy within {timeout}: {missing}")


def back_from(boot: RebootResult) -> BackFromReboot:
    """The node is back from this reboot: Ready, and on a new boot where one is due."""
    return BackFromReboot(boot_id_before=boot.boot_id_before, expects_new_boot=boot.expects_new_boot)


def _reboot(policy: RepairPolicy) -> Rung:
    return Rung.REBOOT if policy.graceful_timeout is None else Rung.REBOOT_GRACEFULLY
