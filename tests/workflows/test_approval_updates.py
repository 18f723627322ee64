"""Approval as an Update: who and why are required, a decision the run cannot take is refused at once,
and the policy decides which repairs wait for a person and whether gpuheal approves after a while."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from temporalio.testing import WorkflowEnvironment

from gpuheal.control import remediations
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.decisions import AUTO_APPROVER
from gpuheal.domain.faults import Fault
from gpuheal.domain.operator import ActionRefused
from gpuheal.domain.phases import Phase
from gpuheal.domain.policy import RemediationPolicy, RepairPolicy
from gpuheal.domain.remediation import ApprovalSignal, RemediationStatus
from tests.workflows.fake_activities import FakeNode
from tests.workflows.test_remediation_logic import Handle, escalated, wait_for_phase


async def start(
    env: WorkflowEnvironment, queue: str, node: FakeNode, action: RecommendedAction, **repair: object
) -> Handle:
    fault = Fault(node=node.name, action=action, xid=79, gpu_uuids=("GPU-aaaa",), event_id=str(uuid.uuid4()))
    policy = RemediationPolicy(repair=RepairPolicy(provider="simulator", **repair))
    return await remediations.report_fault(env.client, fault, policy, task_queue=queue)


async def test_an_approval_is_recorded_with_who_why_and_when_and_answered_to_the_caller(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    handle = await start(time_skipping_env, queue, node, RecommendedAction.RESTART_BM, require_approval=True)
    await wait_for_phase(handle, Phase.AWAITING_APPROVAL)

    recorded = await remediations.send_decision(
        time_skipping_env.client, node.name, ApprovalSignal(approver="alice", reason="rack 4 drained"), approve=True
    )
    status = await handle.result()

    assert (recorded.approved, recorded.approver, recorded.reason) == (True, "alice", "rack 4 drained")
    assert status.decision == recorded
    assert status.phase is Phase.RESOLVED and node.reboots == 1


@pytest.mark.parametrize(
    ("approver", "reason", "refusal"), [("alice", " ", "say why (reason)"), (" ", "ok", "say who decides (approver)")]
)
async def test_an_approval_without_who_or_why_is_refused(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode, approver: str, reason: str, refusal: str
) -> None:
    handle = await start(time_skipping_env, queue, node, RecommendedAction.RESTART_BM, require_approval=True)
    await wait_for_phase(handle, Phase.AWAITING_APPROVAL)

    with pytest.raises(ActionRefused, match=re.escape(f"refused it: {refusal}")):
        await remediations.send_decision(
            time_skipping_env.client, node.name, ApprovalSignal(approver=approver, reason=reason), approve=True
        )

    status = await handle.query("status", result_type=RemediationStatus)
    assert status.phase is Phase.AWAITING_APPROVAL and status.decision is None, "nothing was recorded"
    await handle.terminate()


async def test_a_second_decision_is_refused_naming_the_first(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.reset_outcome = "late"  # after the approval the run waits for the reset's answer, still running
    handle = await start(time_skipping_env, queue, node, RecommendedAction.COMPONENT_RESET, require_approval=True)
    await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    await remediations.send_decision(
        time_skipping_env.client, node.name, ApprovalSignal(approver="alice", reason="go"), approve=True
    )

    with pytest.raises(ActionRefused, match=r"refused it: already approved by alice at "):
        await remediations.send_decision(
            time_skipping_env.client, node.name, ApprovalSignal(approver="bob", reason="stop"), approve=False
        )

    node.reset_outcome = "confirm"
    status = await handle.result()
    assert status.decision is not None and status.decision.approver == "alice"
    assert status.phase is Phase.RESOLVED


async def test_an_approval_for_a_run_that_is_not_waiting_for_one_is_refused(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.reset_outcome = "late"  # no approval is asked for: the run waits for the reset's answer
    handle = await start(time_skipping_env, queue, node, RecommendedAction.COMPONENT_RESET)
    await wait_for_phase(handle, Phase.REPAIRING)

    with pytest.raises(ActionRefused, match=r"refused it: the remediation is not waiting for approval \(phase "):
        await remediations.send_decision(
            time_skipping_env.client, node.name, ApprovalSignal(approver="alice", reason="ok"), approve=True
        )

    node.reset_outcome = "confirm"
    status = await handle.result()
    assert status.decision is None and status.phase is Phase.RESOLVED


async def test_the_policy_asks_a_person_for_reboots_only(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    approval_for = frozenset({RecommendedAction.RESTART_BM, RecommendedAction.RESTART_VM})
    reset = await start(time_skipping_env, queue, node, RecommendedAction.COMPONENT_RESET, approval_for=approval_for)
    assert (await reset.result()).phase is Phase.RESOLVED, "a GPU reset runs by itself"
    assert node.reboots == 0

    reboot = await start(time_skipping_env, queue, node, RecommendedAction.RESTART_BM, approval_for=approval_for)
    status = await wait_for_phase(reboot, Phase.AWAITING_APPROVAL)
    assert status.action is RecommendedAction.RESTART_BM
    await reboot.terminate()


async def test_nobody_deciding_within_auto_approve_after_lets_gpuheal_approve(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    handle = await start(
        time_skipping_env,
        queue,
        node,
        RecommendedAction.RESTART_BM,
        require_approval=True,
        auto_approve_after=timedelta(hours=2),
    )
    status = await handle.result()  # the test server skips the two hours

    assert status.phase is Phase.RESOLVED and node.reboots == 1
    assert status.decision is not None
    assert (status.decision.approved, status.decision.approver) == (True, AUTO_APPROVER)
    assert "nobody decided within 2:00:00" in status.decision.reason


async def test_a_fault_only_a_person_can_fix_is_never_auto_approved(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    handle = await start(
        time_skipping_env,
        queue,
        node,
        RecommendedAction.CONTACT_SUPPORT,
        auto_approve_after=timedelta(hours=2),
        approval_timeout=timedelta(hours=6),
    )
    status = await escalated(handle)

    assert status.reason == "no approval within 6:00:00"
    assert status.decision is None


async def test_a_fault_only_a_person_can_fix_arriving_during_the_auto_approval_wait_gets_the_whole_timeout(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    handle = await start(
        time_skipping_env,
        queue,
        node,
        RecommendedAction.RESTART_BM,
        require_approval=True,
        auto_approve_after=timedelta(hours=2),
        approval_timeout=timedelta(hours=6),
    )
    await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    worse = Fault(node=node.name, action=RecommendedAction.CONTACT_SUPPORT, xid=1, event_id=str(uuid.uuid4()))
    await remediations.report_fault(time_skipping_env.client, worse, task_queue=queue)

    status = await escalated(handle)

    assert status.decision is None
    [asked] = [e.entered_at for e in status.history if e.phase is Phase.AWAITING_APPROVAL]
    [ended] = [e.entered_at for e in status.history if e.phase is Phase.ESCALATED]
    assert ended - asked >= timedelta(hours=6), "the person had the whole approval timeout"


async def test_a_reboot_a_failed_gpu_reset_falls_back_to_waits_for_the_person_the_policy_names(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.reset_outcome = "fail"
    approval_for = frozenset({RecommendedAction.RESTART_BM})
    handle = await start(time_skipping_env, queue, node, RecommendedAction.COMPONENT_RESET, approval_for=approval_for)

    status = await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    assert node.reboots == 0 and Phase.REPAIRING in [e.phase for e in status.history], "asked after the reset"
    await remediations.send_decision(
        time_skipping_env.client, node.name, ApprovalSignal(approver="alice", reason="reboot it"), approve=True
    )
    status = await handle.result()

    assert status.phase is Phase.RESOLVED and node.reboots == 1
    assert status.decision is not None and status.decision.approver == "alice"


@pytest.mark.parametrize(("pool", "waits"), [("h100-prod", True), ("h100-dev", False)])
async def test_the_policy_asks_a_person_for_the_nodes_of_one_pool(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode, pool: str, waits: bool
) -> None:
    node.labels = {"pool": pool, "zone": "a"}
    selector = {"pool": "h100-prod"}
    handle = await start(time_skipping_env, queue, node, RecommendedAction.RESTART_BM, approval_node_selector=selector)

    if waits:
        await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
        assert node.reboots == 0
        await handle.terminate()
    else:
        assert (await handle.result()).phase is Phase.RESOLVED, "a node of another pool is repaired by itself"
        assert node.reboots == 1
