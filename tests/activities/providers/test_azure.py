"""The Azure provider against the simulator's ARM endpoint, through azure-mgmt-compute and DefaultAzureCredential.

No credential is made for the tests: the simulator serves App Service's managed-identity protocol
and its environment (IDENTITY_ENDPOINT, IDENTITY_HEADER, REQUESTS_CA_BUNDLE) lets the SDK's
standard credential chain find it, as workload identity is found in AKS.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gpuheal.activities.providers import ProviderError, RebootTarget
from gpuheal.activities.providers.azure import AzureMachine, AzureProvider, AzureSettings
from gpuheal_sim.simulator import SimulatedCluster
from tests.cloud_fleet import cloud_fleet

SUB = "00000000-0000-0000-0000-000000000000"
VM_NODE = "gpu-node-000"  # even index: a standalone VM
VMSS_NODE = "gpu-node-001"  # odd index: instance 1 of the scale set gpu-pool
# Variables that would lead DefaultAzureCredential elsewhere than the simulator's managed identity.
_FOREIGN = (
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_USERNAME",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_TOKEN_CREDENTIALS",
    "AZURE_SDK_CLOUD_CONF",
    "IDENTITY_SERVER_THUMBPRINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[SimulatedCluster]:
    async with cloud_fleet("azure", tmp_path) as running:
        yield running


@pytest.fixture
def azure_env(cluster: SimulatedCluster, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name in _FOREIGN:
        monkeypatch.delenv(name, raising=False)
    environment = cluster.client_environment()
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return environment


@pytest.fixture
def make_provider(azure_env: dict[str, str]) -> Iterator[Callable[..., AzureProvider]]:
    """Providers built from the environment (as the worker builds them), closed after the test."""
    made: list[AzureProvider] = []

    def make(**overrides: Any) -> AzureProvider:
        provider = AzureProvider(replace(AzureSettings.from_env(azure_env), **overrides))
        made.append(provider)
        return provider

    yield make
    for provider in made:
        provider.close()


@pytest.fixture
def provider(make_provider: Callable[..., AzureProvider]) -> AzureProvider:
    return make_provider()


def target(cluster: SimulatedCluster, node: str) -> RebootTarget:
    obj = cluster.get_object("nodes", node)
    assert obj is not None
    return RebootTarget(node=node, provider_id=obj["spec"]["providerID"])


async def back_with_new_boot(cluster: SimulatedCluster, node: str, old_boot: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        state = cluster.node_state(node)
        if state["ready"] and not state["rebooting"] and state["bootId"] != old_boot:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{node} did not come back with a new bootID: {state}")
        await asyncio.sleep(0.05)


# --- the happy paths ---------------------------------------------------------------------------------


def test_the_fleet_carries_both_shapes_of_azure_provider_id(cluster: SimulatedCluster) -> None:
    assert target(cluster, VM_NODE).provider_id == (
        f"azure:///subscriptions/{SUB}/resourceGroups/gpuheal-sim/providers/Microsoft.Compute/virtualMachines/{VM_NODE}"
    )
    assert target(cluster, VMSS_NODE).provider_id == (
        f"azure:///subscriptions/{SUB}/resourceGroups/gpuheal-sim/providers/Microsoft.Compute/"
        "virtualMachineScaleSets/gpu-pool/virtualMachines/1"
    )


@pytest.mark.parametrize(
    ("node", "line"),
    [
        (VM_NODE, f"Azure restarted VM {VM_NODE} in gpuheal-sim (operation Succeeded)"),
        (VMSS_NODE, "Azure restarted VM instance 1 of scale set gpu-pool in gpuheal-sim (operation Succeeded)"),
    ],
)
async def test_reboot_restarts_the_vm_once_and_follows_the_operation_to_the_end(
    cluster: SimulatedCluster, provider: AzureProvider, caplog: pytest.LogCaptureFixture, node: str, line: str
) -> None:
    before = cluster.node_state(node)
    other = VMSS_NODE if node == VM_NODE else VM_NODE
    caplog.set_level(logging.INFO, logger="azure.core.pipeline.policies.http_logging_policy")

    assert await provider.reboot(target(cluster, node)) == line

    assert cluster.node_state(node)["rebootRequests"] == 1
    assert cluster.node_state(other)["rebootRequests"] == 0
    # The simulated operation answers InProgress to its first two polls: the SDK polled the
    # Azure-AsyncOperation URL until Succeeded (the third), then fetched the Location URL once.
    urls = [r.getMessage().splitlines()[0] for r in caplog.records if r.getMessage().startswith("Request URL")]
    polls = [url for url in urls if "/operations/" in url]
    assert sum("monitor=" not in url for url in polls) == 3
    assert sum("monitor=" in url for url in polls) == 1
    assert sum(url.endswith("/restart?api-version=2026-04-01'") for url in urls) == 1
    await back_with_new_boot(cluster, node, before["bootId"])
    assert cluster.node_state(node)["rebootRequests"] == 1


async def test_segment_names_are_matched_without_regard_to_case(
    cluster: SimulatedCluster, provider: AzureProvider
) -> None:
    lowered = RebootTarget(
        node=VM_NODE,
        provider_id=f"azure:///subscriptions/{SUB}/resourcegroups/gpuheal-sim/providers/microsoft.compute/"
        f"virtualmachines/{VM_NODE}",
    )
    assert AzureMachine.parse(lowered) == AzureMachine(SUB, "gpuheal-sim", vm=VM_NODE)
    await provider.reboot(lowered)
    assert cluster.node_state(VM_NODE)["rebootRequests"] == 1


async def test_describe_reads_the_instance_view(cluster: SimulatedCluster, provider: AzureProvider) -> None:
    assert await provider.describe(target(cluster, VM_NODE)) == (
        f"Azure VM {VM_NODE} in gpuheal-sim: PowerState/running, ProvisioningState/succeeded"
    )
    assert await provider.describe(target(cluster, VMSS_NODE)) == (
        "Azure VM instance 1 of scale set gpu-pool in gpuheal-sim: PowerState/running, ProvisioningState/succeeded"
    )


async def test_requested_since_is_unknown_because_arm_keeps_no_record_of_it(
    cluster: SimulatedCluster, provider: AzureProvider
) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    await provider.reboot(target(cluster, VM_NODE))
    # The restart just happened, yet the provider does not claim to know: None, never a guess.
    assert await provider.requested_since(target(cluster, VM_NODE), since) is None
    assert await provider.requested_since(target(cluster, VMSS_NODE), since) is None
    with pytest.raises(ProviderError) as raised:
        await provider.requested_since(RebootTarget(node="n", provider_id="aws:///us-east-1a/i-0abc"), since)
    assert raised.value.retryable is False


async def test_an_operation_that_outlasts_the_timeout_is_a_retryable_error(
    cluster: SimulatedCluster, make_provider: Callable[..., AzureProvider]
) -> None:
    provider = make_provider(operation_timeout=timedelta(seconds=0.05), polling_interval=timedelta(seconds=1))
    with pytest.raises(ProviderError) as raised:
        await provider.reboot(target(cluster, VM_NODE))
    assert raised.value.retryable is True
    assert "accepted the restart" in str(raised.value) and "InProgress" in str(raised.value)
    assert cluster.node_state(VM_NODE)["rebootRequests"] == 1
    # ARM accepted the restart and the VM is restarting: not refused, or a retry would restart it twice.
    assert raised.value.refused is False


# --- errors ------------------------------------------------------------------------------------------


async def test_a_throttled_restart_is_refused_at_once_and_a_later_call_succeeds(
    cluster: SimulatedCluster, provider: AzureProvider
) -> None:
    # The restart POST is sent once (azure-core would also repeat a timed-out POST ARM may have
    # carried out): a 429 fails the call, refused, for Temporal to retry with backoff.
    cluster.inject_cloud_fault("azure", "throttle", 1)
    with pytest.raises(ProviderError) as raised:
        await provider.reboot(target(cluster, VMSS_NODE))
    assert raised.value.retryable is True
    assert "429 (TooManyRequests)" in str(raised.value)
    assert raised.value.refused is True
    assert cluster.node_state(VMSS_NODE)["rebootRequests"] == 0

    await provider.reboot(target(cluster, VMSS_NODE))
    assert cluster.node_state(VMSS_NODE)["rebootRequests"] == 1


async def test_throttled_reads_are_retried_by_the_sdk(cluster: SimulatedCluster, provider: AzureProvider) -> None:
    cluster.inject_cloud_fault("azure", "throttle", 1)
    started = time.monotonic()
    assert "PowerState/running" in await provider.describe(target(cluster, VM_NODE))
    assert time.monotonic() - started >= 0.9  # the SDK honoured Retry-After: 1
    assert cluster.simulation.cloud_faults.pending("azure") == 0


@pytest.mark.parametrize(
    ("node", "code", "name"),
    [(VM_NODE, "ResourceNotFound", f"VM {VM_NODE}"), (VMSS_NODE, "NotFound", "VM instance 1 of scale set gpu-pool")],
)
async def test_not_found_is_not_retried_and_names_the_node_to_check(
    cluster: SimulatedCluster, provider: AzureProvider, node: str, code: str, name: str
) -> None:
    cluster.inject_cloud_fault("azure", "not_found")
    with pytest.raises(ProviderError) as raised:
        await provider.reboot(target(cluster, node))
    message = str(raised.value)
    assert raised.value.retryable is False and raised.value.refused is True
    assert f"Azure {name}" in message and "not found in resource group gpuheal-sim" in message
    assert f"({code}); check node {node}'s providerID azure:///subscriptions/" in message
    assert cluster.node_state(node)["rebootRequests"] == 0


async def test_a_machine_arm_does_not_have_is_not_found(cluster: SimulatedCluster, provider: AzureProvider) -> None:
    base = f"azure:///subscriptions/{SUB}/resourceGroups/gpuheal-sim/providers/Microsoft.Compute"
    gone = RebootTarget(node="gpu-node-999", provider_id=f"{base}/virtualMachines/gpu-node-999")
    with pytest.raises(ProviderError) as raised:
        await provider.reboot(gone)
    assert raised.value.retryable is False
    assert "Azure VM gpu-node-999 not found in resource group gpuheal-sim" in str(raised.value)
    assert "(ResourceNotFound); check node gpu-node-999's providerID" in str(raised.value)
    # A scale set that exists but has no such instance: Compute's own "NotFound".
    missing = RebootTarget(
        node="gpu-node-007", provider_id=f"{base}/virtualMachineScaleSets/gpu-pool/virtualMachines/7"
    )
    with pytest.raises(ProviderError) as raised:
        await provider.describe(missing)
    assert raised.value.retryable is False
    assert "VM instance 7 of scale set gpu-pool not found" in str(raised.value) and "(NotFound)" in str(raised.value)


@pytest.mark.parametrize(
    ("node", "action"),
    [
        (VM_NODE, "Microsoft.Compute/virtualMachines/restart/action"),
        (VMSS_NODE, "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/restart/action"),
    ],
)
async def test_permission_denied_is_not_retried_and_names_the_action_to_grant(
    cluster: SimulatedCluster,
    make_provider: Callable[..., AzureProvider],
    monkeypatch: pytest.MonkeyPatch,
    node: str,
    action: str,
) -> None:
    # As in AKS, where the workload identity webhook sets the identity's client id.
    monkeypatch.setenv("AZURE_CLIENT_ID", "11111111-2222-3333-4444-555555555555")
    provider = make_provider()
    cluster.inject_cloud_fault("azure", "denied")
    with pytest.raises(ProviderError) as raised:
        await provider.reboot(target(cluster, node))
    message = str(raised.value)
    assert raised.value.retryable is False and raised.value.refused is True
    assert "the workload identity (client id 11111111-2222-3333-4444-555555555555)" in message
    assert f"(AuthorizationFailed): grant it {action}" in message
    assert cluster.node_state(node)["rebootRequests"] == 0


async def test_describe_denied_names_the_read_action(cluster: SimulatedCluster, provider: AzureProvider) -> None:
    cluster.inject_cloud_fault("azure", "denied")
    with pytest.raises(ProviderError) as raised:
        await provider.describe(target(cluster, VM_NODE))
    assert raised.value.retryable is False
    assert "grant it Microsoft.Compute/virtualMachines/instanceView/read" in str(raised.value)
    assert raised.value.refused is False  # describe asks for no reboot


async def test_no_credential_in_the_chain_is_not_retried(
    cluster: SimulatedCluster, provider: AzureProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The managed identity endpoint refuses a wrong secret; AZURE_TOKEN_CREDENTIALS (the SDK's own
    # variable) keeps developer credentials such as a logged-in Azure CLI out of the chain.
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-secret")
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "ManagedIdentityCredential")
    with pytest.raises(ProviderError) as raised:
        await provider.reboot(target(cluster, VM_NODE))
    message = str(raised.value)
    assert raised.value.retryable is False
    assert raised.value.refused is True  # no token, so nothing went to ARM
    assert "DefaultAzureCredential found no usable credential" in message
    assert "X-IDENTITY-HEADER is missing or wrong" in message  # the chain's own account, on one line
    assert "\n" not in message
    assert cluster.node_state(VM_NODE)["rebootRequests"] == 0


async def test_a_token_arm_rejects_is_not_retried(
    cluster: SimulatedCluster, provider: AzureProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A managed identity endpoint that hands out a token ARM (the simulator) never issued.
    async def token(request: web.Request) -> web.Response:
        resource = request.query["resource"]
        expires = str(int(time.time()) + 3600)
        return web.json_response({"access_token": "forged", "expires_on": expires, "resource": resource})

    app = web.Application()
    app.router.add_get("/token", token)
    async with TestServer(app, host="127.0.0.1") as server:
        monkeypatch.setenv("IDENTITY_ENDPOINT", str(server.make_url("/token")))
        with pytest.raises(ProviderError) as raised:
            await provider.reboot(target(cluster, VM_NODE))
    assert raised.value.retryable is False and raised.value.refused is True
    assert "ARM rejected gpuheal's Azure credential" in str(raised.value) and "401" in str(raised.value)
    assert cluster.node_state(VM_NODE)["rebootRequests"] == 0


async def test_an_unreachable_arm_is_retryable(make_provider: Callable[..., AzureProvider]) -> None:
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = make_provider(endpoint=f"https://127.0.0.1:{port}", retry_total=0)
    node = RebootTarget(
        node=VM_NODE,
        provider_id=f"azure:///subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/x",
    )
    with pytest.raises(ProviderError) as raised:
        await provider.describe(node)
    assert raised.value.retryable is True
    assert "could not reach ARM" in str(raised.value)
    # A restart that cannot connect was never sent (ServiceRequestError): refused.
    with pytest.raises(ProviderError) as raised:
        await provider.reboot(node)
    assert raised.value.retryable is True and raised.value.refused is True
    assert "could not reach ARM" in str(raised.value)


@pytest.mark.parametrize(
    "provider_id",
    [
        "",
        "aws:///us-east-1a/i-0abc",
        f"azure:///subscriptions/{SUB}/resourceGroups/rg",
        f"azure:///subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Network/virtualMachines/x",
        f"azure:///subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/ss",
        f"azure:///subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/a/b",
    ],
)
async def test_a_malformed_provider_id_is_not_retried(
    cluster: SimulatedCluster, provider: AzureProvider, provider_id: str
) -> None:
    bad = RebootTarget(node=VM_NODE, provider_id=provider_id)
    for call in (provider.reboot, provider.describe):
        with pytest.raises(ProviderError) as raised:
            await call(bad)
        message = str(raised.value)
        assert raised.value.retryable is False
        assert raised.value.refused is (call == provider.reboot)  # nothing was sent
        assert f"node {VM_NODE} has providerID {provider_id!r}" in message and "virtualMachineScaleSets" in message
    assert cluster.node_state(VM_NODE)["rebootRequests"] == 0


# --- answers that say nothing about what ARM did --------------------------------------------------------


@pytest.fixture
async def fake_arm(cluster: SimulatedCluster) -> AsyncIterator[tuple[str, list[str]]]:
    """An HTTPS "ARM" (trusted like the simulator) whose restart answers 504, or drops the connection.

    The restart is recorded before either answer: the request reached it. Yields the base URL and the
    recorded requests.
    """
    seen: list[str] = []

    async def restart(request: web.Request) -> web.Response:
        vm = request.match_info["vm"]
        seen.append(vm)
        if vm == "dropped":
            assert request.transport is not None
            request.transport.abort()  # read and recorded, then the connection goes: no answer
        return web.json_response(
            {"error": {"code": "GatewayTimeout", "message": "The gateway did not receive a response in time."}},
            status=504,
        )

    app = web.Application()
    app.router.add_post(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{vm}/restart", restart
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=cluster._context().certificates.server_context())
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"https://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("vm", "said"),
    [
        ("gateway", "ARM answered 504 (GatewayTimeout)"),
        ("dropped", "could not reach ARM"),
    ],
)
async def test_a_restart_sent_without_a_real_answer_is_not_refused(
    make_provider: Callable[..., AzureProvider], fake_arm: tuple[str, list[str]], vm: str, said: str
) -> None:
    # A gateway's 504, or a connection lost after sending (ServiceResponseError): ARM may have the
    # restart, so a retry must not ask again.
    url, seen = fake_arm
    provider = make_provider(endpoint=url, retry_total=3)
    node = RebootTarget(
        node=VM_NODE,
        provider_id=f"azure:///subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{vm}",
    )
    with pytest.raises(ProviderError) as raised:
        await provider.reboot(node)
    assert said in str(raised.value)
    assert raised.value.retryable is True and raised.value.refused is False
    assert seen == [vm], "sent once, whatever the client's retry settings"


# --- ownership and settings --------------------------------------------------------------------------


def test_owns_azure_provider_ids_only() -> None:
    provider = AzureProvider()
    vm = f"azure:///subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/x"
    assert provider.owns(RebootTarget(node="n", provider_id=vm))
    assert provider.owns(RebootTarget(node="n", provider_id=vm.replace("azure:", "AZURE:")))
    for other in ("", "aws:///us-east-1a/i-0abc", "gce://project/zone/name", "sim://n", "azurefoo://x"):
        assert not provider.owns(RebootTarget(node="n", provider_id=other))


def test_settings_from_env() -> None:
    assert AzureSettings.from_env({}) == AzureSettings()
    assert AzureSettings().endpoint is None and AzureSettings().retry_total == 2
    settings = AzureSettings.from_env(
        {"GPUHEAL_AZURE_ENDPOINT": "https://arm.example", "GPUHEAL_AZURE_POLL_INTERVAL": "0.5"}
    )
    assert (settings.endpoint, settings.polling_interval) == ("https://arm.example", timedelta(seconds=0.5))
    with pytest.raises(ValueError, match="GPUHEAL_AZURE_POLL_INTERVAL"):
        AzureSettings.from_env({"GPUHEAL_AZURE_POLL_INTERVAL": "soon"})


def test_the_poll_interval_and_operation_timeout_are_durations() -> None:
    settings = AzureSettings()
    assert (settings.polling_interval, settings.operation_timeout) == (timedelta(seconds=5), timedelta(minutes=10))
