"""The Nebius provider against the simulator's Nebius gRPC endpoint, through the real Nebius SDK.

The simulated cluster's nodes carry Nebius providerIDs; the provider reaches the endpoint through
`client_environment()` (one address, the simulator's CA, a service account credentials file whose
JWT the endpoint verifies before issuing the token every compute call must carry).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from nebius.api.nebius.common.v1 import ListOperationsRequest
from nebius.api.nebius.compute.v1 import InstanceServiceClient, StopInstanceRequest
from nebius.base.resolver import Constant
from nebius.sdk import SDK

from gpuheal.activities.providers import ProviderError, RebootTarget
from gpuheal.activities.providers.nebius import NebiusInstance, NebiusProvider, NebiusSettings
from gpuheal_sim.simulator import FleetConfig
from gpuheal_sim.simulator.server import SimulatedCluster
from tests.cloud_fleet import cloud_fleet


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SimulatedCluster]:
    async with cloud_fleet("nebius", tmp_path_factory.mktemp("nebius")) as running:
        yield running


@pytest.fixture
def settings(cluster: SimulatedCluster) -> NebiusSettings:
    cluster.simulation.cloud_faults.clear()
    return replace(NebiusSettings.from_env(cluster.client_environment()), poll_interval=timedelta(seconds=0.02))


@pytest.fixture
async def provider(settings: NebiusSettings) -> AsyncIterator[NebiusProvider]:
    nebius = NebiusProvider(settings)
    yield nebius
    await nebius.close()


@pytest.fixture
async def client(cluster: SimulatedCluster) -> AsyncIterator[InstanceServiceClient]:
    """The SDK as any other client would use it, to look at (and act on) the instances directly."""
    env = cluster.client_environment()
    sdk = SDK(
        resolver=Constant(env["GPUHEAL_NEBIUS_ENDPOINT"]),
        credentials_file_name=env["GPUHEAL_NEBIUS_CREDENTIALS_FILE"],
        tls_credentials=grpc.ssl_channel_credentials(Path(env["GPUHEAL_NEBIUS_CA_FILE"]).read_bytes()),
        user_agent_prefix="gpuheal-tests",
        event_loop=asyncio.get_running_loop(),
    )
    yield InstanceServiceClient(sdk)
    await sdk.close()


def target(cluster: SimulatedCluster, index: int) -> RebootTarget:
    node = cluster.node_names()[index]
    found = cluster.get_object("nodes", node)
    assert found is not None
    return RebootTarget(node=node, provider_id=found["spec"]["providerID"])


async def operations_since(client: InstanceServiceClient, instance: str, since: datetime) -> list[tuple[str, bool]]:
    """The instance's operations created at or after `since`, oldest first, as (request type, done)."""
    page = await client.operation_service().list(ListOperationsRequest(resource_id=instance))
    return [
        (op.request.type_url.rsplit(".", 1)[-1], op.status is not None)
        for op in reversed(page.operations)
        if op.created_at is not None and op.created_at >= since
    ]


async def back_with_new_boot(cluster: SimulatedCluster, node: str, old_boot: str) -> dict[str, Any]:
    """Wait until the node is Ready again with a bootID other than `old_boot`."""
    async with asyncio.timeout(10):
        while True:
            state = cluster.node_state(node)
            if state["ready"] and not state["rebooting"] and state["bootId"] != old_boot:
                return state
            await asyncio.sleep(0.02)


def service_account(settings: NebiusSettings) -> str:
    assert settings.credentials_file is not None
    account: str = json.loads(settings.credentials_file.read_text())["subject-credentials"]["sub"]
    return account


# --- identities and settings ------------------------------------------------------------------------


def test_owns_nodes_by_the_nebius_scheme() -> None:
    nebius = NebiusProvider()
    assert nebius.owns(RebootTarget("n", "nebius://computeinstance-e00a2rcz1xvbqgbvp5"))
    assert not nebius.owns(RebootTarget("n", "aws:///us-east-1a/i-0123456789abcdef0"))
    assert not nebius.owns(RebootTarget("n", ""))


def test_parses_both_provider_id_forms() -> None:
    assert NebiusInstance.of(RebootTarget("n", "nebius://computeinstance-e00a2rcz1xvbqgbvp5")).id == (
        "computeinstance-e00a2rcz1xvbqgbvp5"
    )
    assert NebiusInstance.of(RebootTarget("n", "nebius:///computeinstance-e00abc")).id == "computeinstance-e00abc"


