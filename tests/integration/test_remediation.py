"""End to end on the real dev server: the worker remediates simulated nodes through the Kubernetes API."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest

from gpuheal.control import remediations
from gpuheal.domain import marks
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.decisions import PersonAction
from gpuheal.domain.faults import Fault
from gpuheal.domain.phases import Phase
from gpuheal.domain.policy import DrainMode, DrainPolicy, LoopPolicy, ValidationPolicy
from gpuheal.domain.remediation import NodeRelease, RemediationStatus
from gpuheal_sim.simulator.fleet import DeploymentWorkload, JobWorkload, PdbSpec
from tests.integration.conftest import StackFactory, busy_trainer, eventually, fast_policy, phase_of, settled

NODE = "gpu-node-001"


def gpuheal_marks(node: Any) -> set[str]:
    annotations = {k for k in (node.metadata.annotations or {}) if k.startswith(marks.PREFIX)}
    taints = {t.key for t in (node.spec.taints or []) if t.key.startswith(marks.PREFIX)}
    return annotations | taints


async def test_happy_path_reboots_once_and_returns_the_node(make_stack: StackFactory) -> None:
    stack = await make_stack()
    boot_before = (await stack.node(NODE)).status.node_info.boot_id
    trainer_before = [p.metadata.name for p in await stack.pods_on(NODE) if p.metadata.namespace == "ml"]
    assert trainer_before, "the demo fleet runs a trainer pod on every node"

    status: RemediationStatus = await (await stack.report(NODE)).result()

    assert status.phase is Phase.RESOLVED, status.reason
    node = await stack.node(NODE)
    assert node.status.node_info.boot_id != boot_before
    assert not node.spec.unschedulable
    assert gpuheal_marks(node) == set(), "every gpuheal mark is removed"
    assert stack.cluster.reboot_requests(NODE) == 1
    pods = await stack.pods_on(NODE)
    assert not {p.metadata.name for p in pods} & set(trainer_before), "the trainer pod was evicted"
    assert any(p.metadata.namespace == "kube-system" for p in pods), "DaemonSet and mirror pods stay"
    replacements = await stack.core.list_namespaced_pod("ml")
    assert len(replacements.items) == len(stack.cluster.node_names()), "the Deployment recreated its pod elsewhere"


async def test_drain_waits_for_a_disruption_budget_to_free(make_stack: StackFactory) -> None:
    stack = await make_stack(workloads=[busy_trainer()])
    await stack.hold_trainer_budget()
    handle = await stack.report(NODE)

    async def blocked_again() -> bool:
        status: RemediationStatus = await handle.query("status", result_type=RemediationStatus)
        assert status.phase is not Phase.ESCALATED, status.reason
        return status.drain is not None and [h.budget.ref for h in status.drain.holds] == ["ml/trainer-pdb"]

    await eventually(blocked_again, "an eviction refused by the PodDisruptionBudget, the budget read")
    await asyncio.sleep(2)  # several passes on the backoff: a budget exhausted for now is not escalated
    assert await phase_of(handle) == Phase.DRAINING.value
    assert stack.cluster.reboot_requests(NODE) == 0
    await stack.free_trainer_budget()
    status: RemediationStatus = await handle.result()
    assert status.phase is Phase.RESOLVED, status.reason
    assert stack.cluster.reboot_requests(NODE) == 1


async def test_drain_over_a_job_pod_under_max_unavailable_escalates_naming_the_budget(make_stack: StackFactory) -> None:
    job = JobWorkload(name="eval", namespace="batch", pods=4, run_seconds=600)
    stack = await make_stack(workloads=[job])
    selector = {"matchLabels": {"job-name": "eval"}}
    policy_api: Any = stack.policy_api
    await policy_api.create_namespaced_pod_disruption_budget(
        "batch", {"metadata": {"name": "eval-pdb"}, "spec": {"maxUnavailable": 1, "selector": selector}}
    )
    [job_pod] = [p for p in await stack.pods_on(NODE) if p.metadata.namespace == "batch"]

    handle = await stack.report(NODE)
    status = await settled(handle)

    assert status.phase is Phase.ESCALATED, status.reason
    assert status.reason == (
        f"drain cannot finish: pod batch/{job_pod.metadata.name} is held by PodDisruptionBudget batch/eval-pdb, "
        "which can never allow a disruption: the disruption controller cannot compute it (SyncFailed): "
        "jobs.batch does not implement the scale subresource"
    )
    assert stack.cluster.reboot_requests(NODE) == 0
    node = await stack.node(NODE)
    assert node.spec.unschedulable, "an escalated node stays cordoned for a person"
    assert (node.metadata.annotations or {})[marks.ESCALATION_ANNOTATION] == status.reason
    assert job_pod.metadata.name in {p.metadata.name for p in await stack.pods_on(NODE)}

    # The person decides the node can serve as it is: released, it goes back with no mark of gpuheal's.
    release = NodeRelease(by="alice", reason="the eval job tolerates the node")
    await remediations.act_on_escalation(stack.server.client, NODE, PersonAction.RELEASE, release)
    status = await handle.result()

    assert status.phase is Phase.RELEASED, status.reason
    node = await stack.node(NODE)
    assert not node.spec.unschedulable
    assert gpuheal_marks(node) == set()
    assert stack.cluster.reboot_requests(NODE) == 0


@pytest.mark.parametrize("min_available", [4, "100%"], ids=["every-pod", "100-percent"])
async def test_drain_over_a_budget_that_needs_every_pod_escalates(
    make_stack: StackFactory, min_available: int | str
) -> None:
    strict = DeploymentWorkload(name="trainer", namespace="ml", pdb=PdbSpec(min_available=min_available))
    stack = await make_stack(workloads=[strict])
    policy = fast_policy(
        drain=DrainPolicy(
            retry_initial=timedelta(milliseconds=100),
            retry_max=timedelta(milliseconds=500),
            timeout=timedelta(seconds=20),
            delete_after=timedelta(seconds=20),
            never_allows_for=timedelta(seconds=2),
        )
    )

    status = await settled(await stack.report(NODE, policy=policy))

    assert status.phase is Phase.ESCALATED, status.reason
    assert status.reason.startswith("drain cannot finish: pod ml/trainer-")
    assert "is held by PodDisruptionBudget ml/trainer-pdb, which can never allow a disruption: " in status.reason
    assert stack.cluster.reboot_requests(NODE) == 0


async def test_a_pod_under_two_budgets_fails_alone_and_the_drain_names_it(make_stack: StackFactory) -> None:
    svc = DeploymentWorkload(name="svc", namespace="apps", gpus=0, pdb=PdbSpec(max_unavailable=1))
    trainer = DeploymentWorkload(name="trainer", namespace="ml")
    stack = await make_stack(workloads=[svc, trainer])
    selector = {"matchLabels": {"app": "svc"}}
    policy_api: Any = stack.policy_api
    await policy_api.create_namespaced_pod_disruption_budget(
        "apps", {"metadata": {"name": "svc-too"}, "spec": {"maxUnavailable": 1, "selector": selector}}
    )
    on_node = {p.metadata.namespace: p.metadata.name for p in await stack.pods_on(NODE)}
    policy = fast_policy(
        drain=DrainPolicy(
            retry_initial=timedelta(milliseconds=100),
            retry_max=timedelta(milliseconds=300),
            timeout=timedelta(seconds=3),
            delete_after=timedelta(seconds=3),
        )
    )

    status = await settled(await stack.report(NODE, policy=policy))

    assert status.phase is Phase.ESCALATED, status.reason
    assert status.reason == (
        f"drain did not finish within 0:00:03: 1 pod(s) remain (apps/{on_node['apps']}); eviction failed for "
        f"apps/{on_node['apps']} (HTTP 500: This pod has more than one PodDisruptionBudget, which the eviction "
        "subresource does not support.)"
    )
    left = {p.metadata.name for p in await stack.pods_on(NODE)}
    assert on_node["ml"] not in left, "the trainer pod, listed after the failing one, was evicted"
    assert stack.cluster.reboot_requests(NODE) == 0


async def test_allow_completion_waits_for_the_job_to_finish(make_stack: StackFactory) -> None:
    job = JobWorkload(name="eval", namespace="batch", pods=4, run_seconds=2.0)
    stack = await make_stack(workloads=[job])
    policy = fast_policy(
        drain=DrainPolicy(
            namespaces={"batch": DrainMode.ALLOW_COMPLETION},
            retry_initial=timedelta(milliseconds=100),
            retry_max=timedelta(milliseconds=300),
            timeout=timedelta(seconds=60),
            delete_after=timedelta(seconds=30),
        )
    )
    [job_pod] = [p for p in await stack.pods_on(NODE) if p.metadata.namespace == "batch"]

    status: RemediationStatus = await (await stack.report(NODE, policy=policy)).result()

    assert status.phase is Phase.RESOLVED, status.reason
    finished: Any = await stack.core.read_namespaced_pod(job_pod.metadata.name, "batch")
    assert finished.status.phase == "Succeeded", "the job pod ran to completion instead of being evicted"
    assert finished.metadata.deletion_timestamp is None


async def test_delete_after_timeout_deletes_pods_that_outstay(make_stack: StackFactory) -> None:
    stubborn = DeploymentWorkload(name="svc", namespace="serving", replicas=4, pdb=PdbSpec(min_available="100%"))
    stack = await make_stack(workloads=[stubborn])
    policy = fast_policy(
        drain=DrainPolicy(
            namespaces={"serving": DrainMode.DELETE_AFTER_TIMEOUT},
            retry_initial=timedelta(milliseconds=100),
            retry_max=timedelta(milliseconds=300),
            timeout=timedelta(seconds=60),
            delete_after=timedelta(seconds=1),
        )
    )
    [pod] = [p for p in await stack.pods_on(NODE) if p.metadata.namespace == "serving"]
    handle = await stack.report(NODE, policy=policy)

    status: RemediationStatus = await handle.result()

    assert status.phase is Phase.RESOLVED, status.reason
    drain_entry = next(e for e in status.history if e.phase is Phase.DRAINING)
    drained_entry = next(e for e in status.history if e.phase is Phase.DRAINED)
    assert drained_entry.entered_at - drain_entry.entered_at >= timedelta(seconds=1), "deleted only after delete_after"
    remaining = {p.metadata.name for p in await stack.pods_on(NODE)}
    assert pod.metadata.name not in remaining


async def test_node_cordoned_before_stays_cordoned(make_stack: StackFactory) -> None:
    stack = await make_stack()
    await stack.core.patch_node(NODE, {"spec": {"unschedulable": True}}, _content_type="application/merge-patch+json")

    status: RemediationStatus = await (await stack.report(NODE)).result()

    assert status.phase is Phase.RESOLVED, status.reason
    node = await stack.node(NODE)
    assert node.spec.unschedulable, "gpuheal undoes only what it did"
    assert gpuheal_marks(node) == set()


async def test_second_xid_joins_the_running_remediation(make_stack: StackFactory) -> None:
    stack = await make_stack()
    first = await stack.report(
        NODE, xid=48, action=RecommendedAction.COMPONENT_RESET, policy=fast_policy(require_approval=True)
    )
    await eventually(lambda: _is(first, Phase.AWAITING_APPROVAL), "AwaitingApproval")
    second = await stack.report(NODE, xid=79, action=RecommendedAction.RESTART_BM)
    assert second.result_run_id == first.result_run_id

    status: RemediationStatus = await first.query("status", result_type=RemediationStatus)
    assert status.action is RecommendedAction.RESTART_BM
    assert status.xids == [48, 79]
    await first.signal("approve", {"approver": "it", "reason": ""})
    assert (await first.result()).phase is Phase.RESOLVED
    assert stack.cluster.reboot_requests(NODE) == 1


async def test_manual_uncordon_stands_down(make_stack: StackFactory) -> None:
    stack = await make_stack(workloads=[busy_trainer()])
    await stack.hold_trainer_budget()
    handle = await stack.report(NODE)
    await eventually(lambda: _is(handle, Phase.DRAINING), "Draining")

    await stack.core.patch_node(NODE, {"spec": {"unschedulable": False}}, _content_type="application/merge-patch+json")
    status: RemediationStatus = await handle.result()

    assert status.phase is Phase.CANCELLED
    node = await stack.node(NODE)
    assert not node.spec.unschedulable
    assert gpuheal_marks(node) == set(), "standing down removes gpuheal's taint and annotations"
    assert stack.cluster.reboot_requests(NODE) == 0


async def _is(handle: Any, phase: Phase) -> bool:
    return await phase_of(handle) == phase.value


async def test_a_gpu_that_faults_again_on_another_node_is_escalated_naming_its_earlier_remediation(
    make_stack: StackFactory,
) -> None:
    """The history is Temporal's own: the first run's search attributes, read through visibility."""
    stack = await make_stack(workloads=False)
    gpu = f"GPU-{uuid.uuid4()}"  # this test's own: the dev server keeps the other tests' runs
    policy = fast_policy(loops=LoopPolicy(max_per_node=0, gpu_window=timedelta(days=7)))

    async def fault_on(node: str) -> Any:
        fault = Fault(
            node=node, action=RecommendedAction.RESTART_BM, xid=79, gpu_uuids=(gpu,), event_id=str(uuid.uuid4())
        )
        return await remediations.report_fault(stack.server.client, fault, policy, task_queue=stack.task_queue)

    first = await fault_on(NODE)
    assert (await first.result()).phase is Phase.RESOLVED
    first_run = (await first.describe()).run_id

    async def indexed() -> bool:
        found = [
            r async for r in stack.server.client.list_workflows(f"GpuhealGpu = '{gpu}' AND GpuhealPhase = 'Resolved'")
        ]
        return len(found) == 1

    await eventually(indexed, "visibility to show the first remediation Resolved")
    moved = next(n for n in stack.cluster.node_names() if n != NODE)  # the board went into another machine
    status = await settled(await fault_on(moved))

    assert status.phase is Phase.ESCALATED, status.reason
    assert status.reason.startswith(f"repeat offender: GPU {gpu} faulted again within 7 days, 0:00:00 of ")
    assert f"remediate-{NODE} (run {first_run}, Resolved, ended " in status.reason
    assert stack.cluster.reboot_requests(moved) == 0
    assert (await stack.node(moved)).spec.unschedulable, "held cordoned for a person"


async def test_a_node_labelled_hold_waits_untouched_until_the_label_goes(make_stack: StackFactory) -> None:
    stack = await make_stack(workloads=False)
    await stack.core.patch_node(NODE, {"metadata": {"labels": {marks.HOLD_LABEL: "true"}}})
    handle = await stack.report(NODE)

    async def on_hold() -> bool:
        return await phase_of(handle) == Phase.ON_HOLD.value

    await eventually(on_hold, "the remediation on hold")
    await asyncio.sleep(1)
    node = await stack.node(NODE)
    assert not node.spec.unschedulable and gpuheal_marks(node) == set(), "the held node is not touched"

    await stack.core.patch_node(NODE, {"metadata": {"labels": {marks.HOLD_LABEL: None}}})
    status: RemediationStatus = await asyncio.wait_for(handle.result(), 30)

    assert status.phase is Phase.RESOLVED, status.reason
    assert stack.cluster.reboot_requests(NODE) == 1


async def test_gpus_a_reboot_does_not_fix_get_their_machine_replaced_where_the_policy_allows(
    make_stack: StackFactory,
) -> None:
    """The top of the ladder: the simulator provider terminates the machine, the simulated cloud's
    node controller deletes the node, and the run ends Replaced without touching the node again."""
    stack = await make_stack(fault_survives_reboot=True)
    handle = await stack.report(NODE, policy=fast_policy(replace=True, replace_timeout=timedelta(seconds=30)))

    status: RemediationStatus = await handle.result()

    assert status.phase is Phase.REPLACED, status.reason
    assert status.reason.startswith("GPUs did not report healthy within 0:00:10: ")
    assert f"simulator terminated the machine of {NODE} at " in status.reason
    assert NODE not in [node.metadata.name for node in (await stack.core.list_node()).items if node.metadata]
    assert await stack.pods_on(NODE) == [], "its pods went with it"
    assert [entry.phase for entry in status.history][-3:] == [Phase.VERIFYING, Phase.REPLACING, Phase.REPLACED]
    others = [n for n in stack.cluster.node_names() if n != NODE]
    assert others and all(stack.cluster.node_state(n)["terminatedAt"] is None for n in others)


async def test_the_simulated_agent_checks_the_gpus_before_the_node_goes_back(make_stack: StackFactory) -> None:
    stack = await make_stack(workloads=False)
    policy = fast_policy().model_copy(update={"validation": ValidationPolicy(level=2, timeout=timedelta(seconds=30))})

    status: RemediationStatus = await (await stack.report(NODE, policy=policy)).result()

    assert status.phase is Phase.RESOLVED, status.reason
    assert status.repair[-1] == "GPU check (simulator, level 2): All 8 GPUs are healthy"
    assert Phase.VALIDATING in [entry.phase for entry in status.history]
    node = await stack.node(NODE)
    assert not node.spec.unschedulable and gpuheal_marks(node) == set(), "the check order went with the marks"
