"""The simulated Nebius endpoint, spoken to with the Nebius SDK directly (no gpuheal provider)."""

from __future__ import annotations

import asyncio
import json
import re
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from nebius.aio.channel import NoCredentials
from nebius.aio.service_error import RequestError
from nebius.api.nebius.common.v1 import ListOperationsRequest
from nebius.api.nebius.compute.v1 import (
    GetInstanceRequest,
    InstanceServiceClient,
    StartInstanceRequest,
    StopInstanceRequest,
)
from nebius.base.resolver import Constant
from nebius.sdk import SDK

from gpuheal_sim.simulator.server import SimulatedCluster
from tests.cloud_fleet import cloud_fleet


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SimulatedCluster]:
    async with cloud_fleet("nebius", tmp_path_factory.mktemp("nebius-endpoint")) as running:
        yield running


def make_sdk(env: dict[str, str], **credentials: Any) -> SDK:
    return SDK(
        resolver=Constant(env["GPUHEAL_NEBIUS_ENDPOINT"]),
        tls_credentials=grpc.ssl_channel_credentials(Path(env["GPUHEAL_NEBIUS_CA_FILE"]).read_bytes()),
        user_agent_prefix="gpuheal-tests",
        event_loop=asyncio.get_running_loop(),
        **(credentials or {"credentials_file_name": env["GPUHEAL_NEBIUS_CREDENTIALS_FILE"]}),
    )


@pytest.fixture
async def client(cluster: SimulatedCluster) -> AsyncIterator[InstanceServiceClient]:
    cluster.simulation.cloud_faults.clear()
    sdk = make_sdk(cluster.client_environment())
    yield InstanceServiceClient(sdk)
    await sdk.close()


def instance_of(cluster: SimulatedCluster, index: int) -> str:
    found = cluster.get_object("nodes", cluster.node_names()[index])
    assert found is not None
    provider_id: str = found["spec"]["providerID"]
    return provider_id.removeprefix("nebius://")


async def ready_with_new_boot(cluster: SimulatedCluster, node: str, old_boot: str) -> None:
    async with asyncio.timeout(10):
        while not ((state := cluster.node_state(node))["ready"] and state["bootId"] != old_boot):
            await asyncio.sleep(0.02)


def test_nodes_carry_nebius_provider_ids(cluster: SimulatedCluster) -> None:
    ids = [instance_of(cluster, index) for index in range(2)]
    for instance in ids:
        assert re.fullmatch(r"computeinstance-e00[a-z0-9]{15}", instance)
    assert len(set(ids)) == 2


def test_client_environment_names_address_credentials_and_ca(cluster: SimulatedCluster) -> None:
    env = cluster.client_environment()
    assert re.fullmatch(r"127\.0\.0\.1:\d+", env["GPUHEAL_NEBIUS_ENDPOINT"])
    assert env["GPUHEAL_NEBIUS_CA_FILE"] == str(cluster.ca_file)
    credentials = Path(env["GPUHEAL_NEBIUS_CREDENTIALS_FILE"])
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    subject = json.loads(credentials.read_text())["subject-credentials"]
    assert subject["alg"] == "RS256"
    assert subject["iss"] == subject["sub"]
    assert subject["sub"].startswith("serviceaccount-")


async def test_calls_without_a_token_are_unauthenticated(cluster: SimulatedCluster) -> None:
    sdk = make_sdk(cluster.client_environment(), credentials=NoCredentials())
    try:
        with pytest.raises(RequestError) as raised:
            await InstanceServiceClient(sdk).get(GetInstanceRequest(id=instance_of(cluster, 0)), retries=1)
    finally:
        await sdk.close()
    assert raised.value.status.code is grpc.StatusCode.UNAUTHENTICATED


async def test_get_answers_the_instance(cluster: SimulatedCluster, client: InstanceServiceClient) -> None:
    instance = await client.get(GetInstanceRequest(id=instance_of(cluster, 0)))
    assert instance.metadata.id == instance_of(cluster, 0)
    assert instance.metadata.name == cluster.node_names()[0]
    assert instance.status.state.name == "RUNNING"