@pytest.mark.parametrize(
    "provider_id",
    [
        "",
        "nebius://",
        "nebius://instance-e00abc",
        "nebius://computeinstance-E00ABC",
        "nebius://computeinstance-e00abc/extra",
        "aws:///us-east-1a/i-0123456789abcdef0",
    ],
)
async def test_a_malformed_provider_id_is_not_retried_and_names_node_and_shape(provider_id: str) -> None:
    with pytest.raises(ProviderError) as raised:
        await NebiusProvider().reboot(RebootTarget("gpu-node-7", provider_id))
    assert not raised.value.retryable
    message = str(raised.value)
    assert "gpu-node-7" in message
    assert repr(provider_id) in message
    assert "nebius://computeinstance-<id>" in message


def test_settings_from_env() -> None:
    settings = NebiusSettings.from_env(
        {
            "GPUHEAL_NEBIUS_ENDPOINT": "10.0.0.1:443",
            "NEBIUS_ENDPOINT": "api.eu.nebius.cloud:443",
            "GPUHEAL_NEBIUS_CREDENTIALS_FILE": "/var/run/secrets/nebius/credentials.json",
            "GPUHEAL_NEBIUS_CA_FILE": "/etc/ssl/nebius-ca.pem",
        }
    )
    assert settings.endpoint == "10.0.0.1:443"
    assert settings.domain == "api.eu.nebius.cloud:443"
    assert settings.credentials_file == Path("/var/run/secrets/nebius/credentials.json")
    assert settings.ca_file == Path("/etc/ssl/nebius-ca.pem")
    assert NebiusSettings.from_env({}) == NebiusSettings()


def test_timeouts_and_intervals_are_durations() -> None:
    settings = NebiusSettings()
    assert settings.call_timeout == timedelta(seconds=30)
    assert settings.poll_interval == timedelta(seconds=1)
    assert settings.operation_timeout == timedelta(minutes=15)


# --- the happy path ---------------------------------------------------------------------------------


async def test_describe_reports_the_instance_state(cluster: SimulatedCluster, provider: NebiusProvider) -> None:
    node = target(cluster, 0)
    assert await provider.describe(node) == f"Nebius instance {NebiusInstance.of(node).id}: RUNNING"


async def test_reboot_stops_then_starts_and_the_node_comes_back_once(
    cluster: SimulatedCluster, provider: NebiusProvider, client: InstanceServiceClient
) -> None:
    node = target(cluster, 0)
    instance = NebiusInstance.of(node).id
    before = cluster.node_state(node.node)
    since = datetime.now(UTC)

    line = await provider.reboot(node)

    assert line.startswith(f"Nebius instance {instance} stopped by operation computeoperation-")
    assert "started again by operation computeoperation-" in line
    # Both operations were followed to their end before reboot returned, in that order.
    assert await operations_since(client, instance, since) == [
        ("StopInstanceRequest", True),
        ("StartInstanceRequest", True),
    ]
    assert await provider.describe(node) == f"Nebius instance {instance}: RUNNING"
    after = await back_with_new_boot(cluster, node.node, before["bootId"])
    assert after["rebootRequests"] == before["rebootRequests"] + 1
    assert after["rebootsCompleted"] == before["rebootsCompleted"] + 1


async def test_requested_since_reads_the_instance_operations(
    cluster: SimulatedCluster, provider: NebiusProvider
) -> None:
    node = target(cluster, 1)
    boot = cluster.node_state(node.node)["bootId"]
    since = datetime.now(UTC)
    assert await provider.requested_since(node, since) is False

    await provider.reboot(node)

    assert await provider.requested_since(node, since) is True
    assert await provider.requested_since(node, datetime.now(UTC)) is False
    await back_with_new_boot(cluster, node.node, boot)


async def test_a_stop_without_its_start_is_finished_without_stopping_again(
    cluster: SimulatedCluster, provider: NebiusProvider, client: InstanceServiceClient
) -> None:
    """A worker that died between Stop and Start: the retry starts the instance and stops nothing."""
    node = target(cluster, 1)
    instance = NebiusInstance.of(node).id
    before = cluster.node_state(node.node)
    since = datetime.now(UTC)
    stop = await client.stop(StopInstanceRequest(id=instance))
    await stop.wait(interval=0.02)

    assert await provider.requested_since(node, since) is False
    assert await provider.describe(node) == f"Nebius instance {instance}: STOPPED"
    line = await provider.reboot(node)

    assert "was already stopped and started again" in line
    assert await operations_since(client, instance, since) == [
        ("StopInstanceRequest", True),
        ("StartInstanceRequest", True),
    ]
    after = await back_with_new_boot(cluster, node.node, before["bootId"])
    assert after["rebootRequests"] == before["rebootRequests"] + 1


