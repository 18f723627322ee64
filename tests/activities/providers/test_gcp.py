"""The GCP provider through the real google-cloud-compute client, against the simulator's Compute Engine.

Credentials are real Application Default Credentials: the simulator writes a service-account key
file and the tests point GOOGLE_APPLICATION_CREDENTIALS at it, so google-auth signs its own JWTs
exactly as it would in production. Trust goes through REQUESTS_CA_BUNDLE.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gpuheal.activities.providers import ProviderError, RebootTarget
from gpuheal.activities.providers.gcp import GceInstance, GcpProvider, GcpSettings, parse_provider_id
from gpuheal_sim.simulator import SimulatedCluster
from tests.cloud_fleet import cloud_fleet

NODE, OTHER = "gpu-node-000", "gpu-node-001"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[SimulatedCluster]:
    # A terminated machine keeps its node for 5 s: long enough to see its delete under way on a busy machine.
    async with cloud_fleet("gcp", tmp_path / "fleet", reboot_seconds=0.3, terminate_seconds=5.0) as running:
        yield running


@pytest.fixture
def gcp_env(cluster: SimulatedCluster, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment the simulator names (ADC key file, CA bundle, endpoint), for this test only."""
    for name in ("GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CONFIG", "GOOGLE_API_USE_CLIENT_CERTIFICATE"):
        monkeypatch.delenv(name, raising=False)
    environment = cluster.client_environment()
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return environment


def settings_for(environment: dict[str, str]) -> GcpSettings:
    # Quick polls and a short SDK retry window keep the suite fast; the behaviour is the production one.
    return replace(
        GcpSettings.from_env(environment), poll_interval=timedelta(seconds=0.02), read_retry=timedelta(seconds=1.5)
    )


@pytest.fixture
def provider(gcp_env: dict[str, str]) -> GcpProvider:
    return GcpProvider(settings_for(gcp_env))


def target(cluster: SimulatedCluster, node: str = NODE) -> RebootTarget:
    """The node as the repair activity sees it: its name and the providerID the simulator gave it."""
    obj = cluster.get_object("nodes", node)
    assert obj is not None
    return RebootTarget(node=node, provider_id=obj["spec"]["providerID"])


async def _raises(call: Awaitable[object]) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await call
    return caught.value


async def sim_control(cluster: SimulatedCluster, method: str, path: str, body: Any = None) -> Any:
    """The simulator-only controls of its Compute Engine (operation failures, operations with poll counts)."""
    context = ssl.create_default_context(cafile=str(cluster.ca_file))
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, cluster.cloud_url + path, json=body, ssl=context) as response,
    ):
        assert response.status < 300, await response.text()
        return await response.json()


