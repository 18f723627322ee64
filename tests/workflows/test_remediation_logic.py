"""RemediationWorkflow's decisions and durable waits, on Temporal's time-skipping test server.

Approval timeouts of a day and node timeouts of half an hour pass in an instant here, so these tests
cover every path of the workflow with real timers and signals, against the in-memory FakeNode.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta

from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from gpuheal.control import remediations
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.budgets import DisruptionBudget
from gpuheal.domain.faults import Fault
from gpuheal.domain.phases import Phase
from gpuheal.domain.policy import DrainPolicy, RemediationPolicy, RepairPolicy
from gpuheal.domain.remediation import ApprovalSignal, RemediationStatus
from gpuheal.domain.steps import Outcome
from gpuheal.workflows import search_attributes as attrs
from gpuheal.workflows.remediation import RemediationWorkflow
from tests.workflows.fake_activities import FakeNode

Handle = WorkflowHandle[RemediationWorkflow, RemediationStatus]


def policy(*, approval: bool = False, approval_timeout: timedelta = timedelta(hours=24)) -> RemediationPolicy:
    return RemediationPolicy(
        drain=DrainPolicy(timeout=timedelta(minutes=30), delete_after=timedelta(minutes=10)),
        repair=RepairPolicy(
            provider="simulator",
            require_approval=approval,
            approval_timeout=approval_timeout,
            node_ready_timeout=timedelta(minutes=30),
            verify_timeout=timedelta(minutes=5),
        ),
    )


def fault(node: FakeNode, action: RecommendedAction = RecommendedAction.RESTART_BM, xid: int = 79) -> Fault:
    return Fault(node=node.name, action=action, xid=xid, gpu_uuids=("GPU-aaaa",), event_id=str(uuid.uuid4()))


async def start(env: WorkflowEnvironment, queue: str, node: FakeNode, **kwargs: object) -> Handle:
    return await remediations.report_fault(env.client, fault(node), policy(**kwargs), task_queue=queue)  # type: ignore[arg-type]


async def wait_for_phase(handle: Handle, phase: Phase) -> RemediationStatus:
    for _ in range(200):
        status = await handle.query(RemediationWorkflow.status)
        if status.phase is phase:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"never reached {phase}; last {status.phase}")


async def settled(handle: Handle) -> RemediationStatus:
    """The remediation once it ended, or escalated and is held for a person (still running).

    The result is awaited in short polls, so that the test server skips the waits on the way (timeouts
    of hours) and locks its clock again after each: a poll that runs out of time fails and locks it,
    where a cancelled one could leave the clock unlocked for the tests after it.
    """
    for _ in range(300):  # a minute at least: a drain of hundreds of passes takes seconds on a busy machine
        try:
            return await handle.result(rpc_timeout=timedelta(milliseconds=200))
        except RPCError as error:  # the poll's time ran out (the SDK reports it as CANCELLED)
            if error.status not in (RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED):
                raise
        status = await handle.query(RemediationWorkflow.status)
        if status.phase is Phase.ESCALATED:
            return status
    raise AssertionError(f"never settled; last {status.phase}")


async def escalated(handle: Handle) -> RemediationStatus:
    """The remediation once escalated: held for a person, and still running."""
    status = await settled(handle)
    assert status.phase is Phase.ESCALATED, f"{status.phase}: {status.reason}"
    assert (await handle.describe()).status is WorkflowExecutionStatus.RUNNING, "an escalated remediation stays open"
    return status


async def test_approval_resumes_the_repair_and_records_who_approved(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    handle = await start(time_skipping_env, queue, node, approval=True)
    await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    assert node.reboots == 0, "nothing is repaired before the approval"

    await remediations.send_decision(
        time_skipping_env.client, node.name, ApprovalSignal(approver="alice", reason="ok"), approve=True
    )
    status = await handle.result()

    assert status.phase is Phase.RESOLVED
    assert status.decision is not None
    assert (status.decision.approved, status.decision.approver, status.decision.reason) == (True, "alice", "ok")
    assert node.reboots == 1
    assert [r.outcome for r in node.releases] == [Outcome.RESOLVED]
    assert [e.phase for e in status.history] == [
        Phase.DETECTED,
        Phase.QUARANTINED,
        Phase.DRAINING,
        Phase.DRAINED,
        Phase.AWAITING_APPROVAL,
        Phase.REPAIRING,
        Phase.WAITING_FOR_NODE,
        Phase.VERIFYING,
        Phase.RESOLVED,
    ]


async def test_reject_escalates_and_leaves_the_node_cordoned(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    handle = await start(time_skipping_env, queue, node, approval=True)
    await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    await remediations.send_decision(
        time_skipping_env.client, node.name, ApprovalSignal(approver="bob", reason="rma"), approve=False
    )
    status = await escalated(handle)

    assert status.phase is Phase.ESCALATED
    assert "rejected by bob: rma" in status.reason
    assert node.reboots == 0
    assert node.cordoned
    assert [r.outcome for r in node.releases] == [Outcome.ESCALATED]


async def test_approval_timeout_escalates(time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode) -> None:
    handle = await start(time_skipping_env, queue, node, approval=True, approval_timeout=timedelta(hours=6))
    status = await escalated(handle)  # the test server skips the six hours

    assert status.phase is Phase.ESCALATED
    assert status.reason == "no approval within 6:00:00"
    assert node.reboots == 0
    assert node.cordoned


async def test_a_fault_only_a_person_can_fix_waits_for_approval_without_manual_policy(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    handle = await remediations.report_fault(
        time_skipping_env.client, fault(node, RecommendedAction.CONTACT_SUPPORT, xid=1), policy(), task_queue=queue
    )
    status = await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    assert status.action is RecommendedAction.CONTACT_SUPPORT
    await handle.signal(RemediationWorkflow.approve, ApprovalSignal(approver="carol"))
    assert (await handle.result()).phase is Phase.RESOLVED


async def test_node_that_never_comes_back_escalates_with_the_last_state(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.comes_back = False
    status = await escalated(await start(time_skipping_env, queue, node))

    assert status.phase is Phase.ESCALATED
    assert "did not come back Ready with a new bootID within 0:30:00" in status.reason
    assert "last seen ready=False" in status.reason
    assert node.reboots == 1
    assert [r.outcome for r in node.releases] == [Outcome.ESCALATED]


async def test_gpus_still_unhealthy_after_the_reboot_escalate(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.gpus_healthy_after_reboot = None
    status = await escalated(await start(time_skipping_env, queue, node))

    assert status.phase is Phase.ESCALATED
    assert "no GpuHealthy condition" in status.reason


async def test_gpu_health_reported_before_the_reboot_does_not_resolve(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    """A GpuHealthy=True left from before the reboot proves nothing: the agent never reported after it."""
    node.agent_reports(True)  # True on boot-1, before the fault was even reported
    node.agent_reports_after_reboot = False
    status = await escalated(await start(time_skipping_env, queue, node))

    assert node.reboots == 1 and node.boot_id == "boot-2"
    assert status.phase is Phase.ESCALATED, "a stale GpuHealthy=True must not resolve the remediation"
    assert "GPUs did not report healthy within 0:05:00" in status.reason
    assert "GpuHealthy=True was reported on boot boot-1, before the reboot" in status.reason
    assert [r.outcome for r in node.releases] == [Outcome.ESCALATED]


async def _manual_repair(env: WorkflowEnvironment, queue: str, node: FakeNode) -> tuple[Handle, RemediationStatus]:
    """A remediation whose repair a person does (provider "manual"), held at its approval."""
    node.manual_provider = True
    manual = policy(approval=True)
    manual = manual.model_copy(update={"repair": manual.repair.model_copy(update={"provider": "manual"})})
    handle = await remediations.report_fault(env.client, fault(node), manual, task_queue=queue)
    return handle, await wait_for_phase(handle, Phase.AWAITING_APPROVAL)


def quarantined_at(status: RemediationStatus) -> datetime:
    return next(entry.entered_at for entry in status.history if entry.phase is Phase.QUARANTINED)


async def test_a_person_who_rebooted_the_node_before_approving_resolves_it(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    """The manual provider: the person's reboot happened before the step that records it."""
    handle, waiting = await _manual_repair(time_skipping_env, queue, node)
    node.boot_id = "boot-2"  # the person rebooted the machine; its agent reported on the new boot
    node.agent_reports(True, at=quarantined_at(waiting) - timedelta(seconds=30))
    await handle.signal(RemediationWorkflow.approve, ApprovalSignal(approver="erin", reason="reseated GPU 3"))

    status = await handle.result()
    assert status.phase is Phase.RESOLVED, status.reason
    assert node.reboots == 0