async def test_reboot_waits_for_a_stop_still_running(
    cluster: SimulatedCluster, provider: NebiusProvider, client: InstanceServiceClient
) -> None:
    node = target(cluster, 1)
    instance = NebiusInstance.of(node).id
    before = cluster.node_state(node.node)
    since = datetime.now(UTC)
    await client.stop(StopInstanceRequest(id=instance))  # not waited on: the instance is STOPPING

    assert await provider.describe(node) == f"Nebius instance {instance}: STOPPING"
    await provider.reboot(node)

    assert await operations_since(client, instance, since) == [
        ("StopInstanceRequest", True),
        ("StartInstanceRequest", True),
    ]
    after = await back_with_new_boot(cluster, node.node, before["bootId"])
    assert after["rebootRequests"] == before["rebootRequests"] + 1


# --- errors -----------------------------------------------------------------------------------------


async def test_one_throttled_try_is_retried_by_the_sdk(cluster: SimulatedCluster, provider: NebiusProvider) -> None:
    cluster.inject_cloud_fault("nebius", "throttle", 1)
    assert (await provider.describe(target(cluster, 0))).endswith(": RUNNING")
    assert cluster.simulation.cloud_faults.pending("nebius") == 0


async def test_throttling_is_retryable_and_a_later_call_succeeds(
    cluster: SimulatedCluster, provider: NebiusProvider, settings: NebiusSettings
) -> None:
    node = target(cluster, 0)
    before = cluster.node_state(node.node)
    cluster.inject_cloud_fault("nebius", "throttle", settings.attempts)  # every try of the first call

    with pytest.raises(ProviderError) as raised:
        await provider.reboot(node)
    assert raised.value.retryable
    assert "RESOURCE_EXHAUSTED" in str(raised.value)
    assert raised.value.refused  # nothing was stopped or started: the retry asks again
    assert cluster.reboot_requests(node.node) == before["rebootRequests"]

    await provider.reboot(node)
    after = await back_with_new_boot(cluster, node.node, before["bootId"])
    assert after["rebootRequests"] == before["rebootRequests"] + 1


async def test_an_instance_that_does_not_exist_is_not_retried(provider: NebiusProvider) -> None:
    missing = RebootTarget("gpu-node-9", "nebius://computeinstance-e00doesnotexist0")
    with pytest.raises(ProviderError) as raised:
        await provider.reboot(missing)
    assert not raised.value.retryable
    message = str(raised.value)
    assert "Nebius instance computeinstance-e00doesnotexist0 not found" in message
    assert "NOT_FOUND" in message
    assert "check node gpu-node-9's providerID 'nebius://computeinstance-e00doesnotexist0'" in message


async def test_not_found_from_the_api_is_not_retried(cluster: SimulatedCluster, provider: NebiusProvider) -> None:
    node = target(cluster, 0)
    cluster.inject_cloud_fault("nebius", "not_found")
    with pytest.raises(ProviderError) as raised:
        await provider.describe(node)
    assert not raised.value.retryable
    assert not raised.value.refused  # describe asks for no reboot
    cluster.inject_cloud_fault("nebius", "not_found")
    with pytest.raises(ProviderError) as raised:
        await provider.reboot(node)
    assert not raised.value.retryable and raised.value.refused
    assert f"check node {node.node}'s providerID" in str(raised.value)


async def test_permission_denied_names_the_service_account_and_the_role(
    cluster: SimulatedCluster, provider: NebiusProvider, settings: NebiusSettings
) -> None:
    node = target(cluster, 0)
    before = cluster.node_state(node.node)
    cluster.inject_cloud_fault("nebius", "denied")

    with pytest.raises(ProviderError) as raised:
        await provider.reboot(node)

    assert not raised.value.retryable and raised.value.refused
    message = str(raised.value)
    assert f"service account {service_account(settings)}" in message
    assert "PERMISSION_DENIED" in message
    assert "grant it the editor role" in message
    assert cluster.node_state(node.node)["rebootRequests"] == before["rebootRequests"]


