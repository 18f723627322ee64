"""The disruption controller and the eviction subresource, as kube-apiserver and kube-controller-manager have them.

Every test names the upstream file (kubernetes/kubernetes) whose rule it checks. The controller
writes a budget's status on its own, a little after the change that moved it; the eviction
subresource reads that stored status, decrements it and records the pod in ``disruptedPods`` in the
same write, and refuses with upstream's exact errors.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes.aio import client
from kubernetes.aio.client.exceptions import ApiException

from gpuheal_sim.simulator import DeploymentWorkload, JobWorkload, PdbSpec, SimulatedCluster
from gpuheal_sim.simulator.disruption import PDB_KEY

from .conftest import aio_api, eventually, fast_config

PROCESSING = "The disruption budget {} is still being processed by the server."
EXHAUSTED = "Cannot evict pod as it would violate the pod's disruption budget."


class Fleet:
    """A running fleet and the API groups the tests use."""

    def __init__(self, cluster: SimulatedCluster, api: client.ApiClient) -> None:
        self.cluster = cluster
        self.core: Any = client.CoreV1Api(api)
        self.policy: Any = client.PolicyV1Api(api)

    async def pdb(self, name: str, namespace: str) -> Any:
        return await self.policy.read_namespaced_pod_disruption_budget(name, namespace)

    async def synced(self, name: str, namespace: str, **expect: Any) -> Any:
        """The budget once the controller has written a status with these field values."""

        async def check() -> Any:
            pdb = await self.pdb(name, namespace)
            fields = {k: getattr(pdb.status, k) for k in expect}
            return pdb if fields == expect else None

        return await eventually(check, timeout=10)

    async def create_pdb(self, namespace: str, name: str, spec: dict[str, Any]) -> Any:
        body = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name}, "spec": spec}
        return await self.policy.create_namespaced_pod_disruption_budget(namespace, body)

    async def pods(self, namespace: str, selector: str) -> list[Any]:
        return list((await self.core.list_namespaced_pod(namespace, label_selector=selector)).items)

    async def evict(self, name: str, namespace: str) -> None:
        body = client.V1Eviction(metadata=client.V1ObjectMeta(name=name, namespace=namespace))
        await self.core.create_namespaced_pod_eviction(name, namespace, body)

    async def refused(self, name: str, namespace: str) -> tuple[ApiException, dict[str, Any]]:
        with pytest.raises(ApiException) as err:
            await self.evict(name, namespace)
        return err.value, json.loads(str(err.value.body))

    async def events(self, namespace: str, kind: str, name: str) -> list[Any]:
        listed = await self.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
        return [e for e in listed.items if e.involved_object.kind == kind]

    async def set_ready(self, pod: Any, ready: bool) -> None:
        conditions = [
            {"type": c.type, "status": ("True" if ready else "False") if c.type == "Ready" else c.status}
            for c in pod.status.conditions
        ]
        await self.core.patch_namespaced_pod_status(
            pod.metadata.name, pod.metadata.namespace, {"status": {"conditions": conditions}}
        )


@asynccontextmanager
async def fleet_of(tmp_path: Path, **config: Any) -> AsyncIterator[Fleet]:
    async with SimulatedCluster(fast_config(**config), state_dir=tmp_path) as cluster, await aio_api(cluster) as api:
        yield Fleet(cluster, api)


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    """The demo fleet: trainer x4 (one per node) under trainer-pdb (minAvailable 3)."""
    async with fleet_of(tmp_path) as running:
        yield running


@pytest.fixture
async def slow_fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    """The demo fleet with a disruption controller that takes a second to write a status."""
    async with fleet_of(tmp_path, pdb_sync_seconds=1.0) as running:
        yield running


def _job_fleet(**config: Any) -> dict[str, Any]:
    job = JobWorkload(name="eval", namespace="batch", pods=2, run_seconds=600, gpus=0)
    return {"nodes": 2, "workloads": [job], **config}


async def test_status_is_written_by_the_controller_after_the_change(slow_fleet: Fleet) -> None:
    """A new budget has the empty status the API server gives it until the controller syncs it;
    until then an eviction is answered 429 "still being processed" with Retry-After 10.

    Upstream: pkg/controller/disruption/disruption.go (``updatePdbStatus`` writes
    ``observedGeneration``), pkg/registry/core/pod/storage/eviction.go (``checkAndDecrement``,
    ``createTooManyRequestsError``), pkg/registry/policy/poddisruptionbudget/strategy.go
    (``PrepareForCreate`` resets the status).
    """
    fleet = slow_fleet
    created = await fleet.create_pdb("ml", "fresh", {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "x"}}})
    assert created.status.observed_generation in (None, 0)
    read = await fleet.pdb("fresh", "ml")
    assert (read.status.observed_generation, read.status.disruptions_allowed) in ((None, 0), (0, 0))
    assert not read.status.conditions, "no reader makes the controller compute a status"
    # The trainer's budget is already synced: move its selector onto a new generation.
    await fleet.synced("trainer-pdb", "ml", observed_generation=1, disruptions_allowed=1)
    await fleet.policy.patch_namespaced_pod_disruption_budget("trainer-pdb", "ml", {"spec": {"minAvailable": 2}})
    [pod, *_] = await fleet.pods("ml", "app=trainer")
    error, body = await fleet.refused(pod.metadata.name, "ml")
    assert error.status == 429
    assert error.headers is not None and error.headers["Retry-After"] == "10"
    assert body["message"] == EXHAUSTED
    assert body["details"] == {
        "causes": [{"reason": "DisruptionBudget", "message": PROCESSING.format("trainer-pdb")}],
        "retryAfterSeconds": 10,
    }
    pdb = await fleet.synced("trainer-pdb", "ml", observed_generation=2, desired_healthy=2, disruptions_allowed=2)
    [condition] = pdb.status.conditions
    assert (condition.type, condition.status, condition.reason, condition.observed_generation) == (
        "DisruptionAllowed",
        "True",
        "SufficientPods",
        2,
    )
    await fleet.evict(pod.metadata.name, "ml")


@pytest.mark.parametrize("bound", [{"maxUnavailable": 1}, {"minAvailable": "50%"}], ids=["maxUnavailable", "percent"])
async def test_a_job_pod_has_no_scale_so_the_budget_fails_safe(tmp_path: Path, bound: dict[str, Any]) -> None:
    """With ``maxUnavailable`` or a percentage, expected pods come only from a controller with a
    scale; a Job has none, so the sync fails: ``disruptionsAllowed`` 0, ``DisruptionAllowed=False``
    with reason ``SyncFailed`` and the error, a Warning Event, and ``observedGeneration`` left as
    it was (so evictions hear "still being processed").

    Upstream: pkg/controller/disruption/disruption.go (``getExpectedPodCount``,
    ``getExpectedScale``, ``getScaleController``, ``implementsScale``, ``trySync``, ``failSafe``),
    pkg/registry/core/pod/storage/eviction.go (``checkAndDecrement``).
    """
    async with fleet_of(tmp_path, **_job_fleet()) as fleet:
        await fleet.create_pdb("batch", "eval-pdb", {**bound, "selector": {"matchLabels": {"job-name": "eval"}}})
        why = "jobs.batch does not implement the scale subresource"

        async def failed_safe() -> Any:
            pdb = await fleet.pdb("eval-pdb", "batch")
            return pdb if pdb.status.conditions else None

        pdb = await eventually(failed_safe)
        [condition] = pdb.status.conditions
        assert (condition.type, condition.status, condition.reason, condition.message) == (
            "DisruptionAllowed",
            "False",
            "SyncFailed",
            why,
        )
        assert pdb.status.disruptions_allowed == 0
        assert pdb.status.observed_generation in (None, 0), "failSafe keeps the old observedGeneration"
        [event] = await fleet.events("batch", "PodDisruptionBudget", "eval-pdb")
        assert (event.type, event.reason, event.message, event.source.component) == (
            "Warning",
            "CalculateExpectedPodCountFailed",
            f"Failed to calculate the number of expected pods: {why}",
            "controllermanager",
        )
        [pod, *_] = await fleet.pods("batch", "job-name=eval")
        error, body = await fleet.refused(pod.metadata.name, "batch")
        assert error.status == 429
        assert body["details"]["causes"] == [{"reason": "DisruptionBudget", "message": PROCESSING.format("eval-pdb")}]
        # An integer minAvailable needs no scale: the same pods are counted one by one.
        await fleet.policy.patch_namespaced_pod_disruption_budget(
            "eval-pdb", "batch", {"spec": {"minAvailable": 1, "maxUnavailable": None}}
        )
        pdb = await fleet.synced("eval-pdb", "batch", observed_generation=2, expected_pods=2, disruptions_allowed=1)
        [condition] = pdb.status.conditions
        assert (condition.reason, condition.message) == ("SufficientPods", "")
        await fleet.evict(pod.metadata.name, "batch")


async def test_unmanaged_pods_are_left_out_of_the_expected_count(tmp_path: Path) -> None:
    """Pods with no controller at all do not fail the sync: they are left out of the expected count
    (so ``maxUnavailable`` over them alone expects 0 pods and allows nothing) and a Warning
    ``UnmanagedPods`` Event says so; a budget selecting nothing gets a Normal ``NoPods`` Event.

    Upstream: pkg/controller/disruption/disruption.go (``getExpectedScale`` collects
    ``unmanagedPods``; ``trySync`` records ``UnmanagedPods`` and ``NoPods``; ``updatePdbStatus``
    allows nothing while ``expectedCount`` is 0).
    """
    async with fleet_of(
        tmp_path, nodes=2, workloads=False, namespaces=["apps"], eviction_retry_after_seconds=0
    ) as fleet:
        for i in range(2):
            pod = {
                "metadata": {"name": f"bare-{i}", "labels": {"app": "bare"}},
                "spec": {"containers": [{"name": "main", "image": "busybox"}]},
            }
            await fleet.core.create_namespaced_pod("apps", pod)
        selector = {"matchLabels": {"app": "bare"}}
        await fleet.create_pdb("apps", "bare-pdb", {"maxUnavailable": 1, "selector": selector})
        await fleet.create_pdb("apps", "nothing-pdb", {"maxUnavailable": 1, "selector": {"matchLabels": {"x": "y"}}})
        pdb = await fleet.synced("bare-pdb", "apps", observed_generation=1, current_healthy=2)
        assert (pdb.status.expected_pods, pdb.status.desired_healthy, pdb.status.disruptions_allowed) == (0, 0, 0)
        [condition] = pdb.status.conditions
        assert (condition.status, condition.reason) == ("False", "InsufficientPods")
        [event] = await fleet.events("apps", "PodDisruptionBudget", "bare-pdb")
        assert (event.type, event.reason) == ("Warning", "UnmanagedPods")
        assert event.message == (
            "Pods selected by this PodDisruptionBudget (selector: &LabelSelector{MatchLabels:map[string]string"
            "{app: bare,},MatchExpressions:[]LabelSelectorRequirement{},}) were found to be unmanaged. As a result, "
            "the status of the PDB cannot be calculated correctly, which may result in undefined behavior. To "
            'account for these pods please set ".spec.minAvailable" field of the PDB to an integer value.'
        )
        error, body = await fleet.refused("bare-0", "apps")
        assert error.status == 429 and "Retry-After" not in (error.headers or {})
        assert body["details"] == {
            "causes": [
                {
                    "reason": "DisruptionBudget",
                    "message": "The disruption budget bare-pdb needs 0 healthy pods and has 2 currently",
                }
            ]
        }
        await fleet.synced("nothing-pdb", "apps", observed_generation=1)
        [event] = await fleet.events("apps", "PodDisruptionBudget", "nothing-pdb")
        assert (event.type, event.reason, event.message) == ("Normal", "NoPods", "No matching pods found")


async def test_eviction_decrements_and_records_the_pod_in_one_write(slow_fleet: Fleet) -> None:
    """An eviction writes ``disruptionsAllowed - 1`` and the pod in ``disruptedPods`` (with the time)
    in one status update, so a second eviction right after it is refused on the stored status
    before the controller has looked again; the controller later drops the entry of the pod that went.

    Upstream: pkg/registry/core/pod/storage/eviction.go (``checkAndDecrement``),
    pkg/controller/disruption/disruption.go (``buildDisruptedPodMap``, ``countHealthyPods``).
    """
    fleet = slow_fleet
    await fleet.synced("trainer-pdb", "ml", observed_generation=1, disruptions_allowed=1)
    first, second, *_ = await fleet.pods("ml", "app=trainer")
    before = datetime.now(UTC).replace(microsecond=0)
    await fleet.evict(first.metadata.name, "ml")
    pdb = await fleet.pdb("trainer-pdb", "ml")
    assert (pdb.status.disruptions_allowed, pdb.status.current_healthy, pdb.status.desired_healthy) == (0, 4, 3)
    assert list(pdb.status.disrupted_pods) == [first.metadata.name]
    assert before <= pdb.status.disrupted_pods[first.metadata.name] <= datetime.now(UTC)
    [condition] = pdb.status.conditions
    assert (condition.status, condition.reason) == ("False", "InsufficientPods")
    error, body = await fleet.refused(second.metadata.name, "ml")
    assert error.status == 429
    assert body["details"]["causes"] == [
        {
            "reason": "DisruptionBudget",
            "message": "The disruption budget trainer-pdb needs 3 healthy pods and has 4 currently",
        }
    ]
    evicted = await fleet.core.read_namespaced_pod(first.metadata.name, "ml")
    target = next(c for c in evicted.status.conditions if c.type == "DisruptionTarget")
    assert (target.status, target.reason, target.message) == ("True", "EvictionByEvictionAPI", "Eviction API: evicting")

    async def entry_dropped() -> Any:
        pdb = await fleet.pdb("trainer-pdb", "ml")
        return pdb if not pdb.status.disrupted_pods else None

    await eventually(entry_dropped)


async def test_a_disrupted_pod_that_is_never_deleted_expires(tmp_path: Path) -> None:
    """A pod in ``disruptedPods`` that is not being deleted does not count as healthy until the
    deletion timeout has passed; then the controller drops it with a Warning ``NotDeleted`` Event on
    the pod. Entries for pods that are gone are dropped at once.

    Upstream: pkg/controller/disruption/disruption.go (``DeletionTimeout``, ``buildDisruptedPodMap``,
    ``countHealthyPods``, the recheck queue).
    """
    async with fleet_of(tmp_path, pdb_deletion_timeout_seconds=2.0) as fleet:
        await fleet.synced("trainer-pdb", "ml", observed_generation=1, disruptions_allowed=1)
        [pod, *_] = await fleet.pods("ml", "app=trainer")
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        disrupted = {pod.metadata.name: now, "trainer-gone": now}
        await fleet.policy.patch_namespaced_pod_disruption_budget_status(
            "trainer-pdb", "ml", {"status": {"disruptedPods": disrupted}}
        )
        pdb = await fleet.synced("trainer-pdb", "ml", current_healthy=3, disruptions_allowed=0)
        assert list(pdb.status.disrupted_pods) == [pod.metadata.name]
        pdb = await fleet.synced("trainer-pdb", "ml", current_healthy=4, disruptions_allowed=1, disrupted_pods=None)
        [event] = await fleet.events("ml", "Pod", pod.metadata.name)
        assert (event.type, event.reason, event.message) == (
            "Warning",
            "NotDeleted",
            # Upstream formats the budget as "<namespace>/<namespace>".
            "Pod was expected by PDB ml/ml to be deleted but it wasn't",
        )


async def test_a_negative_budget_or_a_full_disrupted_map_is_forbidden(tmp_path: Path) -> None:
    """``disruptionsAllowed < 0`` and more than 2000 ``disruptedPods`` are 403 Forbidden.

    Upstream: pkg/registry/core/pod/storage/eviction.go (``checkAndDecrement``, ``MaxDisruptedPodSize``).
    """
    async with fleet_of(tmp_path, pdb_sync_seconds=30.0) as fleet:
        sim = fleet.cluster.simulation
        [pod, *_] = await fleet.pods("ml", "app=trainer")
        base = {"observedGeneration": 1, "currentHealthy": 4, "desiredHealthy": 3, "expectedPods": 4}
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        cases: list[tuple[dict[str, Any], str]] = [
            ({**base, "disruptionsAllowed": -1}, "pdb disruptions allowed is negative"),
            (
                {**base, "disruptionsAllowed": 1, "disruptedPods": {f"p-{i}": now for i in range(2001)}},
                "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
            ),
        ]
        for status, why in cases:
            sim.registry.write_status(PDB_KEY, "ml", "trainer-pdb", status)
            error, body = await fleet.refused(pod.metadata.name, "ml")
            assert error.status == 403
            assert body == {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": f'poddisruptionbudget.policy "trainer-pdb" is forbidden: {why}',
                "reason": "Forbidden",
                "details": {"name": "trainer-pdb", "group": "policy", "kind": "poddisruptionbudget"},
                "code": 403,
            }
        sim.registry.write_status(PDB_KEY, "ml", "trainer-pdb", {**base, "disruptionsAllowed": 1})
        await fleet.evict(pod.metadata.name, "ml")


async def test_two_budgets_on_one_pod_answer_upstreams_500(fleet: Fleet) -> None:
    """A pod under two budgets cannot be evicted: the subresource returns a failure ``Status`` with
    code 500 and no reason; when the pod next changes the controller warns on it
    (``MultiplePodDisruptionBudgets``).

    Upstream: pkg/registry/core/pod/storage/eviction.go (``Create``: ``len(pdbs) > 1``),
    staging/src/k8s.io/apiserver/pkg/endpoints/handlers/finisher/finisher.go (a failure Status is
    an error), pkg/controller/disruption/disruption.go (``getPdbForPod``).
    """
    await fleet.create_pdb("ml", "also", {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "trainer"}}})
    [pod, *_] = await fleet.pods("ml", "app=trainer")
    error, body = await fleet.refused(pod.metadata.name, "ml")
    assert error.status == 500
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
        "code": 500,
    }
    # The controller looks for budgets of a pod when the pod changes.
    await fleet.core.patch_namespaced_pod(pod.metadata.name, "ml", {"metadata": {"annotations": {"touched": "1"}}})

    async def warned() -> Any:
        events = await fleet.events("ml", "Pod", pod.metadata.name)
        return [e for e in events if e.reason == "MultiplePodDisruptionBudgets"] or None

    [event] = await eventually(warned)
    assert event.type == "Warning"
    assert (
        event.message
        == f'Pod "ml"/"{pod.metadata.name}" matches multiple PodDisruptionBudgets.  Chose "also" arbitrarily.'
    )


async def test_the_eviction_must_name_the_pod(fleet: Fleet) -> None:
    """The Eviction's ``metadata.name`` must be the pod's name in the URL, and an empty one is not.

    Upstream: pkg/registry/core/pod/storage/eviction.go (``Create``: ``name != eviction.Name``).
    """
    [pod, *_] = await fleet.pods("ml", "app=trainer")
    for name in ("", "someone-else"):
        body = client.V1Eviction(metadata=client.V1ObjectMeta(name=name or None))
        with pytest.raises(ApiException) as err:
            await fleet.core.create_namespaced_pod_eviction(pod.metadata.name, "ml", body)
        assert err.value.status == 400
        assert json.loads(str(err.value.body))["message"] == "name in URL does not match name in Eviction object"


async def test_unready_pods_follow_the_unhealthy_pod_eviction_policy(tmp_path: Path) -> None:
    """An unready pod is evicted without touching the budget when the budget is met
    (``IfHealthyBudget``, the default) or always (``AlwaysAllow``); otherwise the budget decides.
    Pending and terminating pods skip the budget. Every evicted pod gets ``DisruptionTarget``.

    Upstream: pkg/registry/core/pod/storage/eviction.go (``Create``: the ``IsPodReady`` branch,
    ``canIgnorePDB``, ``addConditionAndDeletePod``).
    """
    svc = DeploymentWorkload(name="svc", namespace="apps", replicas=3, gpus=0, pdb=PdbSpec(min_available=2))
    async with fleet_of(tmp_path, nodes=3, workloads=[svc]) as fleet:
        await fleet.synced("svc-pdb", "apps", observed_generation=1, current_healthy=3, disruptions_allowed=1)
        a, b, c = await fleet.pods("apps", "app=svc")
        await fleet.set_ready(a, False)
        await fleet.synced("svc-pdb", "apps", current_healthy=2, disruptions_allowed=0)
        await fleet.evict(a.metadata.name, "apps")
        pdb = await fleet.pdb("svc-pdb", "apps")
        assert (pdb.status.disruptions_allowed, pdb.status.disrupted_pods) == (0, None), "the budget is untouched"
        gone = await fleet.core.read_namespaced_pod(a.metadata.name, "apps")
        assert gone.metadata.deletion_timestamp is not None
        assert any(x.type == "DisruptionTarget" and x.status == "True" for x in gone.status.conditions)
        # Below the budget an unready pod is held like any other...
        await fleet.set_ready(b, False)
        await fleet.set_ready(c, False)

        async def below() -> Any:
            pdb = await fleet.pdb("svc-pdb", "apps")
            return pdb if pdb.status.current_healthy < 2 else None

        await eventually(below)
        error, _ = await fleet.refused(b.metadata.name, "apps")
        assert error.status == 429
        # ... unless the budget lets unhealthy pods go always.
        await fleet.policy.patch_namespaced_pod_disruption_budget(
            "svc-pdb", "apps", {"spec": {"unhealthyPodEvictionPolicy": "AlwaysAllow"}}
        )
        await fleet.evict(b.metadata.name, "apps")
        # A pod that is already terminating, and a Pending one, skip the budget.
        await fleet.policy.patch_namespaced_pod_disruption_budget(
            "svc-pdb", "apps", {"spec": {"minAvailable": 3, "unhealthyPodEvictionPolicy": None}}
        )
        await fleet.evict(b.metadata.name, "apps")
        pending = {
            "metadata": {"name": "waiting", "labels": {"app": "svc"}},
            "spec": {
                "containers": [{"name": "main", "image": "busybox", "resources": {"limits": {"nvidia.com/gpu": "64"}}}]
            },
        }
        await fleet.core.create_namespaced_pod("apps", pending)
        await fleet.evict("waiting", "apps")
        with pytest.raises(ApiException) as err:
            await fleet.core.read_namespaced_pod("waiting", "apps")
        assert err.value.status == 404