async def back_with_new_boot(cluster: SimulatedCluster, node: str, old_boot: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        state = cluster.node_state(node)
        if state["ready"] and not state["rebooting"] and state["bootId"] != old_boot:
            return state
        await asyncio.sleep(0.02)
    raise AssertionError(f"{node} did not come back with a new bootID: {cluster.node_state(node)}")


# --- providerIDs and ownership -----------------------------------------------------------------------


def test_the_simulated_fleet_carries_gke_provider_ids(cluster: SimulatedCluster) -> None:
    assert target(cluster).provider_id == "gce://gpuheal-sim/us-central1-a/gpu-node-000"
    assert parse_provider_id(NODE, target(cluster).provider_id) == GceInstance("gpuheal-sim", "us-central1-a", NODE)


@pytest.mark.parametrize(
    ("provider_id", "expected"),
    [
        (
            "gce://my-project-123/europe-west4-b/gke-gpu-pool-1a2b3c4d-x7k2",
            GceInstance("my-project-123", "europe-west4-b", "gke-gpu-pool-1a2b3c4d-x7k2"),
        ),
        ("gce://example.com:my-project/us-east5-a/vm-1", GceInstance("example.com:my-project", "us-east5-a", "vm-1")),
    ],
)
def test_provider_ids_name_project_zone_and_instance(provider_id: str, expected: GceInstance) -> None:
    assert parse_provider_id("n", provider_id) == expected


@pytest.mark.parametrize(
    "provider_id",
    [
        "",
        "aws:///us-east-1a/i-0123456789abcdef0",
        "gce://gpuheal-sim/us-central1-a",
        "gce://gpuheal-sim/us-central1-a/",
        "gce:///us-central1-a/vm-1",
        "gce://gpuheal-sim/us-central1-a/vm-1/extra",
        "gce://gpuheal-sim/us-central1/vm-1",
        "gce://gpuheal-sim/us-central1-a/VM_1",
        "gce://Gpuheal-Sim/us-central1-a/vm-1",
    ],
)
async def test_a_malformed_provider_id_is_final_and_names_node_id_and_shape(
    cluster: SimulatedCluster, provider: GcpProvider, provider_id: str
) -> None:
    bad = RebootTarget(node="gpu-node-9", provider_id=provider_id)
    for call in (provider.reboot(bad), provider.describe(bad), provider.requested_since(bad, datetime.now(UTC))):
        error = await _raises(call)
        assert not error.retryable
        assert "gpu-node-9" in str(error)
        assert repr(provider_id) in str(error)
        assert "gce://<project>/<zone>/<instance-name>" in str(error)
    # Only the reboot asks for anything; nothing was sent, so it is refused.
    assert (await _raises(provider.reboot(bad))).refused
    assert not (await _raises(provider.describe(bad))).refused
    assert (await sim_control(cluster, "GET", "/gcp/sim/v1/operations"))["operations"] == []


def test_it_owns_gce_provider_ids_only(provider: GcpProvider) -> None:
    assert provider.owns(RebootTarget("n", "gce://p-123456/us-central1-a/vm-1"))
    for other in ("aws:///us-east-1a/i-0123456789abcdef0", "azure:///subscriptions/x/vm", "sim://n", ""):
        assert not provider.owns(RebootTarget("n", other))
    assert provider.name == "gcp"
    assert provider.expects_new_boot


def test_settings_read_only_gpuheals_own_endpoint_variable() -> None:
    assert GcpSettings.from_env({"GPUHEAL_GCE_ENDPOINT": "https://compute.internal:8443"}).endpoint == (
        "https://compute.internal:8443"
    )
    defaults = GcpSettings.from_env({"REQUESTS_CA_BUNDLE": "/ca.pem", "GOOGLE_APPLICATION_CREDENTIALS": "/k.json"})
    assert defaults == GcpSettings()
    assert defaults.endpoint is None
    assert defaults.ca_bundle is None


def test_timeouts_and_intervals_are_durations() -> None:
    settings = GcpSettings()
    assert settings.operation_timeout == timedelta(minutes=5)
    assert settings.poll_interval == timedelta(seconds=1)
    assert settings.request_timeout == timedelta(seconds=30)
    assert settings.read_retry == timedelta(seconds=10)


# --- reboot ------------------------------------------------------------------------------------------


async def test_reboot_resets_the_instance_once_and_waits_for_the_operation_to_be_done(
    cluster: SimulatedCluster, provider: GcpProvider
) -> None:
    before = cluster.node_state(NODE)
    detail = await provider.reboot(target(cluster))

    assert detail.startswith("GCE reset instance gpu-node-000 in zone us-central1-a (gpuheal-sim): operation ")
    operations = (await sim_control(cluster, "GET", "/gcp/sim/v1/operations"))["operations"]
    assert len(operations) == 1
    (operation,) = operations
    assert operation["operationType"] == "reset"
    assert operation["targetLink"].endswith("/projects/gpuheal-sim/zones/us-central1-a/instances/gpu-node-000")
    assert operation["name"] in detail
    # The simulated operation answers RUNNING to its first two polls: the provider polled until DONE.
    assert operation["status"] == "DONE"
    assert operation["polls"] == 3
    assert "DONE after 3 polls" in detail

    assert cluster.node_state(NODE)["rebootRequests"] == 1
    after = await back_with_new_boot(cluster, NODE, before["bootId"])
    assert after["rebootRequests"] == 1
    assert after["rebootsCompleted"] == before["rebootsCompleted"] + 1
    assert cluster.node_state(OTHER)["rebootRequests"] == 0


async def test_replace_deletes_the_instance_for_its_group_to_recreate_and_waits_for_the_operation(
    cluster: SimulatedCluster, provider: GcpProvider
) -> None:
    machine = target(cluster)
    detail = await provider.replace(machine)
    # A retried attempt (its answer lost) while the machine goes: what was asked for, not an error.
    again = await provider.replace(machine)

    assert detail.startswith("GCE deleted instance gpu-node-000 in zone us-central1-a (gpuheal-sim): operation ")
    assert detail.endswith("DONE after 3 polls; its managed instance group recreates it")
    (operation,) = (await sim_control(cluster, "GET", "/gcp/sim/v1/operations"))["operations"]
    assert (operation["operationType"], operation["status"]) == ("delete", "DONE"), "one delete, not two"
    for _ in range(400):  # the simulated cloud deletes the node of a terminated machine
        if cluster.get_object("nodes", NODE) is None:
            break
        await asyncio.sleep(0.05)
    assert cluster.get_object("nodes", NODE) is None
    assert cluster.node_state(OTHER)["terminatedAt"] is None
    assert (
        again
        == "GCE instance gpu-node-000 in zone us-central1-a (gpuheal-sim) is being deleted already (resourceNotReady)"
    )
    gone = await provider.replace(machine)
    assert gone == "GCE instance gpu-node-000 in zone us-central1-a (gpuheal-sim) is gone already (notFound)"
    assert len((await sim_control(cluster, "GET", "/gcp/sim/v1/operations"))["operations"]) == 1


async def test_a_delete_that_ends_with_an_error_raises_naming_it(
    cluster: SimulatedCluster, provider: GcpProvider
) -> None:
    failure = {"httpStatus": 400, "code": "RESOURCE_IN_USE_BY_ANOTHER_RESOURCE", "message": "in use by a group"}
    await sim_control(cluster, "POST", "/gcp/sim/v1/operation-failures", failure)

    error = await _raises(provider.replace(target(cluster)))

    assert not error.retryable
    assert str(error).startswith("GCE delete of instance gpu-node-000 in zone us-central1-a (gpuheal-sim) failed:")
    assert "RESOURCE_IN_USE_BY_ANOTHER_RESOURCE" in str(error)
    assert cluster.node_state(NODE)["terminatedAt"] is None


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (500, "INTERNAL_ERROR", True),
        (503, "RESOURCE_OPERATION_RATE_EXCEEDED", True),
        (400, "RESOURCE_NOT_READY", False),
    ],
)
async def test_an_operation_that_ends_with_an_error_raises(
    cluster: SimulatedCluster, provider: GcpProvider, status: int, code: str, retryable: bool
) -> None:
    message = f"simulated failure {code}"
    await sim_control(
        cluster, "POST", "/gcp/sim/v1/operation-failures", {"httpStatus": status, "code": code, "message": message}
    )
    since = datetime.now(UTC)
    error = await _raises(provider.reboot(target(cluster)))

    assert error.retryable is retryable
    assert code in str(error)
    assert message in str(error)
    assert "gpu-node-000" in str(error)
    (operation,) = (await sim_control(cluster, "GET", "/gcp/sim/v1/operations"))["operations"]
    assert operation["name"] in str(error)
    assert operation["status"] == "DONE"
    assert operation["polls"] == 3
    assert cluster.node_state(NODE)["rebootRequests"] == 0
    # Compute Engine accepted the reset and ran its operation, so it is not refused: the provider
    # cannot tell from the error whether the machine was touched.
    assert error.refused is False
    # Yet a reset that failed did not reset the machine: requested_since does not count it, so the
    # retry asks again all the same.
    assert await provider.requested_since(target(cluster), since) is False


