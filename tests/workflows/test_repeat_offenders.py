"""A fault whose node or GPU was remediated lately is escalated instead of repaired again (the rule is
in gpuheal.domain.history; here: where the run looks, what it asks and what it does with the answer)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta

from temporalio.testing import WorkflowEnvironment

from gpuheal.control import remediations
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.decisions import PersonAction
from gpuheal.domain.faults import Fault
from gpuheal.domain.history import EarlierRemediation, HistoryRequest, RemediationHistory
from gpuheal.domain.operator import OperatorAction
from gpuheal.domain.phases import Phase
from gpuheal.domain.policy import LoopPolicy, RemediationPolicy, RepairPolicy
from gpuheal.domain.steps import Step
from gpuheal.workflows import search_attributes as attrs
from tests.workflows.fake_activities import FakeNode
from tests.workflows.test_remediation_logic import Handle, escalated

SERIAL = "1320221012345"


async def start(env: WorkflowEnvironment, queue: str, node: FakeNode) -> Handle:
    fault = Fault(
        node=node.name,
        action=RecommendedAction.RESTART_BM,
        xid=79,
        gpu_uuids=("GPU-aaaa",),
        gpu_serials=(SERIAL,),
        event_id=str(uuid.uuid4()),
    )
    policy = RemediationPolicy(
        repair=RepairPolicy(provider="simulator"), loops=LoopPolicy(gpu_window=timedelta(days=3))
    )
    return await remediations.report_fault(env.client, fault, policy, task_queue=queue)


def the_same_gpu_on(node: str) -> Callable[[HistoryRequest], RemediationHistory]:
    """What visibility shows: the GPU's board was remediated yesterday in another machine."""
    return lambda request: RemediationHistory(
        remediations=(
            EarlierRemediation(
                workflow_id=f"remediate-{node}",
                run_id="4f1c",
                node=node,
                phase="Resolved",
                gpus=("GPU-zzzz",),
                serials=(SERIAL,),
                repairs=1,
                started_at=request.since + timedelta(days=1),
                closed_at=request.since + timedelta(days=2),
            ),
        )
    )


async def test_a_gpu_that_faults_again_is_drained_and_held_for_a_person_not_rebooted_again(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.history = the_same_gpu_on("gpu-node-042")
    handle = await start(time_skipping_env, queue, node)

    status = await escalated(handle)

    assert status.reason.startswith(f"repeat offender: GPU {SERIAL} faulted again within 3 days, 0:00:00 of ")
    assert "remediate-gpu-node-042 (run 4f1c, Resolved, ended " in status.reason
    assert node.reboots == 0 and node.cordoned
    assert Step.DRAIN.value in node.steps, "its workloads were moved off first"
    [asked] = node.history_requests
    assert (asked.node, asked.gpus, asked.serials) == (node.name, ("GPU-aaaa",), (SERIAL,))
    assert status.history[-1].entered_at - asked.since >= timedelta(days=3)
    described = await handle.describe()
    assert described.typed_search_attributes.get(attrs.SERIALS) == [SERIAL], "the next fault finds this one"


async def test_a_persons_retry_repairs_the_repeat_offender_without_looking_again(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.history = the_same_gpu_on("gpu-node-042")
    handle = await start(time_skipping_env, queue, node)
    await escalated(handle)

    await remediations.act_on_escalation(
        time_skipping_env.client, node.name, PersonAction.RETRY, OperatorAction(by="ann", reason="new board fitted")
    )
    status = await handle.result()

    assert status.phase is Phase.RESOLVED, status.reason
    assert node.reboots == 1
    assert len(node.history_requests) == 1


async def test_a_history_that_cannot_be_read_does_not_stop_the_repair_and_says_so(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.history = None
    status = await (await start(time_skipping_env, queue, node)).result()

    assert status.phase is Phase.RESOLVED
    assert status.repair[0].startswith("repeat offences not looked for: the history could not be read (")
    assert node.reboots == 1
