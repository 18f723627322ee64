"""Before a repair that wipes the node's state (a reboot), with `diagnostics.collect` the node's agent
keeps a diagnostics bundle and the run records where it is; the reboot never waits on it for long."""

from __future__ import annotations

from datetime import timedelta

from temporalio.testing import WorkflowEnvironment

from gpuheal.control import remediations
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.phases import Phase
from gpuheal.domain.policy import DiagnosticsPolicy, RemediationPolicy, RepairPolicy
from gpuheal.domain.remediation import ApprovalSignal, RemediationStatus
from gpuheal.domain.steps import Step
from tests.workflows.fake_activities import FakeNode
from tests.workflows.test_remediation_logic import Handle, fault, quarantined_at, wait_for_phase


async def start(
    env: WorkflowEnvironment,
    queue: str,
    node: FakeNode,
    *,
    collect: bool = True,
    action: RecommendedAction = RecommendedAction.RESTART_BM,
    **repair: object,
) -> Handle:
    policy = RemediationPolicy(
        repair=RepairPolicy.model_validate({"provider": "simulator", **repair}),
        diagnostics=DiagnosticsPolicy(collect=collect, timeout=timedelta(minutes=5)),
    )
    return await remediations.report_fault(env.client, fault(node, action), policy, task_queue=queue)


async def resolved(handle: Handle) -> RemediationStatus:
    status: RemediationStatus = await handle.result()
    assert status.phase is Phase.RESOLVED, status.reason
    return status


async def test_a_bundle_is_kept_before_the_reboot_and_the_run_says_where(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    status = await resolved(await start(time_skipping_env, queue, node))

    location = f"s3://bundles/{node.name}/probe.json.gz"
    assert status.diagnostics == [location]
    assert f"diagnostics: nvml bundle of 2048 bytes stored at {location}" in status.repair
    assert node.steps.index(Step.COLLECT_DIAGNOSTICS.value) < node.steps.index(Step.REBOOT.value)
    [order] = node.diagnostics_orders
    assert order.order_id == f"{order.holder}/diagnostics" and "XID 79" in order.reason


async def test_a_bundle_that_cannot_be_kept_does_not_stop_the_reboot(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.diagnostics_outcome = "fail"
    status = await resolved(await start(time_skipping_env, queue, node))

    assert status.diagnostics == [] and node.reboots == 1
    assert "diagnostics not collected: cannot write /var/lib/gpuheal: No space left; rebooting anyway" in status.repair


async def test_an_agent_that_does_not_answer_delays_the_reboot_by_the_timeout_only(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.diagnostics_outcome = "silent"
    status = await resolved(await start(time_skipping_env, queue, node))

    assert node.reboots == 1
    assert (
        "diagnostics not collected: the node's agent did not answer within 0:05:00; rebooting anyway" in status.repair
    )


async def test_a_gpu_reset_that_repairs_needs_no_bundle(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.gpus_healthy = False
    await resolved(await start(time_skipping_env, queue, node, action=RecommendedAction.COMPONENT_RESET))

    assert node.diagnostics_orders == []


async def test_a_persons_repair_reboots_nothing_of_ours_so_nothing_is_collected(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.manual_provider = True
    handle = await start(time_skipping_env, queue, node, provider="manual", require_approval=True)
    waiting = await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    node.agent_reports(True, at=quarantined_at(waiting) + timedelta(seconds=1))
    done = ApprovalSignal(approver="alice", reason="reseated the GPU")
    await remediations.send_decision(time_skipping_env.client, node.name, done, approve=True)

    await resolved(handle)

    assert node.diagnostics_orders == []


async def test_without_the_policy_nothing_is_collected(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    status = await resolved(await start(time_skipping_env, queue, node, collect=False))

    assert Step.COLLECT_DIAGNOSTICS.value not in node.steps and status.diagnostics == []