async def test_throttling_is_retryable_and_a_later_call_succeeds(
    cluster: SimulatedCluster, provider: GcpProvider
) -> None:
    # The reset is sent once (no SDK retries), so one throttle is beyond them.
    cluster.inject_cloud_fault("gcp", "throttle", 1)
    error = await _raises(provider.reboot(target(cluster)))
    assert error.retryable
    assert "rateLimitExceeded" in str(error)
    assert error.refused  # Compute Engine answered that it did not act
    assert cluster.reboot_requests(NODE) == 0
    assert cluster.simulation.cloud_faults.pending("gcp") == 0

    await provider.reboot(target(cluster))
    assert cluster.node_state(NODE)["rebootRequests"] == 1


async def test_reads_retry_throttling_briefly_inside_the_sdk_and_then_give_up_retryably(
    cluster: SimulatedCluster, provider: GcpProvider
) -> None:
    cluster.inject_cloud_fault("gcp", "throttle", 2)
    assert (await provider.describe(target(cluster))).endswith(": RUNNING")
    assert cluster.simulation.cloud_faults.pending("gcp") == 0

    cluster.inject_cloud_fault("gcp", "throttle", 1000)
    started = time.monotonic()
    error = await _raises(provider.describe(target(cluster)))
    # The SDK gives up after its short window (1.5 s here) and leaves the backoff to Temporal.
    assert time.monotonic() - started < 5
    assert error.retryable
    assert "rateLimitExceeded" in str(error)
    cluster.simulation.cloud_faults.clear()


