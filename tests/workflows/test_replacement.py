"""The top of the ladder where the policy allows it: a machine the repair did not fix is replaced
(terminated through its provider, for its group to launch another) instead of held for a person."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from gpuheal.control import remediations
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.decisions import PersonAction
from gpuheal.domain.operator import OperatorAction
from gpuheal.domain.phases import Phase
from gpuheal.domain.policy import RemediationPolicy, RepairPolicy, RepairStrategy
from gpuheal.domain.remediation import ApprovalSignal
from gpuheal.domain.steps import Outcome, Step
from gpuheal.workflows.remediation import RemediationWorkflow
from tests.workflows.fake_activities import FakeNode, resolved_earlier
from tests.workflows.test_remediation_logic import Handle, escalated, fault, settled, wait_for_phase

NOT_BACK = "node did not come back Ready with a new bootID within 0:30:00"


async def start(
    env: WorkflowEnvironment,
    queue: str,
    node: FakeNode,
    *,
    action: RecommendedAction = RecommendedAction.RESTART_BM,
    **repair: object,
) -> Handle:
    policy = RemediationPolicy(repair=RepairPolicy.model_validate({"provider": "simulator", "replace": True, **repair}))
    return await remediations.report_fault(env.client, fault(node, action), policy, task_queue=queue)


def repair_steps(node_steps: list[str]) -> list[str]:
    return [step for step in node_steps if step in (Step.REBOOT.value, Step.REPLACE.value, Step.RELEASE.value)]


async def test_a_node_that_does_not_come_back_is_replaced_and_the_run_ends_replaced(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.comes_back = False
    handle = await start(time_skipping_env, queue, node)

    status = await handle.result()

    assert status.phase is Phase.REPLACED
    assert status.reason.startswith(NOT_BACK)
    assert status.reason.endswith(f"replaced: terminated the machine of {node.name}, and the node was deleted")
    assert repair_steps(node.steps) == [Step.REBOOT.value, Step.REPLACE.value], "no release: the node is gone"
    [request] = node.replace_requests
    assert request.provider == "simulator" and request.holder.startswith(f"remediate-{node.name}/")
    assert [entry.phase for entry in status.history][-2:] == [Phase.REPLACING, Phase.REPLACED]
    assert any(line.startswith("machine terminated via fake") for line in status.repair)


async def test_gpus_still_unhealthy_after_the_reboot_are_replaced(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.gpus_healthy_after_reboot = False
    handle = await start(time_skipping_env, queue, node)

    status = await handle.result()

    assert status.phase is Phase.REPLACED
    assert status.reason.startswith("GPUs did not report healthy within 0:05:00: XID 79 on GPU 3; replaced: ")
    assert node.reboots == 1 and len(node.replace_requests) == 1


async def test_a_repeat_offender_is_replaced_without_another_reboot(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.history = resolved_earlier(node.name, "GPU-aaaa")
    handle = await start(time_skipping_env, queue, node)

    status = await handle.result()

    assert status.phase is Phase.REPLACED
    assert status.reason.startswith("repeat offender: GPU GPU-aaaa faulted again")
    assert node.reboots == 0 and Step.DRAIN.value in node.steps, "drained first, then replaced; never rebooted"


async def test_a_provider_that_cannot_terminate_leaves_the_node_to_a_person_with_both_reasons(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.comes_back = False
    node.replaceable = False
    handle = await start(time_skipping_env, queue, node)

    status = await escalated(handle)

    assert status.reason.startswith(NOT_BACK)
    assert status.reason.endswith("; the machine could not be replaced: provider fake cannot terminate machines")
    assert node.exists and node.cordoned, "held cordoned for a person"
    await handle.terminate("test over")


async def test_a_node_that_outlives_its_terminated_machine_goes_to_a_person(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.comes_back = False
    node.deleted_on_replace = False
    handle = await start(time_skipping_env, queue, node, replace_timeout=timedelta(minutes=10))

    status = await escalated(handle)

    assert status.reason.endswith(
        f"the machine was terminated (terminated the machine of {node.name}) but the node was not deleted within 0:10:00"
    )
    assert len(node.replace_requests) == 1
    await handle.terminate("test over")


async def test_faults_the_policy_leaves_to_a_person_are_never_replaced(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.manual_provider = True
    node.gpus_healthy_after_reboot = False
    node.gpus_healthy = False
    handle = await start(
        time_skipping_env, queue, node, strategies={"RESTART_BM": RepairStrategy.PERSON}, require_approval=True
    )
    await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    swapped = ApprovalSignal(approver="alice", reason="swapped the riser card")
    await remediations.send_decision(time_skipping_env.client, node.name, swapped, approve=True)

    status = await settled(handle)

    assert status.phase is Phase.ESCALATED, status.reason
    assert node.replace_requests == []
    await handle.terminate("test over")


async def test_without_the_policy_a_node_that_does_not_come_back_is_escalated_not_replaced(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.comes_back = False
    handle = await start(time_skipping_env, queue, node, replace=False)

    status = await escalated(handle)

    assert status.reason.startswith(NOT_BACK) and "replace" not in status.reason
    assert node.replace_requests == [] and Step.REPLACE.value not in node.steps
    await handle.terminate("test over")


async def test_where_a_person_approves_repairs_they_approve_the_termination_too(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.history = resolved_earlier(node.name, "GPU-aaaa")
    handle = await start(time_skipping_env, queue, node, require_approval=True)

    waiting = await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    assert node.replace_requests == [] and node.reboots == 0
    assert waiting.repair[-1].startswith("terminating the machine waits for a person's approval: repeat offender")
    approval = ApprovalSignal(approver="alice", reason="RMA the board; let the group replace it")
    await remediations.send_decision(time_skipping_env.client, node.name, approval, approve=True)
    status = await handle.result()

    assert status.phase is Phase.REPLACED and len(node.replace_requests) == 1
    assert status.decision is not None and status.decision.approver == "alice"


async def test_a_rejected_termination_leaves_the_machine_to_a_person(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.comes_back = False
    handle = await start(time_skipping_env, queue, node, approval_for=["RESTART_BM"])
    await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    go = ApprovalSignal(approver="alice", reason="reboot it")
    await remediations.send_decision(time_skipping_env.client, node.name, go, approve=True)
    await wait_for_phase(handle, Phase.AWAITING_APPROVAL)  # asked again: for the termination
    no = ApprovalSignal(approver="bob", reason="capacity is short this week")
    await remediations.send_decision(time_skipping_env.client, node.name, no, approve=False)

    status = await escalated(handle)

    assert node.reboots == 1 and node.replace_requests == []
    assert "the approval by alice was for the repair" in status.repair
    await handle.terminate("test over")


async def test_cancelling_a_run_that_is_replacing_its_machine_leaves_the_node_cordoned(
    own_time_skipping_env: WorkflowEnvironment, node: FakeNode
) -> None:
    """On a test server of its own: a run cancelled while an activity waits holds the server's clock."""
    env = own_time_skipping_env
    node.comes_back = False
    node.deleted_late = True
    async with Worker(env.client, task_queue="cancel", workflows=[RemediationWorkflow], activities=node.activities()):
        handle = await start(env, "cancel", node)
        await wait_for_phase(handle, Phase.REPLACING)
        while Step.WAIT_FOR_NODE.value not in node.steps[node.steps.index(Step.REPLACE.value) :]:
            await asyncio.sleep(0.05)

        await handle.cancel()
        status = await handle.result()
        node.exists = False  # the wait for the node's deletion ends
        while node.open_waits:
            await asyncio.sleep(0.01)

    assert status.phase is Phase.CANCELLED
    assert status.reason.startswith("cancelled by an operator after its repair did not hold")
    assert node.cordoned and node.releases[-1].outcome is Outcome.STOOD_DOWN


