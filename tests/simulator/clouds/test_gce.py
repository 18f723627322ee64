"""The simulator's Compute Engine endpoint over plain HTTPS, without Google's SDK.

The tokens here are built by hand from the service-account key the simulator writes (RS256 JWTs,
as google-auth builds them), so these tests check the protocol itself; the provider's tests check
that the real SDK speaks it.
"""

from __future__ import annotations

import base64
import json
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from gpuheal_sim.simulator import SimulatedCluster
from tests.cloud_fleet import cloud_fleet, trusting_session

ZONE_PATH = "/compute/v1/projects/gpuheal-sim/zones/us-central1-a"
LINK = "https://www.googleapis.com/compute/v1/projects/gpuheal-sim/zones/us-central1-a"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[SimulatedCluster]:
    async with cloud_fleet("gcp", tmp_path / "fleet", nodes=3) as running:
        yield running


@pytest.fixture
async def http(cluster: SimulatedCluster) -> AsyncIterator[aiohttp.ClientSession]:
    async with trusting_session(cluster) as session:
        yield session


def key_file(cluster: SimulatedCluster) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(Path(cluster.client_environment()["GOOGLE_APPLICATION_CREDENTIALS"]).read_text())
    return info


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(info: dict[str, Any], key: rsa.RSAPrivateKey | None = None, *, lifetime: int = 3600, **claims: Any) -> str:
    """An RS256 JWT signed by the service account's key (or by `key`)."""
    signer = key or serialization.load_pem_private_key(info["private_key"].encode(), password=None)
    assert isinstance(signer, rsa.RSAPrivateKey)
    now = int(time.time())
    header = {"alg": "RS256", "typ": "JWT", "kid": info["private_key_id"]}
    payload = {"iss": info["client_email"], "sub": info["client_email"], "iat": now, "exp": now + lifetime, **claims}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = signer.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64(signature)}"


def bearer(cluster: SimulatedCluster) -> dict[str, str]:
    """What google-auth sends for a service account with always_use_jwt_access: a self-signed JWT."""
    return {"Authorization": "Bearer " + jwt(key_file(cluster), aud="https://compute.googleapis.com/")}


async def call(
    http: aiohttp.ClientSession, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
) -> tuple[int, Any]:
    async with http.request(method, path, headers=headers, **kwargs) as response:
        return response.status, await response.json()


def google_error(body: Any) -> tuple[int, str, str, str]:
    error = body["error"]
    return error["code"], error.get("status", ""), error["errors"][0]["reason"], error["message"]