async def test_a_person_who_repaired_without_rebooting_resolves_on_a_report_after_the_quarantine(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    handle, waiting = await _manual_repair(time_skipping_env, queue, node)
    node.agent_reports(True, at=quarantined_at(waiting) + timedelta(seconds=1))
    await handle.signal(RemediationWorkflow.approve, ApprovalSignal(approver="erin"))

    status = await handle.result()
    assert status.phase is Phase.RESOLVED, status.reason


async def test_a_manual_repair_is_not_proven_by_a_report_from_before_the_quarantine(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    handle, waiting = await _manual_repair(time_skipping_env, queue, node)
    node.agent_reports(True, at=quarantined_at(waiting) - timedelta(minutes=5))  # a True from before the fault
    await handle.signal(RemediationWorkflow.approve, ApprovalSignal(approver="erin"))

    status = await escalated(handle)
    assert status.phase is Phase.ESCALATED
    assert "before the quarantine" in status.reason, status.reason


async def test_disruption_budget_is_retried_on_durable_timers_until_it_frees(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.blocked_passes = 6
    status = await (await start(time_skipping_env, queue, node)).result()

    assert status.phase is Phase.RESOLVED
    assert node.steps.count("drain_node") == 7
    # DeleteAfterTimeout pods become overdue only once the drain has run for delete_after.
    assert not node.drain_requests[0].delete_overdue


async def test_drain_that_never_finishes_escalates_naming_the_pods(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.blocked_passes = 10_000
    status = await escalated(await start(time_skipping_env, queue, node))

    assert status.phase is Phase.ESCALATED
    assert "drain did not finish within 0:30:00: 1 pod(s) remain (ml/trainer-0)" in status.reason
    assert any(r.delete_overdue for r in node.drain_requests), "DeleteAfterTimeout pods were never made overdue"
    assert node.reboots == 0


def budget(**status: object) -> DisruptionBudget:
    """The trainer's budget as a drain pass read it: synced, 4 pods expected, allowing nothing now."""
    fields: dict[str, object] = {
        "namespace": "ml",
        "name": "trainer-pdb",
        "min_available": 3,
        "generation": 1,
        "observed_generation": 1,
        "expected_pods": 4,
        "desired_healthy": 3,
        "current_healthy": 3,
        "disruptions_allowed": 0,
        "condition_reason": "InsufficientPods",
    }
    return DisruptionBudget.model_validate({**fields, **status})


async def test_a_budget_that_can_never_allow_a_disruption_escalates_naming_it(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.blocked_passes = 10_000
    node.blocking_budgets = [budget(min_available=4, desired_healthy=4, current_healthy=4)]
    status = await escalated(await start(time_skipping_env, queue, node))

    assert status.phase is Phase.ESCALATED
    assert status.reason == (
        "drain cannot finish: pod ml/trainer-0 is held by PodDisruptionBudget ml/trainer-pdb, which can never "
        "allow a disruption: it needs 4 healthy pod(s) and expects 4, so no pod it guards may ever go"
    )
    held_for = _time_in(status, Phase.DRAINING)
    assert timedelta(minutes=2) <= held_for < timedelta(minutes=3), (
        f"escalated {held_for} into the drain: once the budget said so for drain.never_allows_for, not at the timeout"
    )
    assert [r.outcome for r in node.releases] == [Outcome.ESCALATED]
    assert node.reboots == 0


def _time_in(status: RemediationStatus, phase: Phase) -> timedelta:
    """How long the remediation stayed in `phase` (until the next phase began)."""
    entries = status.history
    index = next(i for i, entry in enumerate(entries) if entry.phase is phase)
    return entries[index + 1].entered_at - entries[index].entered_at


async def test_a_budget_the_controller_cannot_compute_escalates_with_its_message(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.blocked_passes = 10_000
    why = "jobs.batch does not implement the scale subresource"
    node.blocking_budgets = [
        budget(max_unavailable=1, min_available=None, condition_reason="SyncFailed", condition_message=why)
    ]
    status = await escalated(await start(time_skipping_env, queue, node))

    assert status.phase is Phase.ESCALATED
    assert "PodDisruptionBudget ml/trainer-pdb" in status.reason and status.reason.endswith(why)
    assert timedelta(minutes=2) <= _time_in(status, Phase.DRAINING) < timedelta(minutes=3)


async def test_a_sync_failure_that_clears_within_the_confirmation_window_does_not_escalate(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    """A SyncFailed the controller recovers from (a lookup that failed once) is not a budget that never allows."""
    failing = budget(max_unavailable=1, min_available=None, condition_reason="SyncFailed", condition_message="boom")
    node.blocked_passes = 9  # passes after 0, 1, 3, 7, 15, 31, 61, 91 s: seven of them under a failed sync
    node.blocking_budgets = [failing] * 7 + [budget(max_unavailable=1, min_available=None)]
    status = await (await start(time_skipping_env, queue, node)).result()

    assert status.phase is Phase.RESOLVED, status.reason
    assert node.reboots == 1


async def test_a_budget_exhausted_for_now_is_retried_until_it_frees(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.blocked_passes = 6
    # Once, the status was read while the controller caught up with an edit that fixed the budget.
    never = budget(max_unavailable=0, min_available=None)
    node.blocking_budgets = [budget(), never, budget(), budget()]
    status = await (await start(time_skipping_env, queue, node)).result()

    assert status.phase is Phase.RESOLVED, status.reason
    assert node.steps.count("drain_node") == 7
    assert node.reboots == 1


async def test_a_pod_the_api_refuses_is_retried_and_named_when_the_drain_times_out(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.failed_passes = 10_000
    status = await escalated(await start(time_skipping_env, queue, node))

    assert status.phase is Phase.ESCALATED
    assert status.reason.startswith("drain did not finish within 0:30:00: 1 pod(s) remain (ml/trainer-0)")
    assert status.reason.endswith(
        "; eviction failed for ml/trainer-0 (HTTP 500: This pod has more than one PodDisruptionBudget, which the "
        "eviction subresource does not support.)"
    )
    assert node.steps.count("drain_node") > 2


async def test_a_pod_the_api_refused_once_goes_on_a_later_pass(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.failed_passes = 2
    status = await (await start(time_skipping_env, queue, node)).result()

    assert status.phase is Phase.RESOLVED, status.reason
    assert node.steps.count("drain_node") == 3


async def test_uncordon_by_a_person_stands_down(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.uncordon_during_drain = True
    status = await (await start(time_skipping_env, queue, node)).result()

    assert status.phase is Phase.CANCELLED
    assert "uncordoned" in status.reason
    assert [r.outcome for r in node.releases] == [Outcome.STOOD_DOWN]
    assert node.reboots == 0


async def test_unmanaged_node_is_never_touched(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.managed = False
    status = await (await start(time_skipping_env, queue, node)).result()

    assert status.phase is Phase.CANCELLED
    assert "gpuheal.io/managed=false" in status.reason
    assert node.writes == ["quarantine_node"]
    assert not node.cordoned


async def test_second_fault_joins_and_only_raises_the_action(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    client = time_skipping_env.client
    first = await remediations.report_fault(
        client, fault(node, RecommendedAction.COMPONENT_RESET, xid=48), policy(approval=True), task_queue=queue
    )
    await wait_for_phase(first, Phase.AWAITING_APPROVAL)
    raised = await remediations.report_fault(client, fault(node, RecommendedAction.RESTART_BM, 79), task_queue=queue)
    lowered = await remediations.report_fault(
        client, fault(node, RecommendedAction.COMPONENT_RESET, 119), task_queue=queue
    )
    assert raised.result_run_id == lowered.result_run_id == first.result_run_id, "faults joined the same run"

    status = await first.query(RemediationWorkflow.status)
    assert status.action is RecommendedAction.RESTART_BM
    assert status.xids == [48, 79, 119]
    assert status.faults == 3
    described = await first.describe()
    assert described.typed_search_attributes.get(attrs.ACTION) == "RESTART_BM"
    assert described.typed_search_attributes.get(attrs.PHASE) == "AwaitingApproval"
    await first.signal(RemediationWorkflow.approve, ApprovalSignal(approver="dave"))
    assert (await first.result()).phase is Phase.RESOLVED


async def test_operator_cancel_hands_the_node_back(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    handle = await start(time_skipping_env, queue, node, approval=True)
    await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    assert node.cordoned

    await handle.cancel()
    status = await handle.result()

    assert status.phase is Phase.CANCELLED
    assert "cancelled by an operator" in status.reason
    assert [r.outcome for r in node.releases] == [Outcome.RESOLVED]
    assert not node.cordoned, "gpuheal's cordon is undone"
    assert node.reboots == 0
