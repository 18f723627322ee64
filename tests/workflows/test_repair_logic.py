"""How RemediationWorkflow repairs a node: GPU reset or reboot, graceful first, and proof it came back.

On Temporal's time-skipping server against the in-memory FakeNode, so the reset and node timeouts
pass in an instant while the workflow's real timers, retries and decisions run.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from gpuheal.control import remediations
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.faults import Fault
from gpuheal.domain.gpu_reset import GpuResetReport
from gpuheal.domain.marks import workflow_id_for
from gpuheal.domain.phases import Phase
from gpuheal.domain.policy import RemediationPolicy, RepairPolicy, StepTimeouts
from gpuheal.domain.remediation import ApprovalSignal, RemediationStatus
from gpuheal.domain.steps import Outcome, Step
from gpuheal.workflows.remediation import RemediationWorkflow
from tests.workflows.fake_activities import FakeNode
from tests.workflows.test_remediation_logic import Handle, settled


async def remediate(
    env: WorkflowEnvironment,
    queue: str,
    node: FakeNode,
    action: RecommendedAction = RecommendedAction.RESTART_VM,
    **repair: object,
) -> RemediationStatus:
    policy = RemediationPolicy(
        repair=RepairPolicy.model_validate(
            {"node_ready_timeout": timedelta(minutes=10), "gpu_reset_timeout": timedelta(minutes=2), **repair}
        ),
        timeouts=StepTimeouts(provider_attempts=4),
    )
    fault = Fault(node=node.name, action=action, xid=79, gpu_uuids=("GPU-aaaa",), event_id=node.name)
    handle = await remediations.report_fault(env.client, fault, policy, task_queue=queue)
    return await settled(handle)


async def test_a_confirmed_gpu_reset_repairs_without_a_reboot(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    status = await remediate(time_skipping_env, queue, node, RecommendedAction.COMPONENT_RESET)

    assert status.phase is Phase.RESOLVED
    assert node.reboots == 0
    assert [order.gpus for order in node.reset_orders] == [["GPU-aaaa"]]
    assert status.repair == ["GPU reset: reset GPU-aaaa"]
    assert status.action is RecommendedAction.COMPONENT_RESET
    assert [r.outcome for r in node.releases] == [Outcome.RESOLVED]


async def test_a_failed_gpu_reset_falls_back_to_a_reboot(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.reset_outcome = "fail"
    status = await remediate(time_skipping_env, queue, node, RecommendedAction.COMPONENT_RESET)

    assert status.phase is Phase.RESOLVED
    assert node.reboots == 1
    assert status.repair[0] == "GPU reset did not repair the node (nvidia-smi: GPU is in use); rebooting instead"
    assert status.repair[1].startswith("reboot via fake")
    assert status.action is RecommendedAction.RESTART_VM, "the reset became a reboot"
    assert node.steps.index(Step.WITHDRAW_GPU_RESET.value) < node.steps.index(Step.REBOOT.value), (
        "the order is taken back before the reboot, so a late agent never resets afterwards"
    )


async def test_an_unanswered_gpu_reset_falls_back_to_a_reboot_after_its_timeout(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.reset_outcome = "silent"
    status = await remediate(time_skipping_env, queue, node, RecommendedAction.COMPONENT_RESET)

    assert status.phase is Phase.RESOLVED
    assert node.reboots == 1
    assert "did not answer within 0:02:00" in status.repair[0]


async def test_gpus_still_unhealthy_after_a_reset_fall_back_to_a_reboot(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.gpus_healthy_after_reset = False
    status = await remediate(
        time_skipping_env, queue, node, RecommendedAction.COMPONENT_RESET, verify_timeout=timedelta(minutes=1)
    )

    assert status.phase is Phase.RESOLVED
    assert node.reboots == 1
    assert "GPUs did not report healthy" in status.repair[1]


async def test_gpu_health_reported_before_the_reset_answer_falls_back_to_a_reboot(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    """A GpuHealthy=True written before the agent answered the reset says nothing about the reset GPUs."""
    node.agent_reports(True)
    node.agent_reports_after_reset = False
    status = await remediate(
        time_skipping_env, queue, node, RecommendedAction.COMPONENT_RESET, verify_timeout=timedelta(minutes=1)
    )

    assert node.reboots == 1, "the unproven reset became a reboot"
    assert "before the GPU reset's answer" in status.repair[1], status.repair
    assert status.phase is Phase.RESOLVED, "the agent reported on the boot after the reboot"


async def test_gpu_reset_turned_off_reboots_at_once(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    status = await remediate(time_skipping_env, queue, node, RecommendedAction.COMPONENT_RESET, gpu_reset=False)

    assert status.phase is Phase.RESOLVED
    assert node.reset_orders == []
    assert node.reboots == 1


async def test_a_node_back_ready_on_its_old_boot_is_not_accepted(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.keeps_boot_id = True
    status = await remediate(time_skipping_env, queue, node)

    assert status.phase is Phase.ESCALATED
    assert "did not come back Ready with a new bootID within 0:10:00" in status.reason
    assert "provider fake: instance stopped by the cloud" in status.reason, "the provider's last known state"
    assert "bootID=boot-1, before boot-1" in status.reason
    assert node.cordoned
    assert node.reboots == 1


async def test_throttled_reboot_requests_are_retried_until_one_gets_through(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.provider_errors = [ApplicationError("EC2 RequestLimitExceeded", type="ProviderError") for _ in range(3)]
    status = await remediate(time_skipping_env, queue, node)

    assert status.phase is Phase.RESOLVED
    assert node.steps.count(Step.REBOOT.value) == 4
    assert node.reboots == 1


async def test_a_provider_refusal_escalates_with_its_message(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.provider_errors = [
        ApplicationError("EC2 instance i-0abc does not exist (InvalidInstanceID.NotFound)", non_retryable=True)
    ]
    status = await remediate(time_skipping_env, queue, node)

    assert status.phase is Phase.ESCALATED
    assert (
        status.reason
        == "the reboot could not be requested: EC2 instance i-0abc does not exist (InvalidInstanceID.NotFound)"
    )
    assert node.steps.count(Step.REBOOT.value) == 1, "not retried"
    assert node.cordoned
    assert [r.outcome for r in node.releases] == [Outcome.ESCALATED]


async def test_a_provider_that_stays_throttled_escalates_after_the_attempts_run_out(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.provider_errors = [ApplicationError("GCE rateLimitExceeded", type="ProviderError") for _ in range(10)]
    status = await remediate(time_skipping_env, queue, node)

    assert status.phase is Phase.ESCALATED
    assert "GCE rateLimitExceeded" in status.reason
    assert node.steps.count(Step.REBOOT.value) == 4
    assert node.reboots == 0


async def test_a_graceful_restart_that_does_not_happen_is_forced(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.graceful_supported = True
    node.graceful_restarts = False
    status = await remediate(time_skipping_env, queue, node, graceful_timeout=timedelta(minutes=5))

    assert status.phase is Phase.RESOLVED
    assert [request.graceful for request in node.reboot_requests] == [True, False]
    assert node.reboots == 1


async def test_a_graceful_restart_that_happens_is_not_forced(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.graceful_supported = True
    status = await remediate(time_skipping_env, queue, node, graceful_timeout=timedelta(minutes=5))

    assert status.phase is Phase.RESOLVED
    assert [request.graceful for request in node.reboot_requests] == [True]
    assert status.repair[0].startswith("graceful reboot via fake")


async def test_graceful_asked_of_a_provider_without_one_reboots_once(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    status = await remediate(time_skipping_env, queue, node, graceful_timeout=timedelta(minutes=5))

    assert status.phase is Phase.RESOLVED
    assert len(node.reboot_requests) == 1
    assert node.reboots == 1


async def reset_outgrown_by(env: WorkflowEnvironment, queue: str, node: FakeNode, worse: RecommendedAction) -> Handle:
    """A GPU reset under way when a fault needing `worse` joins; the agent then confirms the reset."""
    node.reset_outcome = "late"
    policy = RemediationPolicy(repair=RepairPolicy(gpu_reset_timeout=timedelta(minutes=2)))
    first = Fault(node=node.name, action=RecommendedAction.COMPONENT_RESET, gpu_uuids=("GPU-aaaa",), event_id="a")
    handle = await remediations.report_fault(env.client, first, policy, task_queue=queue)
    while not node.reset_orders:
        await asyncio.sleep(0.05)
    joined = Fault(node=node.name, action=worse, xid=79, event_id="b")
    await remediations.report_fault(env.client, joined, policy, task_queue=queue)
    while (await handle.query(RemediationWorkflow.status)).action is not worse:
        await asyncio.sleep(0.05)  # the workflow has taken the new fault in before the agent answers
    node.reset_outcome = "confirm"
    node.reset_report = GpuResetReport(
        id=node.reset_orders[0].holder, ok=True, detail="reset GPU-aaaa", at=datetime.now(UTC)
    )
    return handle


async def test_a_fault_needing_a_reboot_during_the_reset_still_reboots(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    handle = await reset_outgrown_by(time_skipping_env, queue, node, RecommendedAction.RESTART_BM)

    status = await handle.result()

    assert status.phase is Phase.RESOLVED
    assert node.reboots == 1, "the reset alone cannot fix a fault that needs a reboot"
    assert "a fault needing RESTART_BM arrived during the reset" in status.repair[1]


async def test_an_operator_cancel_while_waiting_for_the_node_hands_it_back(
    own_time_skipping_env: WorkflowEnvironment, node: FakeNode
) -> None:
    """The wait is an activity: the cancel reaches the workflow as that activity's failure, not as a timer's."""
    env = own_time_skipping_env
    node.reset_outcome = "late"
    fault = Fault(
        node=node.name, action=RecommendedAction.COMPONENT_RESET, xid=79, gpu_uuids=("GPU-aaaa",), event_id="c"
    )
    async with Worker(env.client, task_queue="cancel", workflows=[RemediationWorkflow], activities=node.activities()):
        handle = await remediations.report_fault(env.client, fault, RemediationPolicy(), task_queue="cancel")
        while Step.WAIT_FOR_NODE.value not in node.steps:
            await asyncio.sleep(0.05)

        await handle.cancel()
        status = await handle.result()
        await node.answer_late_waits()

    assert status.phase is Phase.CANCELLED, status.reason
    assert [r.outcome for r in node.releases] == [Outcome.RESOLVED]


async def test_an_operator_cancel_while_the_provider_is_retried_hands_the_node_back(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.provider_errors = [ApplicationError("ARM 429", type="ProviderError") for _ in range(50)]
    policy = RemediationPolicy(timeouts=StepTimeouts(provider_attempts=50))
    fault = Fault(node=node.name, action=RecommendedAction.RESTART_VM, xid=79, event_id="c")
    handle = await remediations.report_fault(time_skipping_env.client, fault, policy, task_queue=queue)
    while node.steps.count(Step.REBOOT.value) < 2:
        await asyncio.sleep(0.05)

    await handle.cancel()
    status = await handle.result()

    assert status.phase is Phase.CANCELLED
    assert [r.outcome for r in node.releases] == [Outcome.RESOLVED]
    assert node.reboots == 0


async def test_a_reboot_step_that_runs_out_of_attempts_on_kubernetes_runs_again(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    # The API server is down longer than the step's attempts last; the provider never failed.
    node.provider_errors = [ApplicationError("Kubernetes API: 503", type="ApiException") for _ in range(6)]
    status = await remediate(time_skipping_env, queue, node)

    assert status.phase is Phase.RESOLVED, status.reason
    assert node.steps.count(Step.REBOOT.value) == 7, "two rounds of 4 attempts, the second succeeding"
    assert node.reboots == 1


async def test_a_thirty_minute_reboot_wait_is_one_activity_in_a_short_history(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    """The workflow does not poll: however long the node takes, its wait writes a handful of events."""
    node.comes_back = False
    status = await remediate(time_skipping_env, queue, node, node_ready_timeout=timedelta(minutes=30))
    history = await time_skipping_env.client.get_workflow_handle(workflow_id_for(node.name)).fetch_history()

    assert status.phase is Phase.ESCALATED, status.reason
    assert [w.timeout for w in node.waits] == [timedelta(minutes=30)]
    # Up to the escalation: its wait for a person (reading the node now and then) is the run's first timer.
    held = next(i for i, e in enumerate(history.events) if e.HasField("timer_started_event_attributes"))
    assert "held for a person" in str(history.events[held].user_metadata)
    until_escalated = history.events[:held]
    assert len(until_escalated) <= 60, f"{len(until_escalated)} events"


async def test_a_node_deleted_mid_remediation_fails_the_run_with_that_reason(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.deleted_on_reboot = True
    status = await remediate(time_skipping_env, queue, node)

    assert status.phase is Phase.FAILED
    assert status.reason == f"node {node.name} was deleted during the remediation"
    assert node.releases == [], "nothing is left to hand back"


async def test_a_fault_only_a_person_can_fix_arriving_during_the_reset_waits_for_a_person_before_any_reboot(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    """The reset needed no approval; a REPLACE_VM that joins during it does, before the reboot it falls back to."""
    handle = await reset_outgrown_by(time_skipping_env, queue, node, RecommendedAction.REPLACE_VM)

    for _ in range(200):
        status = await handle.query(RemediationWorkflow.status)
        if status.phase is Phase.AWAITING_APPROVAL or node.reboot_requests:
            break
        await asyncio.sleep(0.05)

    assert node.reboot_requests == [], "a fault no provider can fix was rebooted with nobody asked"
    assert status.phase is Phase.AWAITING_APPROVAL
    await handle.signal(RemediationWorkflow.reject, ApprovalSignal(approver="bob", reason="replacing the board"))
    assert (await settled(handle)).phase is Phase.ESCALATED  # held for bob, no step left running
