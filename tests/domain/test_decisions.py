"""The remediation's decisions, as plain functions: no Temporal, no cluster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gpuheal.domain import decisions
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.budgets import DisruptionBudget
from gpuheal.domain.decisions import Next, ResetOutcome, Rung, Verdict
from gpuheal.domain.gpu_check import GpuCheckReport
from gpuheal.domain.gpu_health import GpuHealthReport, HealthBar
from gpuheal.domain.node_wait import GpusHealthy, NodeGone, NodeWaitResult
from gpuheal.domain.operator import ActionRefused, RecordedAction
from gpuheal.domain.phases import Phase
from gpuheal.domain.policy import DrainPolicy, RepairPolicy, RepairStrategy, ValidationPolicy
from gpuheal.domain.remediation import RecordedDecision
from gpuheal.domain.steps import BudgetHold, DrainProgress, NodeRecord, NodeState, Outcome, PodRef, RebootResult

NOW = datetime(2026, 1, 1, tzinfo=UTC)
POD = PodRef(namespace="ml", name="trainer-0")
DRAIN = DrainPolicy()


def record(*, exists: bool = True, managed: bool = True) -> NodeRecord:
    return NodeRecord(node="n1", exists=exists, managed=managed, cordoned_before=False, boot_id="boot-1")


def state(*, boot_id: str = "boot-2", ready: bool = True, unschedulable: bool = True) -> NodeState:
    return NodeState(
        node="n1", exists=True, ready=ready, boot_id=boot_id, unschedulable=unschedulable, gpu_healthy=None
    )


def reboot(*, graceful: bool = False, expects_new_boot: bool = True) -> RebootResult:
    return RebootResult(
        boot_id_before="boot-1",
        requested_now=True,
        provider="fake",
        graceful=graceful,
        expects_new_boot=expects_new_boot,
    )


def test_a_missing_node_fails_and_an_unmanaged_one_is_left_alone() -> None:
    missing = decisions.after_quarantine(record(exists=False))
    unmanaged = decisions.after_quarantine(record(managed=False))

    assert (missing.next, missing.phase, missing.release) == (Next.FAIL, Phase.FAILED, None)
    assert (unmanaged.next, unmanaged.phase, unmanaged.release) == (Next.IGNORE, Phase.CANCELLED, None)
    assert decisions.after_quarantine(record()) == decisions.PROCEED


def test_endings_say_how_the_node_is_handed_back() -> None:
    assert (decisions.RESOLVED.phase, decisions.RESOLVED.release) == (Phase.RESOLVED, Outcome.RESOLVED)
    assert decisions.escalate("x").release is Outcome.ESCALATED
    deleted = decisions.node_deleted("n1")
    assert (deleted.phase, deleted.release, deleted.reason) == (
        Phase.FAILED,
        None,
        "node n1 was deleted during the remediation",
    )
    assert not decisions.PROCEED.ends


def test_a_drained_node_proceeds_and_an_uncordoned_one_stands_down() -> None:
    done = decisions.after_drain_pass(DrainProgress(evicted=1), DRAIN, timedelta(0), "", DRAIN.retry_initial)
    uncordoned = decisions.after_drain_pass(
        DrainProgress(uncordoned=True), DRAIN, timedelta(0), "", DRAIN.retry_initial
    )

    assert done == decisions.PROCEED
    assert (uncordoned.next, uncordoned.release, uncordoned.phase) == (
        Next.STAND_DOWN,
        Outcome.STOOD_DOWN,
        Phase.CANCELLED,
    )


def test_a_drain_past_its_timeout_escalates_naming_the_pods() -> None:
    verdict = decisions.after_drain_pass(DrainProgress(remaining=(POD,)), DRAIN, DRAIN.timeout, "", DRAIN.retry_initial)

    assert verdict.next is Next.ESCALATE
    assert verdict.reason == "drain did not finish within 0:30:00: 1 pod(s) remain (ml/trainer-0)"


def test_a_waiting_drain_backs_off_and_is_cut_short_by_the_delete_deadline() -> None:
    waiting = DrainProgress(remaining=(POD,))
    backoff = timedelta(seconds=8)

    far = decisions.after_drain_pass(waiting, DRAIN, timedelta(0), "", backoff)
    near = decisions.after_drain_pass(waiting, DRAIN, DRAIN.delete_after - timedelta(seconds=3), "", backoff)

    assert (far.next, far.pause) == (Next.AGAIN, backoff)
    assert near.pause == timedelta(seconds=3)
    assert decisions.next_backoff(waiting, DRAIN, backoff) == timedelta(seconds=16)
    assert decisions.next_backoff(waiting, DRAIN, DRAIN.retry_max) == DRAIN.retry_max
    moved = DrainProgress(evicted=1, remaining=(POD,))
    assert decisions.after_drain_pass(moved, DRAIN, timedelta(0), "", backoff).pause == DRAIN.retry_initial


def test_a_budget_that_never_allows_holds_the_drain_only_once_confirmed() -> None:
    hopeless = DisruptionBudget(namespace="ml", name="pdb", min_available=1, expected_pods=0, condition_reason="x")
    never = decisions.budgets_never_allowing(DrainProgress(holds=(BudgetHold(pod=POD, budget=hopeless),)))
    since = {ref: NOW for ref in never}
    confirm = DRAIN.never_allows_for

    assert list(never) == ["ml/pdb"]
    assert decisions.held_for_good(never, since, NOW + confirm - timedelta(seconds=1), confirm) == ""
    held = decisions.held_for_good(never, since, NOW + confirm, confirm)
    assert held.startswith("drain cannot finish: pod ml/trainer-0 is held by PodDisruptionBudget ml/pdb")
    assert (
        decisions.after_drain_pass(DrainProgress(remaining=(POD,)), DRAIN, timedelta(0), held, confirm).reason == held
    )


@pytest.mark.parametrize(
    ("require", "action", "needed"),
    [
        (False, RecommendedAction.RESTART_VM, False),
        (True, RecommendedAction.RESTART_VM, True),
        (False, RecommendedAction.REPLACE_VM, True),
    ],
)
def test_approval_is_needed_where_the_policy_or_the_fault_asks(
    require: bool, action: RecommendedAction, needed: bool
) -> None:
    assert decisions.needs_approval(RepairPolicy(require_approval=require), action, {}) is needed


def test_an_approval_proceeds_a_rejection_or_silence_escalates() -> None:
    approved = RecordedDecision(approved=True, approver="alice", reason="", at=NOW)
    rejected = RecordedDecision(approved=False, approver="bob", reason="rma", at=NOW)

    assert decisions.after_approval_wait(approved, timedelta(hours=1)) == decisions.PROCEED
    assert decisions.after_approval_wait(rejected, timedelta(hours=1)) == decisions.escalate("rejected by bob: rma")
    assert decisions.after_approval_wait(None, timedelta(hours=6)) == decisions.escalate("no approval within 6:00:00")
    assert decisions.still_held(state(unschedulable=False)).next is Next.STAND_DOWN
    assert decisions.still_held(state()) == decisions.PROCEED


def test_the_ladder_starts_with_a_reset_only_for_a_reset_fault_naming_gpus() -> None:
    repair = RepairPolicy()
    graceful = RepairPolicy(graceful_timeout=timedelta(minutes=5))

    assert decisions.first_rung(RecommendedAction.COMPONENT_RESET, repair, ["GPU-a"]) is Rung.RESET_GPUS
    assert decisions.first_rung(RecommendedAction.COMPONENT_RESET, repair, []) is Rung.REBOOT
    assert decisions.first_rung(RecommendedAction.RESTART_VM, repair, ["GPU-a"]) is Rung.REBOOT
    assert decisions.first_rung(RecommendedAction.RESTART_VM, graceful, []) is Rung.REBOOT_GRACEFULLY
    no_reset = RepairPolicy(gpu_reset=False)
    assert decisions.first_rung(RecommendedAction.COMPONENT_RESET, no_reset, ["GPU-a"]) is Rung.REBOOT


@pytest.mark.parametrize(
    "outcome", [ResetOutcome.UNANSWERED, ResetOutcome.FAILED, ResetOutcome.UNHEALTHY, ResetOutcome.OUTGROWN]
)
def test_a_reset_that_did_not_repair_falls_back_to_a_reboot(outcome: ResetOutcome) -> None:
    assert decisions.after_reset(ResetOutcome.REPAIRED, RepairPolicy()) is Rung.DONE
    assert decisions.after_reset(outcome, RepairPolicy()) is Rung.REBOOT
    assert decisions.after_reset(outcome, RepairPolicy(graceful_timeout=timedelta(minutes=1))) is Rung.REBOOT_GRACEFULLY


def test_a_node_deleted_mid_repair_ends_the_ladder() -> None:
    gone = state().model_copy(update={"exists": False})

    assert decisions.after_reset(ResetOutcome.NODE_DELETED, RepairPolicy()) is Rung.GONE
    assert decisions.after_graceful_wait(reboot(graceful=True), gone) is Rung.GONE
    assert decisions.after_node_wait(reboot(), gone) is Rung.GONE
    assert decisions.still_held(gone) == decisions.node_deleted("n1")


def test_a_graceful_restart_is_waited_for_then_forced_unless_the_node_left_its_boot() -> None:
    asked = reboot(graceful=True)

    assert decisions.after_reboot_request(Rung.REBOOT_GRACEFULLY, asked) is Rung.AWAIT_GRACEFUL
    assert decisions.after_reboot_request(Rung.REBOOT_GRACEFULLY, reboot()) is Rung.AWAIT_NODE, "no graceful restart"
    assert decisions.after_reboot_request(Rung.REBOOT, asked) is Rung.AWAIT_NODE, "a late graceful one was found"
    assert decisions.after_graceful_wait(asked, state(boot_id="boot-1")) is Rung.REBOOT
    assert decisions.after_graceful_wait(asked, state(boot_id="boot-2", ready=False)) is Rung.AWAIT_NODE


def test_verification_resolves_only_on_gpus_proven_healthy_after_the_repair() -> None:
    bar = HealthBar(boot_id_before="boot-1")
    healthy = GpuHealthReport(status="True", message="", boot_id="boot-2", reported_at=NOW)
    proven = state().model_copy(update={"gpu_report": healthy})

    assert decisions.after_verify(GpusHealthy(bar=bar), proven, timedelta(minutes=5)) == decisions.RESOLVED
    silent = decisions.after_verify(GpusHealthy(bar=bar), state(), timedelta(minutes=5))
    assert silent.next is Next.ESCALATE
    assert silent.reason.startswith("GPUs did not report healthy within 0:05:00: the node has no GpuHealthy condition")


def test_a_node_back_on_a_new_boot_is_verified_else_escalated() -> None:
    assert decisions.after_node_wait(reboot(), state()) is Rung.VERIFY
    assert decisions.after_node_wait(reboot(), state(boot_id="boot-1")) is Rung.ESCALATE
    assert decisions.after_node_wait(reboot(), state(ready=False)) is Rung.ESCALATE
    assert decisions.after_node_wait(reboot(expects_new_boot=False), state(boot_id="boot-1")) is Rung.VERIFY


def test_auto_approval_must_come_before_the_approval_timeout() -> None:
    with pytest.raises(ValueError, match="auto_approve_after must be positive and shorter than"):
        RepairPolicy(auto_approve_after=timedelta(hours=24), approval_timeout=timedelta(hours=24))


def test_auto_approval_cannot_stand_in_for_the_person_who_repairs() -> None:
    with pytest.raises(ValueError, match="provider manual"):
        RepairPolicy(provider="manual", auto_approve_after=timedelta(hours=1))


@pytest.mark.parametrize(
    ("action", "after_reset", "asks"),
    [
        (RecommendedAction.RESTART_VM, True, True),  # a reset that fell back to a reboot
        (RecommendedAction.RESTART_BM, False, True),  # a bare-metal fault raised mid-repair
        (RecommendedAction.RESTART_VM, False, False),  # the policy names bare-metal reboots only
    ],
)
def test_a_reboot_asks_a_person_as_the_policy_names_its_kind(
    action: RecommendedAction, after_reset: bool, asks: bool
) -> None:
    policy = RepairPolicy(approval_for=frozenset({RecommendedAction.RESTART_BM}))

    assert decisions.reboot_needs_approval(policy, action, after_reset, None) is asks
    decided = RecordedDecision(approved=True, approver="a", reason="b", at=datetime.now(UTC))
    assert decisions.reboot_needs_approval(policy, action, after_reset, decided) is False, "approved once is approved"


# ---- held for a person ----------------------------------------------------------------------


RESUME = RecordedAction(action="resume", by="alice", reason="replaced GPU 3", at=NOW)


def test_a_person_acts_only_on_an_escalated_run_that_is_not_busy_with_an_earlier_action() -> None:
    decisions.check_person_action(True, Phase.ESCALATED, None, "alice", "fixed")
    with pytest.raises(decisions.DecisionRefused, match=r"not escalated \(phase Draining\)"):
        decisions.check_person_action(False, Phase.DRAINING, None, "alice", "fixed")
    with pytest.raises(decisions.DecisionRefused, match="already resumed by alice at 2026-01-01T00:00:00"):
        decisions.check_person_action(False, Phase.ESCALATED, RESUME, "bob", "again")
    with pytest.raises(ActionRefused, match=r"say who acts \(by\)"):
        decisions.check_person_action(True, Phase.ESCALATED, None, " ", "fixed")


def test_a_release_ends_released_and_says_how_the_node_is_left() -> None:
    release = RESUME.model_copy(update={"action": "release", "reason": "RMA"})
    back = decisions.released(release, keep_cordoned=False)
    kept = decisions.released(release, keep_cordoned=True)

    assert (back.phase, back.release, back.reason) == (
        Phase.RELEASED,
        Outcome.RESOLVED,
        "released by alice unrepaired: RMA",
    )
    assert (kept.phase, kept.release) == (Phase.RELEASED, Outcome.STOOD_DOWN), "gpuheal's marks go, the cordon stays"
    assert decisions.RETRY.ends is False


def test_a_resumed_node_must_be_ready_and_report_healthy_since_it_escalated_or_on_a_new_boot() -> None:
    ready, healthy = decisions.resume_checks("boot-1", NOW, RESUME)
    timeout = timedelta(minutes=5)

    def report(boot: str, at: datetime) -> NodeState:
        gpu = GpuHealthReport(status="True", boot_id=boot, reported_at=at)
        return state(boot_id=boot).model_copy(update={"gpu_report": gpu, "gpu_healthy": True})

    assert decisions.after_resume_check(RESUME, ready, state(boot_id="boot-1"), timeout) == decisions.PROCEED
    not_ready = decisions.after_resume_check(RESUME, ready, state(ready=False), timeout)
    assert not_ready.next is Next.ESCALATE and "resumed by alice, but " in not_ready.reason
    assert "not Ready" in not_ready.reason
    stale = decisions.after_resume_check(RESUME, healthy, report("boot-1", NOW - timedelta(seconds=1)), timeout)
    assert stale.next is Next.ESCALATE and "before the escalation at" in stale.reason
    fresh = report("boot-1", NOW + timedelta(seconds=1))
    assert decisions.after_resume_check(RESUME, healthy, fresh, timeout) == decisions.PROCEED
    rebooted = report("boot-2", NOW - timedelta(hours=1))
    assert decisions.after_resume_check(RESUME, healthy, rebooted, timeout) == decisions.PROCEED
    gone = state().model_copy(update={"exists": False})
    assert decisions.after_resume_check(RESUME, healthy, gone, timeout).next is Next.FAIL
    assert decisions.resumed(RESUME).next is Next.RESOLVE


def test_a_repair_that_did_not_hold_is_replaced_only_where_the_policy_allows_and_no_person_is_asked_for() -> None:
    replacing = RepairPolicy(replace=True)
    person = RepairPolicy(replace=True, strategies={RecommendedAction.RESTART_BM: RepairStrategy.PERSON})

    assert decisions.beyond_repair(replacing, RecommendedAction.RESTART_BM, "why") == Verdict(Next.REPLACE, "why")
    assert decisions.beyond_repair(RepairPolicy(), RecommendedAction.RESTART_BM, "why") == decisions.escalate("why")
    assert decisions.beyond_repair(person, RecommendedAction.RESTART_BM, "why") == decisions.escalate("why")
    assert decisions.beyond_repair(person, RecommendedAction.RESTART_VM, "why").next is Next.REPLACE


def test_a_replacement_ends_once_the_node_is_gone_and_a_node_that_stays_goes_to_a_person() -> None:
    gone = NodeWaitResult(reached=True, state=state().model_copy(update={"exists": False}))
    stays = NodeWaitResult(reached=False, state=state())

    replaced = decisions.after_replacement("not back", "terminated i-0abc", gone, timedelta(minutes=15))
    stuck = decisions.after_replacement("not back", "terminated i-0abc", stays, timedelta(minutes=15))

    assert (replaced.next, replaced.phase, replaced.release) == (Next.REPLACED, Phase.REPLACED, None)
    assert replaced.reason == "not back; replaced: terminated i-0abc, and the node was deleted"
    assert Phase.REPLACED.is_final and not Phase.REPLACING.is_final
    assert stuck == decisions.escalate(
        "not back; the machine was terminated (terminated i-0abc) but the node was not deleted within 0:15:00"
    )
    assert NodeGone().met(gone.state) and NodeGone().missing(state()) == "the node object still exists"


def test_replacement_needs_a_provider_with_machines() -> None:
    with pytest.raises(ValueError, match=r"repair\.replace: the manual provider has no machine to terminate"):
        RepairPolicy(replace=True, provider="manual")
    with pytest.raises(ValueError, match="replace_timeout"):
        RepairPolicy(replace=True, replace_timeout=timedelta(0))


def test_a_gpu_check_resolves_when_passed_and_keeps_the_node_out_otherwise() -> None:
    validation = ValidationPolicy(level=3, timeout=timedelta(minutes=40))
    repair = RepairPolicy(replace=True)

    def checked(report: GpuCheckReport | None, *, exists: bool = True) -> Verdict:
        answered = state().model_copy(update={"gpu_check": report, "exists": exists})
        wait = NodeWaitResult(reached=report is not None or not exists, state=answered)
        return decisions.after_gpu_check(wait, validation, repair, RecommendedAction.RESTART_BM)

    passed = GpuCheckReport(id="c", ok=True, detail="all passed", tool="nvml", at=NOW)
    assert checked(passed) == decisions.RESOLVED
    failed = checked(passed.model_copy(update={"ok": False, "detail": "GPU 2 lost", "conclusive": True}))
    assert failed == Verdict(Next.REPLACE, "the GPUs failed the level 3 GPU check (nvml): GPU 2 lost")
    unproven = checked(passed.model_copy(update={"ok": False, "detail": "GPU checks are off", "tool": ""}))
    assert unproven == decisions.escalate("the level 3 GPU check proved nothing: GPU checks are off")
    assert checked(None) == decisions.escalate("the node's agent did not answer the level 3 GPU check within 0:40:00")
    assert checked(None, exists=False).next is Next.FAIL


def test_a_node_on_a_new_boot_after_a_termination_is_a_new_machine_under_the_old_name() -> None:
    gone = NodeGone(boot_id_before="boot-1")
    recreated = state(boot_id="boot-2")

    assert gone.met(recreated) and not gone.met(state(boot_id="boot-1")) and not NodeGone().met(recreated)
    verdict = decisions.after_replacement(
        "not back", "terminated", NodeWaitResult(reached=True, state=recreated), timedelta(minutes=15)
    )
    assert verdict == Verdict(Next.REPLACED, "not back; replaced: terminated, and a new machine took the node's name")
