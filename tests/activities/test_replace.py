"""The replace activity against simulated clouds through the real SDKs: it terminates only a machine
whose node this run still holds, takes a node already gone as done, and refuses for good where the
provider cannot terminate machines."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes.aio import client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from gpuheal.activities.providers.configured import build_providers
from gpuheal.activities.providers.selection import ProviderSet
from gpuheal.activities.repair import RepairActivities
from gpuheal.domain import marks
from gpuheal.domain.contracts import FailureType
from gpuheal.domain.steps import MachineState, ReplaceRequest
from gpuheal.kubeclient import connect
from gpuheal_sim.simulator import SimulatedCluster
from tests.cloud_fleet import cloud_fleet

NODE = "gpu-node-000"
HOLDER = "remediate-gpu-node-000/run-1"


@pytest.fixture(params=["aws", "gcp"])
async def cloud(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SimulatedCluster]:
    """A fleet on a cloud whose provider can terminate machines."""
    async with cloud_fleet(request.param, tmp_path) as running:
        yield running


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[SimulatedCluster]:
    async with cloud_fleet("aws", tmp_path) as running:
        yield running


def activities_for(
    cluster: SimulatedCluster, api: client.ApiClient, monkeypatch: pytest.MonkeyPatch
) -> RepairActivities:
    for name, value in cluster.client_environment().items():
        monkeypatch.setenv(name, value)
    return RepairActivities(api, ProviderSet(build_providers([cluster.config.cloud], os.environ)))


async def hold(api: client.ApiClient, *, holder: str = HOLDER, cordoned: bool = True) -> None:
    """Mark the node as a quarantine by `holder` leaves it."""
    body = {"spec": {"unschedulable": cordoned}, "metadata": {"annotations": {marks.REMEDIATION_ANNOTATION: holder}}}
    await client.CoreV1Api(api).patch_node(NODE, body)


async def replace(activities: RepairActivities, provider: str = "auto") -> MachineState:
    result: MachineState = await ActivityEnvironment().run(
        activities.replace_machine, ReplaceRequest(node=NODE, holder=HOLDER, provider=provider)
    )
    return result


async def refused(activities: RepairActivities, provider: str = "auto") -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        await replace(activities, provider)
    assert caught.value.non_retryable and caught.value.type == FailureType.PROVIDER.value
    return caught.value


async def test_the_machine_of_a_held_node_is_terminated_and_a_retry_after_the_node_went_is_done(
    cloud: SimulatedCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with await connect(cloud.kubeconfig) as api:
        activities = activities_for(cloud, api, monkeypatch)
        await hold(api)

        done = await replace(activities)

        said = {"aws": "EC2 accepted TerminateInstances", "gcp": "GCE deleted instance"}[cloud.config.cloud]
        assert done.provider == cloud.config.cloud and said in done.summary, done.summary
        for _ in range(200):  # terminated: the simulated cloud's node controller deletes the node
            if cloud.get_object("nodes", NODE) is None:
                break
            await asyncio.sleep(0.05)
        assert cloud.get_object("nodes", NODE) is None
        again = await replace(activities)
    assert again.summary == f"node {NODE} was already deleted"
    assert cloud.get_object("nodes", "gpu-node-001") is not None, "the other node is untouched"


@pytest.mark.parametrize(
    ("holder", "cordoned"),
    [(HOLDER, False), ("remediate-gpu-node-000/another-run", True)],
    ids=["uncordoned by a person", "held by another run"],
)
async def test_a_node_this_run_no_longer_holds_keeps_its_machine(
    cluster: SimulatedCluster,
    api: client.ApiClient,
    monkeypatch: pytest.MonkeyPatch,
    holder: str,
    cordoned: bool,
) -> None:
    activities = activities_for(cluster, api, monkeypatch)
    await hold(api, holder=holder, cordoned=cordoned)

    error = await refused(activities)

    assert error.message == f"node {NODE} is no longer cordoned by this remediation; its machine was not terminated"
    assert cluster.node_state(NODE)["terminatedAt"] is None


async def test_a_provider_that_cannot_terminate_is_refused_for_good(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cloud_fleet("redfish", tmp_path) as bare_metal, await connect(bare_metal.kubeconfig) as api:
        activities = activities_for(bare_metal, api, monkeypatch)
        await hold(api)

        error = await refused(activities)

        assert error.message == "provider redfish cannot terminate machines"
        assert bare_metal.node_state(NODE)["terminatedAt"] is None


async def test_a_cloud_that_refuses_leaves_the_machine_and_says_why(
    cluster: SimulatedCluster, api: client.ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    activities = activities_for(cluster, api, monkeypatch)
    await hold(api)
    cluster.inject_cloud_fault("aws", "denied")

    error = await refused(activities)

    assert "grant ec2:TerminateInstances" in str(error)
    assert cluster.node_state(NODE)["terminatedAt"] is None and cluster.get_object("nodes", NODE) is not None


async def test_a_retry_spares_a_new_machine_under_the_old_name(
    cluster: SimulatedCluster, api: client.ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    activities = activities_for(cluster, api, monkeypatch)
    await hold(api)
    terminated_boot = "a-machine-that-was-terminated"

    spared: MachineState = await ActivityEnvironment().run(
        activities.replace_machine,
        ReplaceRequest(node=NODE, holder=HOLDER, provider="auto", boot_id=terminated_boot),
    )

    assert spared.summary.startswith(f"node {NODE} runs on a new machine (boot ")
    assert cluster.node_state(NODE)["terminatedAt"] is None
