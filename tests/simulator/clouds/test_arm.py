"""The simulator's ARM endpoint at the protocol level: raw HTTPS requests, as ARM's REST reference shows them."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gpuheal_sim.simulator import SimulatedCluster
from tests.cloud_fleet import cloud_fleet

SUB = "00000000-0000-0000-0000-000000000000"
API = "api-version=2026-04-01"
VM = f"/subscriptions/{SUB}/resourceGroups/gpuheal-sim/providers/Microsoft.Compute/virtualMachines/gpu-node-000"
VMSS_VM = (
    f"/subscriptions/{SUB}/resourceGroups/gpuheal-sim/providers/Microsoft.Compute/"
    "virtualMachineScaleSets/gpu-pool/virtualMachines/1"
)


class Arm:
    """A bare HTTPS client for the endpoint, with a token from its managed identity."""

    def __init__(self, cluster: SimulatedCluster, session: aiohttp.ClientSession) -> None:
        self.cluster = cluster
        self.session = session
        self.token = ""

    async def login(self) -> None:
        env = self.cluster.client_environment()
        status, body, _ = await self.call(
            "GET",
            f"{env['IDENTITY_ENDPOINT']}?api-version=2019-08-01&resource=https://management.azure.com/",
            headers={"X-IDENTITY-HEADER": env["IDENTITY_HEADER"]},
        )
        assert status == 200, body
        self.token = body["access_token"]

    async def call(
        self, method: str, url: str, headers: dict[str, str] | None = None, auth: bool = False
    ) -> tuple[int, Any, dict[str, str]]:
        if not url.startswith("https://"):
            url = f"{self.cluster.cloud_url}{url}"
        sent = dict(headers or {})
        if auth:
            sent["Authorization"] = f"Bearer {self.token}"
        async with self.session.request(method, url, headers=sent) as response:
            text = await response.text()
            body = await response.json(content_type=None) if text else None
            return response.status, body, dict(response.headers)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[SimulatedCluster]:
    async with cloud_fleet("azure", tmp_path) as running:
        yield running


@pytest.fixture
async def arm(cluster: SimulatedCluster) -> AsyncIterator[Arm]:
    context = ssl.create_default_context(cafile=str(cluster.ca_file))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        client = Arm(cluster, session)
        await client.login()
        yield client


def test_client_environment_points_the_sdk_chain_here(cluster: SimulatedCluster) -> None:
    env = cluster.client_environment()
    assert env["IDENTITY_ENDPOINT"] == f"{cluster.cloud_url}/azure/msi/token"
    assert env["GPUHEAL_AZURE_ENDPOINT"] == cluster.cloud_url
    assert env["REQUESTS_CA_BUNDLE"] == str(cluster.ca_file)
    assert env["IDENTITY_HEADER"]


async def test_the_managed_identity_endpoint_speaks_app_services_protocol(cluster: SimulatedCluster, arm: Arm) -> None:
    env = cluster.client_environment()
    url = f"{env['IDENTITY_ENDPOINT']}?api-version=2019-08-01&resource=https://management.azure.com/"
    status, body, _ = await arm.call("GET", url, headers={"X-IDENTITY-HEADER": env["IDENTITY_HEADER"]})
    assert status == 200
    assert body["token_type"] == "Bearer" and body["resource"] == "https://management.azure.com/"
    assert int(body["expires_on"]) > 0 and body["access_token"] == arm.token
    status, body, _ = await arm.call("GET", url, headers={"X-IDENTITY-HEADER": "wrong"})
    assert status == 401 and "X-IDENTITY-HEADER" in body["message"]
    status, _, _ = await arm.call(
        "GET", env["IDENTITY_ENDPOINT"], headers={"X-IDENTITY-HEADER": env["IDENTITY_HEADER"]}
    )
    assert status == 400


async def test_arm_requires_a_bearer_token_it_issued(arm: Arm) -> None:
    status, body, headers = await arm.call("GET", f"{VM}/instanceView?{API}")
    assert status == 401 and body["error"]["code"] == "AuthenticationFailed"
    assert headers["WWW-Authenticate"].startswith("Bearer ")
    status, _, _ = await arm.call("GET", f"{VM}/instanceView?{API}", headers={"Authorization": "Bearer forged"})
    assert status == 401
    status, body, _ = await arm.call("GET", f"{VM}/instanceView", auth=True)
    assert status == 400 and body["error"]["code"] == "MissingApiVersionParameter"


@pytest.mark.parametrize(("path", "node"), [(VM, "gpu-node-000"), (VMSS_VM, "gpu-node-001")])
async def test_restart_is_a_long_running_operation(cluster: SimulatedCluster, arm: Arm, path: str, node: str) -> None:
    status, body, headers = await arm.call("POST", f"{path}/restart?{API}", auth=True)
    assert status == 202 and body is None
    assert cluster.node_state(node)["rebootRequests"] == 1
    async_url, location = headers["Azure-AsyncOperation"], headers["Location"]
    assert "/providers/Microsoft.Compute/locations/eastus/operations/" in async_url
    assert async_url.endswith(API) and "monitor=true" in location

    view = (await arm.call("GET", f"{path}/instanceView?{API}", auth=True))[1]
    assert [s["code"] for s in view["statuses"]] == ["ProvisioningState/updating", "PowerState/starting"]
    seen = [(await arm.call("GET", async_url, auth=True))[1]["status"] for _ in range(3)]
    assert seen == ["InProgress", "InProgress", "Succeeded"]
    done = (await arm.call("GET", async_url, auth=True))[1]
    assert done["status"] == "Succeeded" and done["endTime"] >= done["startTime"]
    status, body, _ = await arm.call("GET", location, auth=True)
    assert (status, body) == (200, None)

    view = (await arm.call("GET", f"{path}/instanceView?{API}", auth=True))[1]
    assert [s["code"] for s in view["statuses"]] == ["ProvisioningState/succeeded", "PowerState/running"]
    assert view["statuses"][0]["time"] == done["endTime"]
    assert cluster.node_state(node)["rebootRequests"] == 1


async def test_the_location_url_answers_202_while_the_operation_runs(arm: Arm) -> None:
    _, _, headers = await arm.call("POST", f"{VM}/restart?{API}", auth=True)
    status, _, _ = await arm.call("GET", headers["Location"], auth=True)
    assert status == 202


async def test_paths_are_matched_without_regard_to_case(cluster: SimulatedCluster, arm: Arm) -> None:
    status, _, _ = await arm.call("POST", f"{VMSS_VM.lower()}/RESTART?{API}", auth=True)
    assert status == 202
    assert cluster.node_state("gpu-node-001")["rebootRequests"] == 1


async def test_unknown_machines_get_arms_not_found_errors(arm: Arm) -> None:
    base = f"/subscriptions/{SUB}/resourceGroups/gpuheal-sim/providers/Microsoft.Compute"
    status, body, _ = await arm.call("POST", f"{base}/virtualMachines/nope/restart?{API}", auth=True)
    assert status == 404 and body["error"]["code"] == "ResourceNotFound"
    assert "Microsoft.Compute/virtualMachines/nope" in body["error"]["message"]
    status, body, _ = await arm.call(
        "GET", f"{base}/virtualMachineScaleSets/gpu-pool/virtualMachines/9/instanceView?{API}", auth=True
    )
    assert status == 404 and body["error"]["code"] == "NotFound"
    status, body, _ = await arm.call(
        "GET", f"{base}/virtualMachineScaleSets/other/virtualMachines/1/instanceView?{API}", auth=True
    )
    assert status == 404 and body["error"]["code"] == "ResourceNotFound"
    status, body, _ = await arm.call(
        "GET", f"/subscriptions/{SUB}/providers/Microsoft.Compute/locations/eastus/operations/unknown?{API}", auth=True
    )
    assert status == 404
    status, _, _ = await arm.call("GET", f"{VM}/restart?{API}", auth=True)
    assert status == 405


async def test_injected_faults_answer_in_arms_format(cluster: SimulatedCluster, arm: Arm) -> None:
    cluster.inject_cloud_fault("azure", "throttle")
    status, body, headers = await arm.call("POST", f"{VM}/restart?{API}", auth=True)
    assert status == 429 and body["error"]["code"] == "TooManyRequests" and headers["Retry-After"] == "1"
    cluster.inject_cloud_fault("azure", "denied")
    status, body, _ = await arm.call("POST", f"{VMSS_VM}/restart?{API}", auth=True)
    assert status == 403 and body["error"]["code"] == "AuthorizationFailed"
    assert "'Microsoft.Compute/virtualMachineScaleSets/virtualMachines/restart/action'" in body["error"]["message"]
    cluster.inject_cloud_fault("azure", "not_found")
    status, body, _ = await arm.call("POST", f"{VM}/restart?{API}", auth=True)
    assert status == 404 and body["error"]["code"] == "ResourceNotFound"
    assert cluster.node_state("gpu-node-000")["rebootRequests"] == 0
    assert cluster.node_state("gpu-node-001")["rebootRequests"] == 0
    # Faults used up, the next request is served.
    status, _, _ = await arm.call("POST", f"{VM}/restart?{API}", auth=True)
    assert status == 202
