"""One drain pass against the simulated API server: what a refused eviction reports, and that the pass goes on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes.aio import client
from temporalio.testing import ActivityEnvironment

from gpuheal.activities.drain import DrainActivities
from gpuheal.domain.budgets import never_allows
from gpuheal.domain.policy import DrainPolicy
from gpuheal.domain.steps import DrainProgress, DrainRequest, PodRef
from gpuheal_sim.simulator import DeploymentWorkload, FleetConfig, JobWorkload, SimulatedCluster
from tests.simulator.conftest import eventually

NODE = "gpu-node-000"
REQUEST = DrainRequest(node=NODE, holder="remediate-gpu-node-000/run-1", policy=DrainPolicy(settle=timedelta(0)))


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[SimulatedCluster]:
    workloads = [
        JobWorkload(name="eval", namespace="batch", pods=2, run_seconds=600, gpus=0),
        DeploymentWorkload(name="svc", namespace="apps", replicas=2, gpus=0),
        DeploymentWorkload(name="web", namespace="web", replicas=2, gpus=0),
    ]
    config = FleetConfig(nodes=2, gpus_per_node=2, pod_start_seconds=0.1, workloads=workloads)
    async with SimulatedCluster(config, state_dir=tmp_path) as running:
        yield running


async def budget(api: client.ApiClient, namespace: str, name: str, spec: dict[str, Any]) -> Any:
    """Create a budget and wait until the disruption controller has looked at it."""
    policy: Any = client.PolicyV1Api(api)
    body = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name}, "spec": spec}
    await policy.create_namespaced_pod_disruption_budget(namespace, body)

    async def seen() -> Any:
        pdb = await policy.read_namespaced_pod_disruption_budget(name, namespace)
        return pdb if pdb.status.conditions else None

    return await eventually(seen)


async def drain_pass(api: client.ApiClient) -> tuple[DrainProgress, dict[str, PodRef]]:
    """Cordon the node and run one pass; also the pods that were on it, by namespace."""
    core: Any = client.CoreV1Api(api)
    await core.patch_node(NODE, {"spec": {"unschedulable": True}})
    pods = (await core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={NODE}")).items
    refs = {p.metadata.namespace: PodRef(namespace=p.metadata.namespace, name=p.metadata.name) for p in pods}
    progress: DrainProgress = await ActivityEnvironment().run(DrainActivities(api).drain_node, REQUEST)
    return progress, refs


async def test_a_refused_eviction_reports_the_budget_its_429_names(api: client.ApiClient) -> None:
    await budget(api, "batch", "eval-pdb", {"maxUnavailable": 1, "selector": {"matchLabels": {"job-name": "eval"}}})

    progress, pods = await drain_pass(api)

    assert progress.blocked == (pods["batch"],)
    [hold] = progress.holds
    assert hold.pod == pods["batch"]
    assert (hold.budget.ref, hold.budget.max_unavailable, hold.budget.condition_reason) == (
        "batch/eval-pdb",
        1,
        "SyncFailed",
    )
    assert hold.budget.condition_message == "jobs.batch does not implement the scale subresource"
    assert never_allows(hold.budget) is not None
    assert progress.evicted == 2 and progress.failed == ()


async def test_a_pod_the_api_refuses_is_reported_and_the_pass_goes_on(api: client.ApiClient) -> None:
    for name in ("svc-pdb", "svc-too"):
        await budget(api, "apps", name, {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "svc"}}})

    progress, pods = await drain_pass(api)

    [failure] = progress.failed
    assert failure.pod == pods["apps"]
    assert failure.error == (
        "HTTP 500: This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
    )
    assert progress.evicted == 2, "the Job's and web's pods, listed after it, were evicted all the same"
    assert progress.blocked == () and pods["apps"] in progress.remaining
