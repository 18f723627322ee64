"""Proven healthy before service: with `validation.level` the node's agent runs a GPU check on order
after the repair, and a node that fails it, or whose agent does not answer, stays out of service."""

from __future__ import annotations

from datetime import timedelta

from temporalio.testing import WorkflowEnvironment

from gpuheal.control import remediations
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.decisions import PersonAction
from gpuheal.domain.operator import OperatorAction
from gpuheal.domain.phases import Phase
from gpuheal.domain.policy import RemediationPolicy, RepairPolicy, ValidationPolicy
from gpuheal.domain.steps import Outcome, Step
from tests.workflows.fake_activities import FakeNode
from tests.workflows.test_remediation_logic import Handle, escalated, fault

FAILED = "the GPUs failed the level 2 GPU check (dcgmi diag -r 2): Memory bandwidth: GPU 3 below 80% of spec"


async def start(
    env: WorkflowEnvironment,
    queue: str,
    node: FakeNode,
    *,
    level: int = 2,
    action: RecommendedAction = RecommendedAction.RESTART_BM,
    **repair: object,
) -> Handle:
    policy = RemediationPolicy(
        repair=RepairPolicy.model_validate({"provider": "simulator", **repair}),
        validation=ValidationPolicy(level=level, timeout=timedelta(minutes=10)),
    )
    return await remediations.report_fault(env.client, fault(node, action), policy, task_queue=queue)


async def test_a_node_that_passes_its_check_goes_back_and_the_check_is_in_the_repair_log(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    status = await (await start(time_skipping_env, queue, node)).result()

    assert status.phase is Phase.RESOLVED, status.reason
    [order] = node.check_orders
    assert (order.level, order.order_id) == (2, f"{order.holder}/check-0")
    phases = [entry.phase for entry in status.history]
    assert phases.index(Phase.VERIFYING) < phases.index(Phase.VALIDATING) < phases.index(Phase.RESOLVED)
    assert "GPU check (dcgmi diag -r 2, level 2): all 12 tests passed" in status.repair
    assert node.steps.index(Step.REBOOT.value) < node.steps.index(Step.CHECK_GPUS.value)
    assert [release.outcome for release in node.releases] == [Outcome.RESOLVED]


async def test_a_node_that_fails_its_check_stays_out_of_service_for_a_person(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.check_outcomes = ["fail"]

    status = await escalated(await start(time_skipping_env, queue, node))

    assert status.reason == FAILED
    assert node.cordoned and Outcome.RESOLVED not in [release.outcome for release in node.releases]


async def test_a_node_that_fails_its_check_is_replaced_where_the_policy_allows(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.check_outcomes = ["fail"]

    status = await (await start(time_skipping_env, queue, node, replace=True)).result()

    assert status.phase is Phase.REPLACED
    assert status.reason.startswith(FAILED + "; replaced: ")


async def test_a_check_nobody_answers_keeps_the_node_out_and_says_so(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.check_outcomes = ["silent"]

    status = await escalated(await start(time_skipping_env, queue, node, replace=True))

    assert status.reason == "the node's agent did not answer the level 2 GPU check within 0:10:00"
    assert node.replace_requests == [], "an unanswered check proves nothing against the machine"


async def test_a_gpu_reset_that_repaired_is_checked_too(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.gpus_healthy = False
    status = await (await start(time_skipping_env, queue, node, action=RecommendedAction.COMPONENT_RESET)).result()

    assert status.phase is Phase.RESOLVED, status.reason
    assert node.reboots == 0 and len(node.check_orders) == 1


async def test_gpus_that_fail_their_check_after_a_reset_are_rebooted_and_checked_again_not_replaced(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.gpus_healthy = False
    node.check_outcomes = ["fail", "pass"]
    handle = await start(time_skipping_env, queue, node, action=RecommendedAction.COMPONENT_RESET, replace=True)

    status = await handle.result()

    assert status.phase is Phase.RESOLVED, status.reason
    assert node.reboots == 1 and node.replace_requests == [], "the cheaper rung first"
    assert [order.check for order in node.check_orders] == [0, 1]
    assert any(line.startswith("GPU reset did not repair the node (" + FAILED) for line in status.repair)


async def test_a_check_that_proves_nothing_goes_to_a_person_never_to_a_replacement(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.check_outcomes = ["inconclusive"]

    status = await escalated(await start(time_skipping_env, queue, node, replace=True))

    assert status.reason == (
        "the level 2 GPU check (dcgmi diag -r 2) proved nothing: cannot run dcgmi: No such file or directory"
    )
    assert node.replace_requests == [] and node.cordoned


async def test_a_persons_resume_is_checked_again_and_a_failure_goes_back_to_them_not_replaced(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.check_outcomes = ["fail", "fail", "pass"]
    handle = await start(time_skipping_env, queue, node, replace=True, verify_timeout=timedelta(minutes=1))
    node.deleted_on_replace = False
    node.replaceable = False  # the first failure asks for a replacement the provider cannot do
    assert (await escalated(handle)).reason.startswith(FAILED)
    alice = OperatorAction(by="alice", reason="reseated GPU 3")

    async def resume() -> None:
        # The agent reports the GPUs healthy after the person's work, as a resume requires.
        node.agent_reports(True, at=await time_skipping_env.get_current_time())
        await remediations.act_on_escalation(time_skipping_env.client, node.name, PersonAction.RESUME, alice)

    await resume()
    again = await escalated(handle)
    assert again.reason == FAILED, "the person who resumed gets the node back, not a replacement"
    await resume()
    status = await handle.result()

    assert status.phase is Phase.RESOLVED, status.reason
    assert [order.check for order in node.check_orders] == [0, 1, 2], "each check a new order"
    assert len(node.replace_requests) == 0


async def test_without_a_level_nothing_is_checked(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    status = await (await start(time_skipping_env, queue, node, level=0)).result()

    assert status.phase is Phase.RESOLVED
    assert Step.CHECK_GPUS.value not in node.steps and Phase.VALIDATING not in [e.phase for e in status.history]
