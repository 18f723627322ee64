"""A policy that leaves an action's repairs to a person: the run waits for them, and their approval
goes to the manual provider (nothing rebooted), then the GPUs are checked."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio.testing import WorkflowEnvironment

from gpuheal.control import remediations
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.phases import Phase
from gpuheal.domain.policy import RemediationPolicy, RepairStrategy
from gpuheal.domain.remediation import ApprovalSignal
from gpuheal.workflows.remediation import RemediationWorkflow
from tests.workflows.fake_activities import FakeNode
from tests.workflows.test_remediation_logic import fault, policy, quarantined_at, settled, wait_for_phase


async def test_a_power_cycle_left_to_a_person_waits_for_them_and_reboots_nothing(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.manual_provider = True  # the fake carries the request out as the manual provider does
    base = policy()
    left_to_a_person = base.model_copy(
        update={
            "repair": base.repair.model_copy(
                update={"strategies": {RecommendedAction.RESTART_BM: RepairStrategy.PERSON}}
            )
        }
    )
    handle = await remediations.report_fault(
        time_skipping_env.client, fault(node, RecommendedAction.RESTART_BM), left_to_a_person, task_queue=queue
    )

    waiting = await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    # The person replaced the GPU; the agent reports it healthy (the workflow's clock, not this one's).
    node.agent_reports(True, at=quarantined_at(waiting) + timedelta(seconds=1))
    await handle.signal(RemediationWorkflow.approve, ApprovalSignal(approver="alice", reason="GPU replaced"))
    done = await settled(handle)

    assert done.phase is Phase.RESOLVED, done.reason
    assert [request.provider for request in node.reboot_requests] == ["manual"]
    assert node.reboots == 0


def with_strategies(strategies: dict[RecommendedAction, RepairStrategy], **repair: object) -> RemediationPolicy:
    base = policy()
    return base.model_copy(update={"repair": base.repair.model_copy(update={"strategies": strategies, **repair})})


async def test_a_reboot_strategy_given_a_gpu_reset_first_is_repaired_by_the_reset(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    given = with_strategies({RecommendedAction.RESTART_VM: RepairStrategy.GPU_RESET})
    handle = await remediations.report_fault(
        time_skipping_env.client, fault(node, RecommendedAction.RESTART_VM, 79), given, task_queue=queue
    )

    done = await settled(handle)

    assert done.phase is Phase.RESOLVED, done.reason
    assert node.reset_orders and node.reboot_requests == []


async def test_a_failed_reset_whose_fallback_is_left_to_a_person_waits_for_them(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.reset_outcome, node.manual_provider = "fail", True
    given = with_strategies({RecommendedAction.RESTART_VM: RepairStrategy.PERSON})
    handle = await remediations.report_fault(
        time_skipping_env.client, fault(node, RecommendedAction.COMPONENT_RESET, 48), given, task_queue=queue
    )

    waiting = await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    assert node.reset_orders and node.reboot_requests == []  # nothing sent to the person's provider unasked
    node.agent_reports(True, at=quarantined_at(waiting) + timedelta(seconds=1))
    await handle.signal(RemediationWorkflow.approve, ApprovalSignal(approver="alice", reason="GPU reseated"))
    done = await settled(handle)

    assert done.phase is Phase.RESOLVED, done.reason
    assert [request.provider for request in node.reboot_requests] == ["manual"]


async def test_an_approval_is_for_the_faults_as_they_stand_when_it_is_recorded(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    """A fault the policy leaves to a person joins while the run waits for approval of a reboot: the
    approval given after it is for the run as it then stands (the UI and `gpuheal status` show the
    raised action), so it says the person's repair is done; no machine is rebooted."""
    node.manual_provider = True
    given = with_strategies(
        {RecommendedAction.RESTART_BM: RepairStrategy.PERSON}, approval_for=frozenset({RecommendedAction.RESTART_VM})
    )
    handle = await remediations.report_fault(
        time_skipping_env.client, fault(node, RecommendedAction.RESTART_VM, 79), given, task_queue=queue
    )
    waiting = await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    await remediations.report_fault(
        time_skipping_env.client, fault(node, RecommendedAction.RESTART_BM, 79), task_queue=queue
    )
    for _ in range(200):
        if (await handle.query(RemediationWorkflow.status)).action is RecommendedAction.RESTART_BM:
            break
        await asyncio.sleep(0.05)

    node.agent_reports(True, at=quarantined_at(waiting) + timedelta(seconds=1))
    await handle.signal(RemediationWorkflow.approve, ApprovalSignal(approver="alice", reason="GPU replaced"))
    done = await settled(handle)

    assert done.phase is Phase.RESOLVED, done.reason
    assert [request.provider for request in node.reboot_requests] == ["manual"] and node.reboots == 0