@pytest.mark.parametrize("call", ["reboot", "describe", "requested_since"])
async def test_an_instance_that_is_not_found_is_final_with_an_actionable_message(
    cluster: SimulatedCluster, provider: GcpProvider, call: str
) -> None:
    cluster.inject_cloud_fault("gcp", "not_found", 1)
    error = await _raises(_call(provider, call, target(cluster)))
    assert not error.retryable
    assert error.refused is (call == "reboot")  # only a reboot is refused; reads ask for nothing
    assert "GCE instance gpu-node-000 not found in zone us-central1-a of project gpuheal-sim (notFound)" in str(error)
    assert "check node gpu-node-000's providerID 'gce://gpuheal-sim/us-central1-a/gpu-node-000'" in str(error)
    assert cluster.node_state(NODE)["rebootRequests"] == 0


@pytest.mark.parametrize(
    "provider_id",
    ["gce://gpuheal-sim/us-central1-a/gpu-node-404", "gce://other-project/us-central1-a/gpu-node-000"],
)
async def test_an_instance_the_cloud_does_not_have_is_not_found(
    cluster: SimulatedCluster, provider: GcpProvider, provider_id: str
) -> None:
    error = await _raises(provider.reboot(RebootTarget(node=NODE, provider_id=provider_id)))
    assert not error.retryable and error.refused
    assert "(notFound)" in str(error)
    assert repr(provider_id) in str(error)
    assert cluster.node_state(NODE)["rebootRequests"] == 0


@pytest.mark.parametrize("call", ["reboot", "describe", "requested_since"])
async def test_permission_denied_is_final_and_names_the_permissions_and_workload_identity(
    cluster: SimulatedCluster, provider: GcpProvider, call: str
) -> None:
    cluster.inject_cloud_fault("gcp", "denied", 1)
    error = await _raises(_call(provider, call, target(cluster)))
    assert not error.retryable
    assert error.refused is (call == "reboot")
    text = str(error)
    assert "forbidden" in text
    assert "compute.instances.reset" in text
    assert "compute.instances.get" in text
    assert "compute.zoneOperations.list" in text
    assert "workload identity" in text
    assert "gpuheal-sim" in text
    assert cluster.node_state(NODE)["rebootRequests"] == 0


async def _call(provider: GcpProvider, call: str, node: RebootTarget) -> object:
    if call == "reboot":
        return await provider.reboot(node)
    if call == "describe":
        return await provider.describe(node)
    return await provider.requested_since(node, datetime.now(UTC))


# --- Compute Engine's record of resets ---------------------------------------------------------------


async def test_requested_since_reads_the_zones_reset_operations(
    cluster: SimulatedCluster, provider: GcpProvider
) -> None:
    since = datetime.now(UTC)
    assert await provider.requested_since(target(cluster), since) is False

    await provider.reboot(target(cluster))

    assert await provider.requested_since(target(cluster), since) is True
    # The same moment, written in another offset, is the same moment.
    assert await provider.requested_since(target(cluster), since.astimezone().replace(microsecond=0)) is True
    assert await provider.requested_since(target(cluster), datetime.now(UTC) + timedelta(minutes=1)) is False
    assert await provider.requested_since(target(cluster, OTHER), since) is False


