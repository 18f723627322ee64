"""The simulator's Redfish service at the HTTP level, and with sushy's default (session) authentication."""

from __future__ import annotations

import asyncio
import base64
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sushy

from gpuheal_sim.simulator import SimulatedCluster
from gpuheal_sim.simulator.clouds.redfish import SYSTEM_ANNOTATION, USERNAME, RedfishEndpoint
from tests.cloud_fleet import cloud_fleet, trusting_session


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[SimulatedCluster]:
    async with cloud_fleet("redfish", tmp_path) as running:
        yield running


@pytest.fixture
async def http(cluster: SimulatedCluster) -> AsyncIterator[aiohttp.ClientSession]:
    """A client trusting the simulator's CA, with no credentials of its own."""
    async with trusting_session(cluster) as session:
        yield session


def _endpoint(cluster: SimulatedCluster) -> RedfishEndpoint:
    return next(cloud for cloud in cluster._clouds if isinstance(cloud, RedfishEndpoint))


def _basic(username: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


def _auth(cluster: SimulatedCluster) -> dict[str, str]:
    return _basic(USERNAME, _endpoint(cluster).password)


async def _call(
    http: aiohttp.ClientSession, method: str, path: str, **kwargs: Any
) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with http.request(method, path, **kwargs) as response:
        body = await response.json() if response.content_type == "application/json" else {}
        return response.status, body, dict(response.headers)


async def test_nodes_name_their_system_and_have_no_provider_id(cluster: SimulatedCluster) -> None:
    for node in cluster.node_names():
        obj = cluster.get_object("nodes", node)
        assert obj is not None
        assert obj["spec"]["providerID"] == ""
        assert obj["metadata"]["annotations"][SYSTEM_ANNOTATION] == f"{cluster.cloud_url}/redfish/v1/Systems/{node}"


async def test_client_environment_points_at_owner_only_credential_files(cluster: SimulatedCluster) -> None:
    env = cluster.client_environment()
    assert env["GPUHEAL_REDFISH_CA_BUNDLE"] == str(cluster.ca_file)
    directory = Path(env["GPUHEAL_REDFISH_CREDENTIALS_DIR"])
    assert (directory / "username").read_text() == USERNAME
    assert (directory / "password").read_text() == _endpoint(cluster).password
    assert stat.S_IMODE((directory / "password").stat().st_mode) == 0o600


async def test_service_root_is_open_and_everything_else_needs_credentials(
    cluster: SimulatedCluster, http: aiohttp.ClientSession
) -> None:
    status, root, headers = await _call(http, "GET", "/redfish/v1/")
    assert status == 200 and headers["OData-Version"] == "4.0"
    assert root["Systems"] == {"@odata.id": "/redfish/v1/Systems"}
    assert root["Links"]["Sessions"] == {"@odata.id": "/redfish/v1/SessionService/Sessions"}
    status, error, headers = await _call(http, "GET", "/redfish/v1/Systems")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
    assert error["error"]["code"] == "Base.1.16.NoValidSession"
    assert (await _call(http, "GET", "/redfish/v1/Systems", headers=_basic(USERNAME, "guess")))[0] == 401
    status, systems, _ = await _call(http, "GET", "/redfish/v1/Systems", headers=_auth(cluster))
    assert status == 200
    assert systems["Members"] == [
        {"@odata.id": "/redfish/v1/Systems/gpu-node-000"},
        {"@odata.id": "/redfish/v1/Systems/gpu-node-001"},
    ]
    assert systems["Members@odata.count"] == 2


async def test_system_offers_the_reset_action(cluster: SimulatedCluster, http: aiohttp.ClientSession) -> None:
    status, system, _ = await _call(http, "GET", "/redfish/v1/Systems/gpu-node-000", headers=_auth(cluster))
    assert status == 200
    assert system["PowerState"] == "On" and system["Status"]["Health"] == "OK"
    reset = system["Actions"]["#ComputerSystem.Reset"]
    assert reset["target"] == "/redfish/v1/Systems/gpu-node-000/Actions/ComputerSystem.Reset"
    assert {"ForceRestart", "GracefulRestart"} <= set(reset["ResetType@Redfish.AllowableValues"])
    assert "LastResetTime" not in system


async def test_reset_reboots_the_node(cluster: SimulatedCluster, http: aiohttp.ClientSession) -> None:
    boot = cluster.node_state("gpu-node-001")["bootId"]
    target = "/redfish/v1/Systems/gpu-node-001/Actions/ComputerSystem.Reset"
    assert (await _call(http, "POST", target, json={"ResetType": "ForceRestart"}))[0] == 401
    assert cluster.node_state("gpu-node-001")["rebootRequests"] == 0
    status, _, _ = await _call(http, "POST", target, json={"ResetType": "ForceRestart"}, headers=_auth(cluster))
    assert status == 204
    assert cluster.node_state("gpu-node-001")["rebootRequests"] == 1
    _, system, _ = await _call(http, "GET", "/redfish/v1/Systems/gpu-node-001", headers=_auth(cluster))
    assert system["Status"]["State"] == "Starting"
    assert system["LastResetTime"] == cluster.node_state("gpu-node-001")["lastRebootRequestAt"]
    deadline = asyncio.get_running_loop().time() + 5
    while not cluster.node_state("gpu-node-001")["ready"] or cluster.node_state("gpu-node-001")["bootId"] == boot:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    _, system, _ = await _call(http, "GET", "/redfish/v1/Systems/gpu-node-001", headers=_auth(cluster))
    assert system["Status"]["State"] == "Enabled"


async def test_reset_type_must_be_allowed(cluster: SimulatedCluster, http: aiohttp.ClientSession) -> None:
    target = "/redfish/v1/Systems/gpu-node-000/Actions/ComputerSystem.Reset"
    status, error, _ = await _call(http, "POST", target, json={"ResetType": "Explode"}, headers=_auth(cluster))
    assert status == 400 and error["error"]["code"] == "Base.1.16.ActionParameterValueNotInList"
    status, error, _ = await _call(http, "POST", target, json={}, headers=_auth(cluster))
    assert status == 400 and error["error"]["code"] == "Base.1.16.ActionParameterMissing"
    assert cluster.node_state("gpu-node-000")["rebootRequests"] == 0


async def test_unknown_system_is_404(cluster: SimulatedCluster, http: aiohttp.ClientSession) -> None:
    for method, path in (
        ("GET", "/redfish/v1/Systems/nope"),
        ("POST", "/redfish/v1/Systems/nope/Actions/ComputerSystem.Reset"),
    ):
        status, error, _ = await _call(http, method, path, json={"ResetType": "ForceRestart"}, headers=_auth(cluster))
        assert status == 404
        assert error["error"]["code"] == "Base.1.16.ResourceMissingAtURI"
        assert error["error"]["@Message.ExtendedInfo"][0]["MessageId"] == "Base.1.16.ResourceMissingAtURI"


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("throttle", 503, "Base.1.16.ServiceTemporarilyUnavailable"),
        ("not_found", 404, "Base.1.16.ResourceMissingAtURI"),
        ("denied", 403, "Base.1.16.InsufficientPrivilege"),
    ],
)
async def test_injected_faults_answer_in_redfish_terms(
    cluster: SimulatedCluster, http: aiohttp.ClientSession, fault: str, status: int, code: str
) -> None:
    # Through the control API, as the demo and other processes inject them.
    async with (
        aiohttp.ClientSession() as control,
        control.post(
            f"{cluster.control_url}/sim/v1/clouds/redfish/faults", json={"fault": fault, "count": 1}
        ) as response,
    ):
        assert response.status == 201
    target = "/redfish/v1/Systems/gpu-node-000/Actions/ComputerSystem.Reset"
    got, error, headers = await _call(http, "POST", target, json={"ResetType": "ForceRestart"}, headers=_auth(cluster))
    assert got == status and error["error"]["code"] == code
    if fault == "throttle":
        assert headers["Retry-After"] == "1"
    assert cluster.node_state("gpu-node-000")["rebootRequests"] == 0
    # One request took the fault; the next is served.
    again, _, _ = await _call(http, "POST", target, json={"ResetType": "ForceRestart"}, headers=_auth(cluster))
    assert again == 204


async def test_sushy_with_its_default_session_authentication(cluster: SimulatedCluster) -> None:
    """sushy's default client opens a Redfish session (X-Auth-Token) and closes it again."""
    endpoint = _endpoint(cluster)

    def use_sushy() -> tuple[str, str, int]:
        client = sushy.Sushy(
            cluster.cloud_url, username=USERNAME, password=endpoint.password, verify=str(cluster.ca_file)
        )
        sessions = len(endpoint._sessions)
        system = client.get_system("/redfish/v1/Systems/gpu-node-000")
        system.reset_system(sushy.RESET_TYPE_GRACEFUL_RESTART)
        power = system.power_state.value
        service = client.get_session_service().path
        client._auth.close()
        return power, service, sessions

    power, service, sessions = await asyncio.to_thread(use_sushy)
    assert power == "On" and service == "/redfish/v1/SessionService" and sessions == 1
    assert endpoint._sessions == {}
    assert [(r.node, r.reset_type) for r in endpoint.resets] == [("gpu-node-000", "GracefulRestart")]
    assert cluster.node_state("gpu-node-000")["rebootRequests"] == 1
