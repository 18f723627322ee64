"""The reboot activity against simulated clouds through the real SDKs: exactly once, and never lost.

Each test runs `request_reboot` as Temporal runs an attempt (ActivityEnvironment, heartbeats
included) against a small fleet on one cloud, and counts what the cloud was really asked.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kubernetes.aio import client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from gpuheal.activities.providers.configured import build_providers
from gpuheal.activities.providers.selection import ProviderSet
from gpuheal.activities.repair import RepairActivities
from gpuheal.domain import marks
from gpuheal.domain.steps import RebootRequest, RebootResult
from gpuheal.kubeclient import connect
from gpuheal_sim.simulator import SimulatedCluster
from tests.cloud_fleet import cloud_fleet

NODE = "gpu-node-000"
HOLDER = "remediate-gpu-node-000/run-1"


@pytest.fixture(params=["aws", "redfish"])
async def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SimulatedCluster]:
    async with cloud_fleet(request.param, tmp_path, reboot_seconds=30) as running:
        yield running


def repair(cluster: SimulatedCluster, api: client.ApiClient, monkeypatch: pytest.MonkeyPatch) -> RepairActivities:
    for name, value in cluster.client_environment().items():
        monkeypatch.setenv(name, value)
    return RepairActivities(api, ProviderSet(build_providers([cluster.config.cloud], os.environ)))


async def attempt(activities: RepairActivities, **request: object) -> RebootResult:
    result: RebootResult = await ActivityEnvironment().run(
        activities.request_reboot, RebootRequest.model_validate({"node": NODE, "holder": HOLDER, **request})
    )
    return result


async def test_a_throttled_request_is_asked_again_on_the_retry(
    cluster: SimulatedCluster, api: client.ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    activities = repair(cluster, api, monkeypatch)
    cluster.inject_cloud_fault(cluster.config.cloud, "throttle", 5)

    with pytest.raises(ApplicationError) as throttled:
        await attempt(activities)
    assert not throttled.value.non_retryable
    assert cluster.reboot_requests(NODE) == 0

    cluster.simulation.cloud_faults.clear()
    retried = await attempt(activities)

    assert retried.requested_now, "the provider refused the first request, so the retry asks again"
    assert cluster.reboot_requests(NODE) == 1


async def test_a_request_that_may_have_reached_the_cloud_is_not_repeated(
    cluster: SimulatedCluster, api: client.ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    activities = repair(cluster, api, monkeypatch)
    # A worker recorded the request and died without hearing back (as after a SIGKILL mid-call).
    boot_id = cluster.node_state(NODE)["bootId"]
    record = {"holder": HOLDER, "boot_id": boot_id, "at": datetime.now(UTC).isoformat(), "provider": "x"}
    await client.CoreV1Api(api).patch_node(
        NODE, {"metadata": {"annotations": {marks.REBOOT_REQUEST_ANNOTATION: json.dumps(record)}}}
    )

    retried = await attempt(activities)

    assert not retried.requested_now
    assert retried.boot_id_before == boot_id
    assert cluster.reboot_requests(NODE) == 0, "the provider keeps no record, so gpuheal never asks twice"


async def test_a_record_of_an_earlier_remediation_does_not_stop_this_one(
    cluster: SimulatedCluster, api: client.ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    activities = repair(cluster, api, monkeypatch)
    await attempt(activities, holder="remediate-gpu-node-000/an-older-run")
    older = cluster.reboot_requests(NODE)

    await attempt(activities)

    assert cluster.reboot_requests(NODE) == older + 1


async def test_a_persons_retry_is_a_new_request_even_when_the_earlier_one_reached_the_provider(
    cluster: SimulatedCluster, api: client.ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node did not come back from round 0; a person retried the repair: round 1 reboots again."""
    activities = repair(cluster, api, monkeypatch)
    first = await attempt(activities)
    again = await attempt(activities)  # round 0's retried activity finds its own request

    retried = await attempt(activities, round=1)

    assert first.requested_now and not again.requested_now
    assert retried.requested_now
    assert cluster.reboot_requests(NODE) == 2


async def test_forcing_after_a_graceful_restart_that_happened_late_does_not_reboot_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        cloud_fleet("redfish", tmp_path, reboot_seconds=0.2) as cluster,
        await connect(cluster.kubeconfig) as api,
    ):
        activities = repair(cluster, api, monkeypatch)
        graceful = await attempt(activities, graceful=True)
        assert graceful.graceful
        while cluster.node_state(NODE)["bootId"] == graceful.boot_id_before or not cluster.node_state(NODE)["ready"]:
            await asyncio.sleep(0.05)  # the graceful restart completes, after the workflow gave up on it

        forced = await attempt(activities, graceful=False)

    assert not forced.requested_now
    assert forced.boot_id_before == graceful.boot_id_before
    assert cluster.reboot_requests(NODE) == 1