async def test_credentials_the_token_service_rejects_are_not_retried(
    cluster: SimulatedCluster, settings: NebiusSettings, tmp_path: Path
) -> None:
    """A credentials file whose key Nebius does not know (revoked, or another account's)."""
    assert settings.credentials_file is not None
    document = json.loads(settings.credentials_file.read_text())
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    document["subject-credentials"]["private-key"] = other_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    revoked = tmp_path / "credentials.json"
    revoked.write_text(json.dumps(document))
    nebius = NebiusProvider(replace(settings, credentials_file=revoked))
    try:
        with pytest.raises(ProviderError) as raised:
            await nebius.describe(target(cluster, 0))
    finally:
        await nebius.close()
    assert not raised.value.retryable
    message = str(raised.value)
    assert "UNAUTHENTICATED" in message
    assert f"service account {service_account(settings)}" in message


async def test_no_credentials_at_all_is_not_retried(
    cluster: SimulatedCluster, settings: NebiusSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NEBIUS_IAM_TOKEN", raising=False)
    nebius = NebiusProvider(replace(settings, credentials_file=None))
    with pytest.raises(ProviderError) as raised:
        await nebius.describe(target(cluster, 0))
    assert not raised.value.retryable
    assert "GPUHEAL_NEBIUS_CREDENTIALS_FILE" in str(raised.value)
    with pytest.raises(ProviderError) as raised:
        await nebius.reboot(target(cluster, 0))
    assert not raised.value.retryable and raised.value.refused  # no credentials: nothing was sent


@pytest.mark.parametrize(("fault", "code"), [("throttle", "RESOURCE_EXHAUSTED"), ("denied", "PERMISSION_DENIED")])
async def test_a_refused_start_after_the_stop_is_refused_and_the_retry_only_starts(
    cluster: SimulatedCluster,
    provider: NebiusProvider,
    client: InstanceServiceClient,
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
    code: str,
) -> None:
    """The Stop went through, the Start was refused: the instance is stopped and no Start exists.

    Refused is right, and safe: requested_since says False for a Stop without its Start (so even
    an unmarked retry would ask again), and the retry's reboot finishes with the Start alone.
    """
    node = target(cluster, 1)
    instance = NebiusInstance.of(node).id
    before = cluster.node_state(node.node)
    since = datetime.now(UTC)
    waited = provider._wait

    async def refuse_the_start(operation: Any, *args: Any) -> None:
        await waited(operation, *args)
        if args[-1] == "stop":  # the Start is the next call, and it is sent once
            cluster.inject_cloud_fault("nebius", fault, 1)

    monkeypatch.setattr(provider, "_wait", refuse_the_start)
    with pytest.raises(ProviderError) as raised:
        await provider.reboot(node)
    monkeypatch.undo()

    assert code in str(raised.value) and "start" in str(raised.value)
    assert raised.value.refused
    assert cluster.simulation.cloud_faults.pending("nebius") == 0
    assert await provider.describe(node) == f"Nebius instance {instance}: STOPPED"
    assert cluster.reboot_requests(node.node) == before["rebootRequests"]
    assert await provider.requested_since(node, since) is False

    assert "was already stopped and started again" in await provider.reboot(node)
    assert await operations_since(client, instance, since) == [
        ("StopInstanceRequest", True),
        ("StartInstanceRequest", True),
    ]
    after = await back_with_new_boot(cluster, node.node, before["bootId"])
    assert after["rebootRequests"] == before["rebootRequests"] + 1


async def test_a_start_that_times_out_after_it_was_sent_is_not_refused(tmp_path: Path) -> None:
    """Nebius has the Start (it answers late): not refused, and requested_since finds it for the retry."""
    config = FleetConfig(nodes=1, cloud="nebius", workloads=False, reboot_seconds=0.2, reboot_reply_seconds=1.5)
    async with SimulatedCluster(config, state_dir=tmp_path / "slow") as slow:
        settings = replace(
            NebiusSettings.from_env(slow.client_environment()),
            poll_interval=timedelta(seconds=0.02),
            call_timeout=timedelta(seconds=0.5),
        )
        nebius = NebiusProvider(settings)
        try:
            node = target(slow, 0)
            assert (await nebius.describe(node)).endswith(": RUNNING")  # the token is had; calls are quick
            since = datetime.now(UTC)
            with pytest.raises(ProviderError) as raised:
                await nebius.reboot(node)
            assert "start" in str(raised.value)
            assert raised.value.retryable and not raised.value.refused
            assert slow.reboot_requests(node.node) == 1
            assert await nebius.requested_since(node, since) is True
        finally:
            await nebius.close()
