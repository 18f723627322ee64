"""What the activities count: a drain pass's pods by result, reboots by provider and result."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from kubernetes.aio import client
from temporalio.exceptions import ApplicationError
from temporalio.runtime import BufferedMetricUpdate, MetricBuffer, Runtime, TelemetryConfig
from temporalio.testing import ActivityEnvironment

from gpuheal.activities.drain import DrainActivities
from gpuheal.domain.steps import RebootRequest
from gpuheal.kubeclient import connect
from gpuheal_sim.simulator import DeploymentWorkload, FleetConfig, JobWorkload, SimulatedCluster
from tests.activities.test_drain import NODE, REQUEST, budget
from tests.activities.test_repair import HOLDER, repair
from tests.cloud_fleet import cloud_fleet


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[client.ApiClient]:
    workloads = [
        JobWorkload(name="eval", namespace="batch", pods=2, run_seconds=600, gpus=0),
        DeploymentWorkload(name="svc", namespace="apps", replicas=2, gpus=0),
        DeploymentWorkload(name="web", namespace="web", replicas=2, gpus=0),
    ]
    config = FleetConfig(nodes=2, gpus_per_node=2, pod_start_seconds=0.1, workloads=workloads)
    async with SimulatedCluster(config, state_dir=tmp_path) as cluster, await connect(cluster.kubeconfig) as api:
        yield api


def metered() -> tuple[ActivityEnvironment, MetricBuffer]:
    buffer = MetricBuffer(1000)
    env = ActivityEnvironment()
    env.metric_meter = Runtime(telemetry=TelemetryConfig(metrics=buffer)).metric_meter
    return env, buffer


def totals(updates: Sequence[BufferedMetricUpdate], name: str, label: str) -> Counter[str]:
    """The counter `name`'s increments, summed by the value of its `label`."""
    found: Counter[str] = Counter()
    for update in updates:
        if update.metric.name == name:
            found[str(update.attributes[label])] += int(update.value)
    return found


async def test_a_drain_pass_counts_its_pods_evicted_blocked_and_failed(api: client.ApiClient) -> None:
    # The Job's budget refuses (429), the Deployment under two budgets is refused by the API (500).
    await budget(api, "batch", "eval-pdb", {"maxUnavailable": 1, "selector": {"matchLabels": {"job-name": "eval"}}})
    for name in ("svc-pdb", "svc-too"):
        await budget(api, "apps", name, {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "svc"}}})
    core: Any = client.CoreV1Api(api)
    await core.patch_node(NODE, {"spec": {"unschedulable": True}})
    env, buffer = metered()

    progress = await env.run(DrainActivities(api).drain_node, REQUEST)

    assert (progress.evicted, len(progress.blocked), len(progress.failed)) == (1, 1, 1)
    assert totals(buffer.retrieve_updates(), "gpuheal_evictions", "result") == {"evicted": 1, "blocked": 1, "failed": 1}


async def test_a_reboot_is_counted_failed_then_requested_with_its_provider(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cloud_fleet("aws", tmp_path, reboot_seconds=30) as cluster, await connect(cluster.kubeconfig) as api:
        activities = repair(cluster, api, monkeypatch)
        request = RebootRequest(node=NODE, holder=HOLDER)
        env, buffer = metered()
        cluster.inject_cloud_fault("aws", "throttle", 5)
        with pytest.raises(ApplicationError):
            await env.run(activities.request_reboot, request)
        cluster.simulation.cloud_faults.clear()
        await env.run(activities.request_reboot, request)
        await env.run(activities.request_reboot, request)  # a retry that finds it asked: no second request

    updates = buffer.retrieve_updates()
    assert totals(updates, "gpuheal_reboots", "result") == {"failed": 1, "requested": 1}
    assert totals(updates, "gpuheal_reboots", "provider") == {"aws": 2}