async def test_stop_and_start_operations_finish_at_their_second_poll(
    cluster: SimulatedCluster, client: InstanceServiceClient
) -> None:
    instance, node = instance_of(cluster, 1), cluster.node_names()[1]
    before = cluster.node_state(node)

    stop = await client.stop(StopInstanceRequest(id=instance))
    assert not stop.done()
    assert (await client.get(GetInstanceRequest(id=instance))).status.state.name == "STOPPING"
    await stop.update()
    assert not stop.done()
    await stop.update()
    assert stop.successful()
    assert (await client.get(GetInstanceRequest(id=instance))).status.state.name == "STOPPED"
    assert cluster.node_state(node)["rebootRequests"] == before["rebootRequests"]  # stopping reboots nothing

    start = await client.start(StartInstanceRequest(id=instance))
    assert cluster.node_state(node)["rebootRequests"] == before["rebootRequests"] + 1
    assert (await client.get(GetInstanceRequest(id=instance))).status.state.name == "STARTING"
    await start.update()
    await start.update()
    assert start.successful()
    assert start.resource_id == instance
    assert (await client.get(GetInstanceRequest(id=instance))).status.state.name == "RUNNING"
    await ready_with_new_boot(cluster, node, before["bootId"])

    listed = await client.operation_service().list(ListOperationsRequest(resource_id=instance))
    assert [op.id for op in listed.operations[:2]] == [start.id, stop.id]  # newest first
    assert listed.operations[0].request.type_url == "type.googleapis.com/nebius.compute.v1.StartInstanceRequest"


async def test_a_repeated_idempotency_key_returns_the_first_operation(
    cluster: SimulatedCluster, client: InstanceServiceClient
) -> None:
    instance = instance_of(cluster, 0)
    key = [("x-idempotency-key", "6f1c2d4e-0000-4000-8000-000000000001")]
    first = await client.stop(StopInstanceRequest(id=instance), metadata=key)
    again = await client.stop(StopInstanceRequest(id=instance), metadata=key)
    assert again.id == first.id
    await first.wait(interval=0.02)
    start = await client.start(StartInstanceRequest(id=instance))
    await start.wait(interval=0.02)


async def test_a_start_while_stopping_is_refused(cluster: SimulatedCluster, client: InstanceServiceClient) -> None:
    instance = instance_of(cluster, 0)
    stop = await client.stop(StopInstanceRequest(id=instance))
    with pytest.raises(RequestError) as raised:
        await client.start(StartInstanceRequest(id=instance), retries=1)
    assert raised.value.status.code is grpc.StatusCode.FAILED_PRECONDITION
    await stop.wait(interval=0.02)
    start = await client.start(StartInstanceRequest(id=instance))
    await start.wait(interval=0.02)


async def test_unknown_instances_are_not_found(client: InstanceServiceClient) -> None:
    with pytest.raises(RequestError) as raised:
        await client.stop(StopInstanceRequest(id="computeinstance-e00nosuchinstance"))
    assert raised.value.status.code is grpc.StatusCode.NOT_FOUND
    [error] = raised.value.status.service_errors
    assert error.resource_not_found.resource_id == "computeinstance-e00nosuchinstance"


@pytest.mark.parametrize(
    ("fault", "code", "detail"),
    [
        ("throttle", grpc.StatusCode.RESOURCE_EXHAUSTED, "too_many_requests"),
        ("not_found", grpc.StatusCode.NOT_FOUND, "resource_not_found"),
        ("denied", grpc.StatusCode.PERMISSION_DENIED, "permission_denied"),
    ],
)
async def test_injected_faults_answer_in_grpc_status_with_a_service_error(
    cluster: SimulatedCluster, client: InstanceServiceClient, fault: str, code: grpc.StatusCode, detail: str
) -> None:
    cluster.inject_cloud_fault("nebius", fault)
    with pytest.raises(RequestError) as raised:
        await client.get(GetInstanceRequest(id=instance_of(cluster, 0)), retries=1)
    assert raised.value.status.code is code
    [error] = raised.value.status.service_errors
    assert error.service == "compute"
    assert error.details is not None
    assert error.details.field == detail
    # One request took the fault; the next is answered.
    assert (await client.get(GetInstanceRequest(id=instance_of(cluster, 0)))).status.state.name == "RUNNING"
