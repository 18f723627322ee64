"""Pods, evictions, PodDisruptionBudgets and the workload controllers, through the asyncio client."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes.aio import client
from kubernetes.aio.client.exceptions import ApiException

from gpuheal_sim.simulator import (
    DaemonSetWorkload,
    DeploymentWorkload,
    JobWorkload,
    PdbSpec,
    SimulatedCluster,
    StaticPodWorkload,
)

from .conftest import aio_api, eventually, fast_config


def _evict_body(name: str, grace: int | None = None) -> Any:
    options = client.V1DeleteOptions(grace_period_seconds=grace) if grace is not None else None
    return client.V1Eviction(metadata=client.V1ObjectMeta(name=name), delete_options=options)


def _ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


async def _trainer_on(core: Any, node: str) -> Any:
    """The trainer pod running (Ready, not terminating) on ``node``."""
    pods = await core.list_namespaced_pod("ml", field_selector=f"spec.nodeName={node}", label_selector="app=trainer")
    live = [p for p in pods.items if p.metadata.deletion_timestamp is None and _ready(p)]
    assert len(live) == 1
    return live[0]


async def _budget(policy: Any, name: str, namespace: str, **expect: Any) -> Any:
    """The budget once the disruption controller has written a status with these values."""

    async def check() -> Any:
        pdb = await policy.read_namespaced_pod_disruption_budget(name, namespace)
        return pdb if all(getattr(pdb.status, k) == v for k, v in expect.items()) else None

    return await eventually(check, timeout=5)


async def test_field_and_label_selectors(core: Any) -> None:
    on_node = await core.list_pod_for_all_namespaces(field_selector="spec.nodeName=gpu-node-000")
    names = sorted((p.metadata.namespace, p.metadata.name.rsplit("-", 1)[0]) for p in on_node.items)
    assert [ns for ns, _ in names] == ["batch", "kube-system", "kube-system", "ml"]
    assert all(p.spec.node_name == "gpu-node-000" for p in on_node.items)
    not_ml = await core.list_pod_for_all_namespaces(
        field_selector="spec.nodeName=gpu-node-000,metadata.namespace!=ml,status.phase=Running"
    )
    assert {p.metadata.namespace for p in not_ml.items} == {"batch", "kube-system"}
    trainers = await core.list_namespaced_pod("ml", label_selector="app in (trainer),pod-template-hash")
    assert len(trainers.items) == 4
    ref = trainers.items[0].metadata.owner_references[0]
    assert (ref.kind, ref.controller) == ("ReplicaSet", True)
    assert (await core.list_namespaced_pod("ml", label_selector="!app")).items == []
    mirror = await core.list_namespaced_pod("kube-system", label_selector="k8s-app=kube-proxy")
    assert len(mirror.items) == 4
    assert all("kubernetes.io/config.mirror" in p.metadata.annotations for p in mirror.items)
    assert mirror.items[0].metadata.owner_references[0].kind == "Node"
    with pytest.raises(ApiException) as err:
        await core.list_pod_for_all_namespaces(field_selector="spec.bogus=1")
    assert err.value.status == 400


async def test_delete_with_grace_period_terminates_then_removes(core: Any) -> None:
    pod = await _trainer_on(core, "gpu-node-001")
    deleted = await core.delete_namespaced_pod(pod.metadata.name, "ml", grace_period_seconds=1)
    assert deleted.metadata.deletion_timestamp is not None
    assert deleted.metadata.deletion_grace_period_seconds == 1
    still = await core.read_namespaced_pod(pod.metadata.name, "ml")
    assert still.metadata.deletion_timestamp is not None, "a terminating pod stays listed"

    async def gone() -> bool:
        try:
            await core.read_namespaced_pod(pod.metadata.name, "ml")
        except ApiException as err:
            return bool(err.status == 404)
        return False

    await eventually(gone, timeout=5)


async def test_delete_with_grace_zero_is_immediate(core: Any) -> None:
    pod = await _trainer_on(core, "gpu-node-002")
    await core.delete_namespaced_pod(pod.metadata.name, "ml", body=client.V1DeleteOptions(grace_period_seconds=0))
    with pytest.raises(ApiException) as err:
        await core.read_namespaced_pod(pod.metadata.name, "ml")
    assert err.value.status == 404


async def test_eviction_honours_the_disruption_budget(api: client.ApiClient, core: Any) -> None:
    policy: Any = client.PolicyV1Api(api)
    pdb = await _budget(policy, "trainer-pdb", "ml", observed_generation=1)
    assert (pdb.status.current_healthy, pdb.status.desired_healthy, pdb.status.expected_pods) == (4, 3, 4)
    assert pdb.status.disruptions_allowed == 1
    # Cordon the first node so that the replacement goes elsewhere, then evict its trainer.
    await core.patch_node("gpu-node-000", {"spec": {"unschedulable": True}})
    first = await _trainer_on(core, "gpu-node-000")
    second = await _trainer_on(core, "gpu-node-001")
    await core.create_namespaced_pod_eviction(first.metadata.name, "ml", _evict_body(first.metadata.name))
    evicted = await core.read_namespaced_pod(first.metadata.name, "ml")
    assert evicted.metadata.deletion_timestamp is not None
    # The eviction spent the disruption in the budget's stored status.
    pdb = await policy.read_namespaced_pod_disruption_budget("trainer-pdb", "ml")
    assert pdb.status.disruptions_allowed == 0
    with pytest.raises(ApiException) as err:
        await core.create_namespaced_pod_eviction(second.metadata.name, "ml", _evict_body(second.metadata.name))
    assert err.value.status == 429
    assert err.value.reason == "Too Many Requests"
    assert err.value.headers is not None and err.value.headers["Retry-After"] == "1"
    body = json.loads(str(err.value.body))
    assert body["reason"] == "TooManyRequests"
    assert body["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    [cause] = body["details"]["causes"]
    assert cause["reason"] == "DisruptionBudget"
    # 4 healthy while the controller has not looked since the eviction, 3 once it has.
    assert re.fullmatch(
        r"The disruption budget trainer-pdb needs 3 healthy pods and has [34] currently", cause["message"]
    )
    assert (await core.read_namespaced_pod(second.metadata.name, "ml")).metadata.deletion_timestamp is None
    # Evicting the pod that is already terminating still succeeds.
    await core.create_namespaced_pod_eviction(first.metadata.name, "ml", _evict_body(first.metadata.name))

    async def budget_back() -> Any:
        current = await policy.read_namespaced_pod_disruption_budget("trainer-pdb", "ml")
        return current if current.status.disruptions_allowed == 1 else None

    pdb = await eventually(budget_back, timeout=5)
    assert pdb.status.current_healthy == 4
    replacement = [
        p
        for p in (await core.list_namespaced_pod("ml", label_selector="app=trainer")).items
        if p.metadata.name not in (first.metadata.name,) and p.metadata.creation_timestamp is not None
    ]
    nodes = {p.spec.node_name for p in replacement if p.metadata.deletion_timestamp is None}
    assert "gpu-node-000" not in nodes, "the replacement never lands on the cordoned node"
    await core.create_namespaced_pod_eviction(second.metadata.name, "ml", _evict_body(second.metadata.name))


async def test_eviction_of_unknown_pod_is_404(core: Any) -> None:
    with pytest.raises(ApiException) as err:
        await core.create_namespaced_pod_eviction("nope", "ml", _evict_body("nope"))
    assert err.value.status == 404
    assert json.loads(str(err.value.body))["message"] == 'pods "nope" not found'


async def test_replicaset_replacement_avoids_cordoned_and_tainted_nodes(tmp_path: Path) -> None:
    config = fast_config(
        nodes=4,
        workloads=[DeploymentWorkload(name="web", namespace="apps", replicas=2, gpus=4)],
    )
    async with SimulatedCluster(config, state_dir=tmp_path) as cluster, await aio_api(cluster) as api:
        core: Any = client.CoreV1Api(api)
        start = {p.spec.node_name for p in (await core.list_namespaced_pod("apps")).items}
        assert start == {"gpu-node-000", "gpu-node-001"}
        await core.patch_node("gpu-node-002", {"spec": {"unschedulable": True}})
        await core.patch_node(
            "gpu-node-003", {"spec": {"taints": [{"key": "gpuheal.io/quarantine", "effect": "NoSchedule"}]}}
        )
        victim = (await core.list_namespaced_pod("apps", field_selector="spec.nodeName=gpu-node-000")).items[0]
        await core.patch_node("gpu-node-000", {"spec": {"unschedulable": True}})
        await core.create_namespaced_pod_eviction(victim.metadata.name, "apps", _evict_body(victim.metadata.name, 0))

        async def replaced() -> Any:
            pods = (await core.list_namespaced_pod("apps")).items
            ready = [p for p in pods if p.status.phase == "Running" and _ready(p)]
            return ready if len(ready) == 2 and victim.metadata.name not in {p.metadata.name for p in pods} else None

        pods = await eventually(replaced, timeout=5)
        assert sorted(p.spec.node_name for p in pods) == ["gpu-node-001", "gpu-node-001"]
        apps: Any = client.AppsV1Api(api)
        rs = (await apps.list_namespaced_replica_set("apps")).items[0]
        assert rs.status.ready_replicas == 2
        assert rs.metadata.owner_references[0].kind == "Deployment"
        # No node can take a third 4-GPU pod: it stays Pending and says why.
        await apps.patch_namespaced_deployment("web", "apps", {"spec": {"replicas": 3}})

        async def unschedulable() -> Any:
            for pod in (await core.list_namespaced_pod("apps")).items:
                for cond in pod.status.conditions or []:
                    if cond.type == "PodScheduled" and cond.status == "False":
                        return pod
            return None

        pending = await eventually(unschedulable, timeout=5)
        assert pending.status.phase == "Pending"
        conds = {c.type: c for c in pending.status.conditions}
        assert conds["PodScheduled"].reason == "Unschedulable"
        assert "Insufficient nvidia.com/gpu" in conds["PodScheduled"].message
        # Uncordoning a node lets the scheduler place it.
        await core.patch_node("gpu-node-002", {"spec": {"unschedulable": False}})

        async def placed() -> str | None:
            pod = await core.read_namespaced_pod(pending.metadata.name, "apps")
            return pod.spec.node_name if pod.status.phase == "Running" else None

        assert await eventually(placed, timeout=5) == "gpu-node-002"


async def test_job_pods_complete(tmp_path: Path) -> None:
    config = fast_config(nodes=2, workloads=[JobWorkload(name="eval", namespace="batch", pods=2, run_seconds=0.3)])
    async with SimulatedCluster(config, state_dir=tmp_path) as cluster, await aio_api(cluster) as api:
        batch: Any = client.BatchV1Api(api)
        core: Any = client.CoreV1Api(api)

        async def complete() -> Any:
            job = await batch.read_namespaced_job("eval", "batch")
            done = any(c.type == "Complete" and c.status == "True" for c in job.status.conditions or [])
            return job if done else None

        job = await eventually(complete, timeout=5)
        assert job.status.succeeded == 2
        pods = (await core.list_namespaced_pod("batch", label_selector="job-name=eval")).items
        assert [p.status.phase for p in pods] == ["Succeeded", "Succeeded"]
        assert pods[0].metadata.owner_references[0].kind == "Job"
        assert pods[0].status.container_statuses[0].state.terminated.reason == "Completed"


async def test_job_pod_deleted_before_it_finished_is_replaced(tmp_path: Path) -> None:
    config = fast_config(nodes=2, workloads=[JobWorkload(name="eval", namespace="batch", pods=1, run_seconds=30)])
    async with SimulatedCluster(config, state_dir=tmp_path) as cluster, await aio_api(cluster) as api:
        core: Any = client.CoreV1Api(api)
        first = (await core.list_namespaced_pod("batch")).items[0]
        await core.delete_namespaced_pod(first.metadata.name, "batch", grace_period_seconds=0)

        async def replacement() -> Any:
            pods = (await core.list_namespaced_pod("batch")).items
            return pods[0] if pods and pods[0].metadata.name != first.metadata.name else None

        await eventually(replacement, timeout=5)
        batch: Any = client.BatchV1Api(api)
        job = await batch.read_namespaced_job("eval", "batch")
        assert job.status.failed == 1


async def test_daemonset_pod_is_recreated_on_its_node_only(tmp_path: Path) -> None:
    config = fast_config(nodes=3, workloads=[DaemonSetWorkload(name="agent", namespace="kube-system")])
    async with SimulatedCluster(config, state_dir=tmp_path) as cluster, await aio_api(cluster) as api:
        core: Any = client.CoreV1Api(api)
        await core.patch_node("gpu-node-001", {"spec": {"unschedulable": True}})
        pod = (await core.list_namespaced_pod("kube-system", field_selector="spec.nodeName=gpu-node-001")).items[0]
        assert pod.metadata.owner_references[0].kind == "DaemonSet"
        await core.delete_namespaced_pod(pod.metadata.name, "kube-system", grace_period_seconds=0)

        async def recreated() -> Any:
            pods = (await core.list_namespaced_pod("kube-system", label_selector="app=agent")).items
            fresh = [p for p in pods if p.metadata.name != pod.metadata.name and p.spec.node_name == "gpu-node-001"]
            return fresh[0] if fresh and fresh[0].status.phase == "Running" else None

        await eventually(recreated, timeout=5)
        pods = (await core.list_namespaced_pod("kube-system", label_selector="app=agent")).items
        assert sorted(p.spec.node_name for p in pods) == ["gpu-node-000", "gpu-node-001", "gpu-node-002"]
        apps: Any = client.AppsV1Api(api)
        ds = await apps.read_namespaced_daemon_set("agent", "kube-system")
        assert ds.status.desired_number_scheduled == 3 and ds.status.number_ready == 3


async def test_mirror_pod_comes_back_and_long_grace_pod_lingers(tmp_path: Path) -> None:
    config = fast_config(
        nodes=1,
        workloads=[
            StaticPodWorkload(name="kube-proxy"),
            DeploymentWorkload(
                name="slow", namespace="apps", replicas=1, gpus=0, termination_grace_seconds=600, shutdown_seconds=0.5
            ),
        ],
    )
    async with SimulatedCluster(config, state_dir=tmp_path) as cluster, await aio_api(cluster) as api:
        core: Any = client.CoreV1Api(api)
        await core.delete_namespaced_pod("kube-proxy-gpu-node-000", "kube-system")

        async def mirror_back() -> bool:
            try:
                pod = await core.read_namespaced_pod("kube-proxy-gpu-node-000", "kube-system")
            except ApiException:
                return False
            return pod.status.phase == "Running" and pod.metadata.deletion_timestamp is None

        await eventually(mirror_back, timeout=5)
        slow = (await core.list_namespaced_pod("apps")).items[0]
        deleted = await core.delete_namespaced_pod(slow.metadata.name, "apps")
        assert deleted.metadata.deletion_grace_period_seconds == 600
        # Its process exits after 0.5 s (shutdown-seconds), long before the 600 s grace period.

        async def gone() -> bool:
            names = [p.metadata.name for p in (await core.list_namespaced_pod("apps")).items]
            return slow.metadata.name not in names

        await eventually(gone, timeout=5)


async def test_pdb_created_through_the_api_with_max_unavailable(tmp_path: Path) -> None:
    config = fast_config(
        nodes=4,
        workloads=[
            DeploymentWorkload(name="svc", namespace="apps", replicas=4, gpus=0, pdb=PdbSpec(max_unavailable="50%"))
        ],
    )
    async with SimulatedCluster(config, state_dir=tmp_path) as cluster, await aio_api(cluster) as api:
        policy: Any = client.PolicyV1Api(api)
        pdb = await _budget(policy, "svc-pdb", "apps", observed_generation=1)
        assert (pdb.status.expected_pods, pdb.status.desired_healthy, pdb.status.disruptions_allowed) == (4, 2, 2)
        created = await policy.create_namespaced_pod_disruption_budget(
            "apps",
            client.V1PodDisruptionBudget(
                metadata=client.V1ObjectMeta(name="strict"),
                spec=client.V1PodDisruptionBudgetSpec(
                    min_available=4, selector=client.V1LabelSelector(match_labels={"app": "svc"})
                ),
            ),
        )
        assert created.metadata.name == "strict"
        await _budget(policy, "strict", "apps", observed_generation=1)
        listed = await policy.list_pod_disruption_budget_for_all_namespaces()
        strict = next(p for p in listed.items if p.metadata.name == "strict")
        assert strict.status.disruptions_allowed == 0 and strict.status.current_healthy == 4
        core: Any = client.CoreV1Api(api)
        pod = (await core.list_namespaced_pod("apps")).items[0]
        with pytest.raises(ApiException) as err:
            await core.create_namespaced_pod_eviction(pod.metadata.name, "apps", _evict_body(pod.metadata.name))
        assert err.value.status == 500, "two budgets for one pod is an error, as on a real server"
        patched = await policy.patch_namespaced_pod_disruption_budget("strict", "apps", {"spec": {"minAvailable": 3}})
        assert patched.metadata.generation == 2
        strict = await _budget(policy, "strict", "apps", observed_generation=2)
        assert (strict.status.desired_healthy, strict.status.disruptions_allowed) == (3, 1)
        await policy.delete_namespaced_pod_disruption_budget("strict", "apps")
        await core.create_namespaced_pod_eviction(pod.metadata.name, "apps", _evict_body(pod.metadata.name))


async def test_events_core_and_events_v1(api: client.ApiClient, core: Any) -> None:
    await core.create_namespaced_event(
        "default",
        client.CoreV1Event(
            metadata=client.V1ObjectMeta(name="gpu-node-000.1"),
            involved_object=client.V1ObjectReference(kind="Node", name="gpu-node-000"),
            reason="GpuhealQuarantined",
            message="quarantined by gpuheal",
            type="Warning",
        ),
    )
    listed = await core.list_namespaced_event("default", field_selector="involvedObject.name=gpu-node-000")
    assert [e.reason for e in listed.items] == ["GpuhealQuarantined"]
    v1: Any = client.EventsV1Api(api)
    seen = await v1.list_namespaced_event("default")
    assert [(e.reason, e.note, e.regarding.name) for e in seen.items] == [
        ("GpuhealQuarantined", "quarantined by gpuheal", "gpu-node-000")
    ]
    created = await v1.create_namespaced_event(
        "ml",
        client.EventsV1Event(
            metadata=client.V1ObjectMeta(name="drain.1"),
            event_time=datetime.now(UTC),
            reporting_controller="gpuheal.io/worker",
            reporting_instance="worker-0",
            action="Drain",
            reason="Evicted",
            note="evicted by gpuheal",
            type="Normal",
            regarding=client.V1ObjectReference(kind="Pod", namespace="ml", name="trainer-x"),
        ),
    )
    assert created.note == "evicted by gpuheal"
    as_core = await core.read_namespaced_event("drain.1", "ml")
    assert (as_core.message, as_core.involved_object.name, as_core.reporting_component) == (
        "evicted by gpuheal",
        "trainer-x",
        "gpuheal.io/worker",
    )
    with pytest.raises(ApiException) as err:
        await core.create_namespaced_event(
            "no-such-ns",
            client.CoreV1Event(metadata=client.V1ObjectMeta(name="x"), involved_object=client.V1ObjectReference()),
        )
    assert err.value.status == 404


async def test_namespaces_and_deployments_are_listable(api: client.ApiClient, core: Any) -> None:
    names = [n.metadata.name for n in (await core.list_namespace()).items]
    assert {"default", "kube-system", "ml", "batch"} <= set(names)
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="team-a")))
    assert (await core.read_namespace("team-a")).status.phase == "Active"
    apps: Any = client.AppsV1Api(api)
    deployment = await apps.read_namespaced_deployment("trainer", "ml")
    assert deployment.status.ready_replicas == 4
    assert [d.metadata.name for d in (await apps.list_daemon_set_for_all_namespaces()).items] == ["gpu-agent"]
    with pytest.raises(ApiException) as err:
        await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="team-a")))
    assert err.value.status == 409 and json.loads(str(err.value.body))["reason"] == "AlreadyExists"