async def test_nodes_carry_gce_provider_ids_and_adc_points_at_the_simulator(cluster: SimulatedCluster) -> None:
    for index, node in enumerate(cluster.node_names()):
        obj = cluster.get_object("nodes", node)
        assert obj is not None
        assert obj["spec"]["providerID"] == f"gce://gpuheal-sim/us-central1-a/gpu-node-{index:03d}"
    environment = cluster.client_environment()
    assert environment["GPUHEAL_GCE_ENDPOINT"] == cluster.cloud_url
    assert environment["REQUESTS_CA_BUNDLE"] == str(cluster.ca_file)
    path = Path(environment["GOOGLE_APPLICATION_CREDENTIALS"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    info = key_file(cluster)
    assert info["type"] == "service_account"
    assert info["token_uri"] == cluster.cloud_url + "/gcp/token"
    assert info["client_email"].endswith("@gpuheal-sim.iam.gserviceaccount.com")


async def test_the_api_answers_only_requests_with_valid_credentials(
    cluster: SimulatedCluster, http: aiohttp.ClientSession
) -> None:
    info = key_file(cluster)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rejected = [
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Bearer " + jwt(info, stranger, aud="https://compute.googleapis.com/")},
        {"Authorization": "Bearer " + jwt(info, lifetime=-600, aud="https://compute.googleapis.com/")},
        {"Authorization": "Bearer " + jwt(info, aud="https://storage.googleapis.com/")},
        {"Authorization": "Basic " + jwt(info, aud="https://compute.googleapis.com/")},
    ]
    for headers in rejected:
        status, body = await call(http, "GET", f"{ZONE_PATH}/instances/gpu-node-000", headers)
        assert status == 401, headers
        assert google_error(body)[:3] == (401, "UNAUTHENTICATED", "authError")

    accepted = [
        bearer(cluster),
        # A self-signed JWT with scopes instead of an audience, as google-auth makes when given scopes.
        {"Authorization": "Bearer " + jwt(info, scope="https://www.googleapis.com/auth/cloud-platform")},
    ]
    for headers in accepted:
        status, body = await call(http, "GET", f"{ZONE_PATH}/instances/gpu-node-000", headers)
        assert status == 200
        assert body["kind"] == "compute#instance"
        assert body["name"] == "gpu-node-000"
        assert body["status"] == "RUNNING"
        assert body["selfLink"] == f"{LINK}/instances/gpu-node-000"


async def test_the_token_endpoint_answers_the_jwt_bearer_grant(
    cluster: SimulatedCluster, http: aiohttp.ClientSession
) -> None:
    info = key_file(cluster)
    grant = "urn:ietf:params:oauth:grant-type:jwt-bearer"
    assertion = jwt(info, aud="https://oauth2.googleapis.com/token", scope="https://www.googleapis.com/auth/compute")
    status, body = await call(http, "POST", "/gcp/token", data={"grant_type": grant, "assertion": assertion})
    assert status == 200
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] > 0
    status, _ = await call(
        http, "GET", f"{ZONE_PATH}/instances/gpu-node-001", {"Authorization": f"Bearer {body['access_token']}"}
    )
    assert status == 200

    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt(info, stranger, aud="https://oauth2.googleapis.com/token")
    status, body = await call(http, "POST", "/gcp/token", data={"grant_type": grant, "assertion": forged})
    assert (status, body["error"]) == (400, "invalid_grant")
    status, body = await call(http, "POST", "/gcp/token", data={"grant_type": "password", "assertion": assertion})
    assert (status, body["error"]) == (400, "unsupported_grant_type")


async def test_a_reset_reboots_the_node_and_its_operation_runs_until_polled_to_done(
    cluster: SimulatedCluster, http: aiohttp.ClientSession
) -> None:
    status, operation = await call(http, "POST", f"{ZONE_PATH}/instances/gpu-node-001/reset", bearer(cluster))
    assert status == 200
    assert operation["kind"] == "compute#operation"
    assert operation["operationType"] == "reset"
    assert operation["status"] == "RUNNING"
    assert operation["targetLink"] == f"{LINK}/instances/gpu-node-001"
    assert operation["selfLink"] == f"{LINK}/operations/{operation['name']}"
    assert operation["zone"] == LINK
    assert operation["name"].startswith("operation-")
    assert int(operation["id"]) > 0
    assert "T" in operation["insertTime"]
    assert "error" not in operation
    state = cluster.node_state("gpu-node-001")
    assert state["rebootRequests"] == 1
    assert state["rebooting"]
    assert cluster.node_state("gpu-node-000")["rebootRequests"] == 0

    path = f"{ZONE_PATH}/operations/{operation['name']}"
    seen = [(await call(http, "GET", path, bearer(cluster)))[1]["status"] for _ in range(2)]
    assert seen == ["RUNNING", "RUNNING"]
    status, done = await call(http, "POST", path + "/wait", bearer(cluster))
    assert status == 200
    assert done["status"] == "DONE"
    assert done["progress"] == 100
    assert "endTime" in done
    assert "error" not in done
    status, missing = await call(http, "GET", f"{ZONE_PATH}/operations/operation-0-missing", bearer(cluster))
    assert (status, google_error(missing)[2]) == (404, "notFound")


async def test_a_repeated_request_id_returns_the_first_operation_and_reboots_once(
    cluster: SimulatedCluster, http: aiohttp.ClientSession
) -> None:
    path = f"{ZONE_PATH}/instances/gpu-node-002/reset"
    _, first = await call(
        http, "POST", path, bearer(cluster), params={"requestId": "5f0c7c1e-1a2b-4c3d-8e9f-0a1b2c3d4e5f"}
    )
    _, again = await call(
        http, "POST", path, bearer(cluster), params={"requestId": "5f0c7c1e-1a2b-4c3d-8e9f-0a1b2c3d4e5f"}
    )
    assert again["name"] == first["name"]
    assert cluster.node_state("gpu-node-002")["rebootRequests"] == 1


async def test_the_operations_list_applies_the_filter_and_pages(
    cluster: SimulatedCluster, http: aiohttp.ClientSession
) -> None:
    for node in ("gpu-node-000", "gpu-node-001", "gpu-node-000"):
        await call(http, "POST", f"{ZONE_PATH}/instances/{node}/reset", bearer(cluster))
    path = f"{ZONE_PATH}/operations"

    async def names(filter_: str, **params: str) -> list[str]:
        status, body = await call(http, "GET", path, bearer(cluster), params={"filter": filter_, **params})
        assert status == 200, body
        assert body["kind"] == "compute#operationList"
        return [item["targetLink"].rsplit("/", 1)[1] for item in body.get("items", [])]

    assert await names("") == ["gpu-node-000", "gpu-node-001", "gpu-node-000"]
    link = f"{LINK}/instances/gpu-node-000"
    assert await names(f'(operationType = "reset") AND (targetLink = "{link}")') == ["gpu-node-000"] * 2
    assert await names(f'targetLink != "{link}"') == ["gpu-node-001"]
    assert await names('operationType = "stop"') == []

    status, page = await call(http, "GET", path, bearer(cluster), params={"maxResults": "2"})
    assert len(page["items"]) == 2
    status, rest = await call(
        http, "GET", path, bearer(cluster), params={"maxResults": "2", "pageToken": page["nextPageToken"]}
    )
    assert len(rest["items"]) == 1
    assert "nextPageToken" not in rest

    for bad in ('insertTime > "2024-01-01"', 'operationType = "reset" OR name = "x"', "nonsense"):
        status, body = await call(http, "GET", path, bearer(cluster), params={"filter": bad})
        assert status == 400, bad
        assert google_error(body)[2] == "invalid"


async def test_faults_are_answered_in_googles_words(cluster: SimulatedCluster, http: aiohttp.ClientSession) -> None:
    reset = f"{ZONE_PATH}/instances/gpu-node-000/reset"
    cluster.inject_cloud_fault("gcp", "throttle")
    status, body = await call(http, "POST", reset, bearer(cluster))
    assert (status, *google_error(body)[:3]) == (429, 429, "RESOURCE_EXHAUSTED", "rateLimitExceeded")

    cluster.inject_cloud_fault("gcp", "not_found")
    status, body = await call(http, "POST", reset, bearer(cluster))
    assert (status, google_error(body)[2]) == (404, "notFound")
    assert "projects/gpuheal-sim/zones/us-central1-a/instances/gpu-node-000" in google_error(body)[3]

    cluster.inject_cloud_fault("gcp", "denied", 2)
    status, body = await call(http, "POST", reset, bearer(cluster))
    assert (status, *google_error(body)[1:3]) == (403, "PERMISSION_DENIED", "forbidden")
    assert "compute.instances.reset" in google_error(body)[3]
    status, body = await call(http, "GET", f"{ZONE_PATH}/instances/gpu-node-000", bearer(cluster))
    assert "compute.instances.get" in google_error(body)[3]

    assert cluster.node_state("gpu-node-000")["rebootRequests"] == 0
    for path in (
        f"{ZONE_PATH}/instances/gpu-node-404/reset",
        "/compute/v1/projects/another-project/zones/us-central1-a/instances/gpu-node-000/reset",
        "/compute/v1/projects/gpuheal-sim/zones/europe-west4-a/instances/gpu-node-000/reset",
    ):
        status, body = await call(http, "POST", path, bearer(cluster))
        assert (status, google_error(body)[2]) == (404, "notFound"), path
    assert cluster.node_state("gpu-node-000")["rebootRequests"] == 0


async def test_an_injected_operation_failure_ends_done_with_an_error_and_reboots_nothing(
    cluster: SimulatedCluster, http: aiohttp.ClientSession
) -> None:
    status, _ = await call(
        http, "POST", "/gcp/sim/v1/operation-failures", json={"httpStatus": 400, "code": "RESOURCE_NOT_READY"}
    )
    assert status == 201
    _, operation = await call(http, "POST", f"{ZONE_PATH}/instances/gpu-node-000/reset", bearer(cluster))
    path = f"{ZONE_PATH}/operations/{operation['name']}/wait"
    while operation["status"] != "DONE":
        _, operation = await call(http, "POST", path, bearer(cluster))
    assert operation["httpErrorStatusCode"] == 400
    assert operation["error"]["errors"][0]["code"] == "RESOURCE_NOT_READY"
    assert cluster.node_state("gpu-node-000")["rebootRequests"] == 0

    _, listed = await call(http, "GET", "/gcp/sim/v1/operations")
    assert [(item["name"], item["polls"]) for item in listed["operations"]] == [(operation["name"], 3)]
    status, _ = await call(http, "POST", "/gcp/sim/v1/operation-failures", json={"count": 0})
    assert status == 400
