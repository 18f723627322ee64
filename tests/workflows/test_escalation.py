"""Escalated is not the end: the run holds the node cordoned for a person, stays open, and a person
resumes it once the hardware is fixed, retries the stage that escalated, or releases the node; each
an Update that records who and why, refused at once when the run cannot take it."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from gpuheal.control import remediations
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.decisions import STAND_DOWN_REASON, PersonAction
from gpuheal.domain.faults import Fault
from gpuheal.domain.operator import ActionRefused, OperatorAction, RecordedAction
from gpuheal.domain.phases import Phase
from gpuheal.domain.policy import DrainPolicy, RemediationPolicy, RepairPolicy
from gpuheal.domain.remediation import ApprovalSignal, NodeRelease
from gpuheal.domain.steps import Outcome, Step
from gpuheal.workflows import search_attributes as attrs
from gpuheal.workflows.remediation import RemediationWorkflow
from tests.workflows.fake_activities import FakeNode
from tests.workflows.test_remediation_logic import Handle, escalated, wait_for_phase

ALICE = OperatorAction(by="alice", reason="replaced GPU 3 and power-cycled the node")
NOT_PROVEN = "GPUs did not report healthy within 0:05:00: XID 79 on GPU 3"


async def start(env: WorkflowEnvironment, queue: str, node: FakeNode, **repair: object) -> Handle:
    fault = Fault(node=node.name, action=RecommendedAction.RESTART_BM, xid=79, event_id=str(uuid.uuid4()))
    policy = RemediationPolicy(
        drain=DrainPolicy(timeout=timedelta(minutes=30), delete_after=timedelta(minutes=10)),
        repair=RepairPolicy.model_validate({"provider": "simulator", "verify_timeout": timedelta(minutes=5), **repair}),
    )
    return await remediations.report_fault(env.client, fault, policy, task_queue=queue)


async def unhealthy_after_its_reboot(env: WorkflowEnvironment, queue: str, node: FakeNode) -> Handle:
    """A remediation escalated because the GPUs still report a fault after the reboot."""
    node.gpus_healthy_after_reboot = False
    handle = await start(env, queue, node)
    status = await escalated(handle)
    assert status.reason == NOT_PROVEN
    return handle


async def act(env: WorkflowEnvironment, node: FakeNode, what: PersonAction, action: OperatorAction) -> RecordedAction:
    return await remediations.act_on_escalation(env.client, node.name, what, action)


async def test_an_escalated_remediation_stays_open_with_the_node_cordoned(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    handle = await unhealthy_after_its_reboot(time_skipping_env, queue, node)

    described = await handle.describe()
    assert described.status is WorkflowExecutionStatus.RUNNING, "open work in the UI's Running list"
    assert described.typed_search_attributes.get(attrs.PHASE) == Phase.ESCALATED.value
    assert node.cordoned
    assert [r.outcome for r in node.releases] == [Outcome.ESCALATED]
    assert node.releases[0].reason == NOT_PROVEN, "the reason is annotated on the node"


async def test_resume_after_the_fix_checks_the_node_and_puts_it_back(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    handle = await unhealthy_after_its_reboot(time_skipping_env, queue, node)
    node.boot_id = "boot-after-the-fix"  # the person power-cycled it; its agent reports on the new boot
    node.agent_reports(True)

    taken = await act(time_skipping_env, node, PersonAction.RESUME, ALICE)
    status = await handle.result()

    assert (taken.action, taken.by, taken.reason) == ("resume", "alice", ALICE.reason)
    assert status.phase is Phase.RESOLVED
    assert status.reason == f"resumed by alice ({ALICE.reason}); the node passed the checks"
    assert status.actions == [taken]
    assert not node.cordoned
    assert [r.outcome for r in node.releases] == [Outcome.ESCALATED, Outcome.TAKEN_BACK, Outcome.RESOLVED]
    assert [w.condition.kind for w in node.waits[-2:]] == ["back_from_reboot", "gpus_healthy"]
    assert node.reboots == 1, "gpuheal itself did nothing more to the node"


async def test_a_resume_the_node_does_not_prove_escalates_again_and_the_run_stays_open(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    handle = await unhealthy_after_its_reboot(time_skipping_env, queue, node)
    escalated_at = (await handle.query(RemediationWorkflow.status)).history[-1].entered_at
    node.agent_reports(True, at=escalated_at - timedelta(seconds=1))  # from before it escalated: no proof

    await act(time_skipping_env, node, PersonAction.RESUME, ALICE)
    status = await escalated(handle)

    assert re.fullmatch(
        r"resumed by alice, but the node failed the check within 0:05:00: GpuHealthy=True was last reported at "
        r"\S+, before the escalation at \S+",
        status.reason,
    ), status.reason
    assert node.cordoned
    assert [r.outcome for r in node.releases] == [Outcome.ESCALATED, Outcome.TAKEN_BACK, Outcome.ESCALATED]
    assert node.releases[-1].reason == status.reason


async def test_retry_runs_the_repair_again(time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode) -> None:
    node.provider_errors = [ApplicationError("BMC refused the power action", non_retryable=True)]
    handle = await start(time_skipping_env, queue, node)
    status = await escalated(handle)
    assert status.reason == "the reboot could not be requested: BMC refused the power action"

    await act(time_skipping_env, node, PersonAction.RETRY, OperatorAction(by="bob", reason="BMC firmware updated"))
    status = await handle.result()

    assert status.phase is Phase.RESOLVED, status.reason
    assert node.steps.count(Step.REBOOT.value) == 2 and node.reboots == 1
    assert "retried by bob: BMC firmware updated" in status.repair
    assert [r.outcome for r in node.releases] == [Outcome.ESCALATED, Outcome.TAKEN_BACK, Outcome.RESOLVED]


async def test_retry_after_a_drain_that_timed_out_drains_again(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.failed_passes = 10_000
    handle = await start(time_skipping_env, queue, node)
    status = await escalated(handle)
    assert status.reason.startswith("drain did not finish within 0:30:00")
    assert node.reboots == 0

    node.failed_passes = 0  # the person removed the pod's second budget
    await act(time_skipping_env, node, PersonAction.RETRY, OperatorAction(by="bob", reason="removed the extra PDB"))
    status = await handle.result()

    assert status.phase is Phase.RESOLVED, status.reason
    assert node.reboots == 1
    assert [e.phase for e in status.history].count(Phase.DRAINING) == 2


async def test_retry_of_a_rejected_repair_is_the_persons_approval(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    handle = await start(
        time_skipping_env, queue, node, approval_for=["RESTART_BM"], approval_timeout=timedelta(hours=2)
    )
    status = await escalated(handle)  # nobody approved within two hours
    assert status.reason == "no approval within 2:00:00" and status.decision is None

    await act(time_skipping_env, node, PersonAction.RETRY, OperatorAction(by="carol", reason="go ahead"))
    status = await handle.result()

    assert status.phase is Phase.RESOLVED, status.reason
    assert status.decision is not None
    assert (status.decision.approved, status.decision.approver, status.decision.reason) == (
        True,
        "carol",
        "retried: go ahead",
    )
    assert [e.phase for e in status.history].count(Phase.AWAITING_APPROVAL) == 1, "not asked again"
    assert node.reboots == 1


@pytest.mark.parametrize("keep_cordoned", [False, True], ids=["back-to-service", "kept-cordoned"])
async def test_release_lets_go_of_the_node_as_it_is(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode, keep_cordoned: bool
) -> None:
    handle = await unhealthy_after_its_reboot(time_skipping_env, queue, node)
    release = NodeRelease(by="dave", reason="vendor RMA ticket 4411", keep_cordoned=keep_cordoned)

    await act(time_skipping_env, node, PersonAction.RELEASE, release)
    status = await handle.result()

    assert status.phase is Phase.RELEASED
    assert [a.action for a in status.actions] == ["release"]
    assert node.cordoned is keep_cordoned
    if keep_cordoned:
        assert status.reason == "released by dave, left cordoned: vendor RMA ticket 4411"
        assert node.releases[-1].outcome is Outcome.STOOD_DOWN, "gpuheal's marks go, the cordon stays"
    else:
        assert status.reason == "released by dave unrepaired: vendor RMA ticket 4411"
        assert node.releases[-1].outcome is Outcome.RESOLVED


async def test_an_action_on_a_run_that_is_not_escalated_is_refused(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    handle = await start(time_skipping_env, queue, node, require_approval=True)
    await wait_for_phase(handle, Phase.AWAITING_APPROVAL)

    for what in PersonAction:
        with pytest.raises(
            ActionRefused, match=re.escape("refused it: the remediation is not escalated (phase AwaitingApproval)")
        ):
            await act(time_skipping_env, node, what, ALICE)
    status = await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    assert status.actions == [] and status.decision is None


async def test_an_action_without_a_reason_is_refused_and_changes_nothing(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    handle = await unhealthy_after_its_reboot(time_skipping_env, queue, node)

    with pytest.raises(ActionRefused, match=re.escape("refused it: say why (reason)")):
        await act(time_skipping_env, node, PersonAction.RELEASE, OperatorAction(by="eve", reason="  "))
    status = await escalated(handle)

    assert status.actions == []
    assert node.cordoned


async def test_a_node_uncordoned_while_escalated_is_handed_back(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    handle = await unhealthy_after_its_reboot(time_skipping_env, queue, node)
    node.cordoned = False  # a person took the node back with kubectl uncordon

    status = await handle.result()  # the next read of the node, half an hour on

    assert status.phase is Phase.CANCELLED and status.reason == STAND_DOWN_REASON
    assert node.releases[-1].outcome is Outcome.STOOD_DOWN
    assert not node.cordoned


async def test_a_node_deleted_while_escalated_ends_the_run(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    handle = await unhealthy_after_its_reboot(time_skipping_env, queue, node)
    node.exists = False

    status = await handle.result()

    assert status.phase is Phase.FAILED
    assert status.reason == f"node {node.name} was deleted during the remediation"


async def test_cancelling_an_escalated_run_leaves_the_faulty_node_cordoned(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    handle = await unhealthy_after_its_reboot(time_skipping_env, queue, node)

    await handle.cancel()
    status = await handle.result()

    assert status.phase is Phase.CANCELLED
    assert status.reason.startswith("cancelled by an operator after it escalated")
    assert node.cordoned
    assert node.releases[-1].outcome is Outcome.STOOD_DOWN, "gpuheal's marks go, the cordon stays"


async def test_retry_after_a_rejection_overrides_it_with_the_persons_approval(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    handle = await start(time_skipping_env, queue, node, require_approval=True)
    await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    await remediations.send_decision(
        time_skipping_env.client, node.name, ApprovalSignal(approver="alice", reason="not now"), approve=False
    )
    await escalated(handle)

    await act(time_skipping_env, node, PersonAction.RETRY, OperatorAction(by="bob", reason="window opened"))
    status = await handle.result()

    assert status.phase is Phase.RESOLVED, status.reason
    assert status.decision is not None
    assert (status.decision.approved, status.decision.approver) == (True, "bob")
    assert "bob's retry overrides the rejection by alice: not now" in status.repair
    assert node.reboots == 1


async def test_retry_of_a_drain_still_asks_the_approval_the_policy_requires(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.failed_passes = 10_000
    handle = await start(time_skipping_env, queue, node, require_approval=True)
    await escalated(handle)
    node.failed_passes = 0

    await act(time_skipping_env, node, PersonAction.RETRY, OperatorAction(by="bob", reason="removed the extra PDB"))
    status = await wait_for_phase(handle, Phase.AWAITING_APPROVAL)

    assert status.decision is None, "a retry of the drain approves no reboot"
    assert node.reboots == 0


async def test_a_retried_reboot_is_a_new_request_of_a_new_round(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.comes_back = False
    handle = await start(time_skipping_env, queue, node)
    status = await escalated(handle)
    assert "did not come back Ready" in status.reason
    node.comes_back, node.ready = True, True  # the person power-cycled the rack's PDU

    await act(time_skipping_env, node, PersonAction.RETRY, OperatorAction(by="bob", reason="PDU fixed"))
    status = await handle.result()

    assert status.phase is Phase.RESOLVED, status.reason
    assert [r.round for r in node.reboot_requests] == [0, 1]