async def test_describe_gives_compute_engines_view(cluster: SimulatedCluster, provider: GcpProvider) -> None:
    assert await provider.describe(target(cluster, OTHER)) == (
        "GCE instance gpu-node-001 in zone us-central1-a (gpuheal-sim): RUNNING"
    )


# --- credentials and trust ---------------------------------------------------------------------------


async def test_an_explicit_ca_bundle_replaces_requests_default_trust(
    cluster: SimulatedCluster, gcp_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    untrusted = await _raises(GcpProvider(settings_for(gcp_env)).describe(target(cluster)))
    assert untrusted.retryable
    assert "could not reach Compute Engine at https://127.0.0.1:" in str(untrusted)
    # The access token cannot be had over untrusted TLS, so a reset is never sent: refused.
    refused = await _raises(GcpProvider(settings_for(gcp_env)).reboot(target(cluster)))
    assert refused.retryable and refused.refused
    assert cluster.reboot_requests(NODE) == 0

    trusted = GcpProvider(replace(settings_for(gcp_env), ca_bundle=str(cluster.ca_file)))
    assert (await trusted.describe(target(cluster))).endswith(": RUNNING")


async def test_without_application_default_credentials_the_message_says_how_to_provide_them(
    cluster: SimulatedCluster, gcp_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    error = await _raises(GcpProvider(settings_for(gcp_env)).reboot(target(cluster)))
    assert not error.retryable
    assert error.refused  # no credentials: nothing was sent
    assert "Application Default Credentials" in str(error)
    assert "workload identity" in str(error)
    assert cluster.node_state(NODE)["rebootRequests"] == 0


# --- resets sent without a real answer ---------------------------------------------------------------


@pytest.fixture
async def fake_compute(cluster: SimulatedCluster) -> AsyncIterator[tuple[str, list[str]]]:
    """An HTTPS "Compute Engine" (trusted like the simulator) that takes the reset and never answers it.

    The instance "dropped" loses the connection after the request was read; any other gets a
    gateway's 504. Yields the endpoint and the instances whose reset arrived.
    """
    seen: list[str] = []

    async def reset(request: web.Request) -> web.Response:
        seen.append(request.match_info["instance"])
        if request.match_info["instance"] == "dropped":
            assert request.transport is not None
            request.transport.abort()
        return web.json_response({"error": {"code": 504, "message": "upstream request timeout"}}, status=504)

    app = web.Application()
    app.router.add_post("/compute/v1/projects/{project}/zones/{zone}/instances/{instance}/reset", reset)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=cluster._context().certificates.server_context())
    await site.start()
    try:
        yield f"https://127.0.0.1:{runner.addresses[0][1]}", seen
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(("instance", "said"), [("gateway", "504"), ("dropped", "could not reach Compute Engine")])
async def test_a_reset_sent_without_a_real_answer_is_not_refused(
    gcp_env: dict[str, str], fake_compute: tuple[str, list[str]], instance: str, said: str
) -> None:
    # The request went out (the token came from the simulator's token endpoint): Compute Engine may
    # have it. Not refused, so the retry asks requested_since, which reads the operations.
    endpoint, seen = fake_compute
    provider = GcpProvider(replace(settings_for(gcp_env), endpoint=endpoint))
    error = await _raises(provider.reboot(RebootTarget(NODE, f"gce://gpuheal-sim/us-central1-a/{instance}")))
    assert said in str(error)
    assert error.retryable and not error.refused
    assert seen == [instance]


async def test_a_reset_that_cannot_connect_is_refused(cluster: SimulatedCluster, gcp_env: dict[str, str]) -> None:
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = GcpProvider(replace(settings_for(gcp_env), endpoint=f"https://127.0.0.1:{port}"))
    error = await _raises(provider.reboot(target(cluster)))
    assert "could not reach Compute Engine" in str(error)
    assert error.retryable and error.refused  # no connection, so nothing was sent