async def test_a_node_deleted_after_its_replacement_escalated_ends_replaced_and_a_retry_never_reboots_it(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.comes_back = False
    node.deleted_on_replace = False
    # Rechecked every second in real time: a test must not wait on the shared test server skipping its
    # clock, which an earlier test in the session may hold.
    handle = await start(
        time_skipping_env, queue, node, replace_timeout=timedelta(minutes=10), escalated_recheck=timedelta(seconds=1)
    )
    await escalated(handle)
    alice = OperatorAction(by="alice", reason="the ASG was suspended; resumed it")
    await remediations.act_on_escalation(time_skipping_env.client, node.name, PersonAction.RETRY, alice)
    await escalated(handle)
    assert node.reboots == 1 and len(node.replace_requests) == 2, "the retry followed the replacement again"

    node.exists = False
    status = await handle.result()

    assert status.phase is Phase.REPLACED
    assert status.reason.endswith("replaced: the machine was terminated and its node was deleted later")


async def test_the_policys_own_approval_never_terminates_a_machine(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.history = resolved_earlier(node.name, "GPU-aaaa")
    handle = await start(
        time_skipping_env,
        queue,
        node,
        require_approval=True,
        # Seconds, waited in real time (not on the shared test server skipping its clock).
        auto_approve_after=timedelta(seconds=1),
        approval_timeout=timedelta(seconds=3),
    )

    waiting = await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    assert waiting.reason.startswith("an approval terminates the machine (repair.replace): repeat offender")
    status = await escalated(handle)

    assert node.replace_requests == [], "auto_approve_after approves repairs, never a termination"
    assert status.decision is None
    await handle.terminate("test over")


async def test_a_retry_spares_a_new_machine_that_took_the_terminated_ones_name(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    """A managed instance group recreates the instance under its name; the node came back on a new boot."""
    node.comes_back = False
    node.deleted_on_replace = False
    handle = await start(time_skipping_env, queue, node, replace_timeout=timedelta(minutes=10))
    await escalated(handle)
    [first] = node.replace_requests
    node.boot_id, node.ready = "boot-new-machine", True
    bob = OperatorAction(by="bob", reason="try the replacement again")

    await remediations.act_on_escalation(time_skipping_env.client, node.name, PersonAction.RETRY, bob)
    status = await handle.result()

    assert status.phase is Phase.REPLACED
    assert status.reason.endswith("and a new machine took the node's name")
    assert node.replace_requests == [first], "the new machine was not terminated"
