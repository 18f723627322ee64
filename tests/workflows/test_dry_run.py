"""A dry run (policy `dry_run`): the remediation says what it would do, step by step, and does none of it."""

from __future__ import annotations

import uuid
from datetime import timedelta

from temporalio.testing import WorkflowEnvironment

from gpuheal.control import remediations
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.faults import Fault
from gpuheal.domain.fleet import FleetPolicy
from gpuheal.domain.phases import Phase
from gpuheal.domain.policy import DrainMode, DrainPolicy, LoopPolicy, RemediationPolicy, RepairPolicy
from gpuheal.domain.policy_document import PolicyDocument
from gpuheal.domain.remediation import RemediationStatus
from gpuheal.domain.steps import PodRef, Step
from gpuheal.workflows.remediation import RemediationWorkflow
from tests.workflows.fake_activities import FakeNode, resolved_earlier
from tests.workflows.test_remediation_logic import settled

DRY = RemediationPolicy(
    dry_run=True,
    drain=DrainPolicy(
        namespaces={"batch": DrainMode.ALLOW_COMPLETION, "serving": DrainMode.DELETE_AFTER_TIMEOUT},
        timeout=timedelta(minutes=30),
        delete_after=timedelta(minutes=10),
    ),
    repair=RepairPolicy(approval_for=frozenset({RecommendedAction.RESTART_BM})),
)
# What only a read could tell, from the steps a dry run may take: reads of the node and of Temporal.
READS = {Step.SURVEY.value}


async def dry_run(
    env: WorkflowEnvironment,
    queue: str,
    node: FakeNode,
    policy: RemediationPolicy | None = DRY,
    action: RecommendedAction = RecommendedAction.RESTART_BM,
) -> RemediationStatus:
    reported = Fault(
        node=node.name,
        action=action,
        xid=79,
        gpu_uuids=("GPU-aaaa",),
        event_id=str(uuid.uuid4()),
    )
    return await settled(await remediations.report_fault(env.client, reported, policy, task_queue=queue))


async def test_a_dry_run_says_every_step_and_touches_nothing(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.fleet = FleetPolicy()  # a governed fleet: a real run would ask for a permit
    node.governor_id = f"governor-{uuid.uuid4().hex[:8]}"
    node.pods = (PodRef(namespace="ml", name="trainer-0"), PodRef(namespace="batch", name="etl-1"))
    node.pods += (PodRef(namespace="serving", name="api-2"),)

    done = await dry_run(time_skipping_env, queue, node)

    assert done.phase is Phase.DRY_RUN
    assert done.plan == [
        "would ask the fleet governor for a permit, and wait in AwaitingBudget until it grants one",
        f"would cordon {node.name} and taint it gpuheal.io/gpu-fault:NoSchedule",
        "would evict ml/trainer-0 (Immediate; its PodDisruptionBudget holds)",
        "would leave batch/etl-1 to finish (AllowCompletion)",
        "would delete serving/api-2 after 0:10:00 (DeleteAfterTimeout)",
        "would end the drain with a person if it has not finished within 0:30:00",
        "would wait up to 1 day, 0:00:00 for a person to approve the repair (a rejection, or no decision, escalates)",
        f"would reboot {node.name} through simulator (providerID sim://{node.name})",
        f"after a reboot, would wait up to 0:30:00 for {node.name} to be Ready on a new boot ID; "
        "then up to 0:05:00 for its GPUs to report healthy",
        "would then remove the taint and uncordon it",
    ]
    # Nothing written, no provider asked, no permit: only reads.
    assert set(node.steps) <= READS, node.steps
    assert node.permit_requests == [] and node.reboots == 0 and not node.cordoned
    assert "dry run" in done.reason


async def test_a_dry_run_under_the_worker_s_policy_file(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.policy = PolicyDocument(dry_run=True)

    done = await dry_run(time_skipping_env, queue, node, policy=None)

    assert done.phase is Phase.DRY_RUN
    assert done.policy_version == node.policy.version
    assert set(node.steps) <= READS


async def test_a_dry_run_of_a_gpu_reset_a_node_gpuheal_may_not_touch_and_a_repeat_offender(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    reset = await dry_run(time_skipping_env, queue, node, action=RecommendedAction.COMPONENT_RESET)
    # approval_for names a reboot: the reset runs by itself, the reboot it may fall back to waits for a person.
    assert (
        "would ask the node's agent to reset GPU-aaaa; if the GPUs do not come back, wait up to 1 day, 0:00:00 for "
        "a person to approve that reboot (a rejection, or no decision, escalates), then reboot it through "
        f"simulator (providerID sim://{node.name})"
    ) in reset.plan

    node.history = resolved_earlier(node.name, "GPU-aaaa")
    offender = await dry_run(
        time_skipping_env, queue, node, policy=DRY.model_copy(update={"loops": LoopPolicy(max_per_node=0)})
    )
    assert offender.plan[-1].startswith("would escalate to a person instead of repairing again:")
    assert f"GPU GPU-aaaa faulted again within 7 days, 0:00:00 of remediate-{node.name} (run 4f1c" in offender.plan[-1]

    node.managed = False
    untouched = await dry_run(time_skipping_env, queue, node)
    assert untouched.plan == [
        f"would then find {node.name} labelled gpuheal.io/managed=false and end, touching nothing"
    ]
    assert set(node.steps) <= READS, node.steps


async def test_a_dry_run_replays(time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode) -> None:
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.worker import Replayer

    reported = Fault(node=node.name, action=RecommendedAction.RESTART_VM, xid=79, event_id=str(uuid.uuid4()))
    handle = await remediations.report_fault(time_skipping_env.client, reported, DRY, task_queue=queue)
    await settled(handle)

    replayer = Replayer(workflows=[RemediationWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(await handle.fetch_history())
