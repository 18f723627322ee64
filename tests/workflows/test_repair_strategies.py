"""A policy that leaves an action's repairs to a person: the run waits for them, and their approval
goes to the manual provider (nothing rebooted), then the GPUs are checked."""

from __future__ import annotations

from datetime import timedelta

from temporalio.testing import WorkflowEnvironment

from gpuheal.control import remediations
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.phases import Phase
from gpuheal.domain.policy import RepairStrategy
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
