"""The Redfish provider through sushy: against sushy-tools' emulator, and against the simulator's BMC.

The emulator (`sushy-emulator --fake`, a separate process over HTTPS with basic authentication from
an htpasswd file) is an independent Redfish implementation: it proves the provider speaks Redfish as
others serve it. The simulator's Redfish service proves the whole path: a reset there reboots the
simulated node, and its injected faults drive the error handling.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sysconfig
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import bcrypt
import pytest
import requests
from sushy.resources.system.system import System

from gpuheal.activities.providers import ProviderError, RebootTarget
from gpuheal.activities.providers.redfish import (
    SYSTEM_ANNOTATION,
    RedfishProvider,
    RedfishSettings,
    parse_system_url,
)
from gpuheal_sim.simulator import FleetConfig, SimulatedCluster, tls
from gpuheal_sim.simulator.clouds.redfish import DEFAULT_RESET_TYPES, RedfishEndpoint
from tests.cloud_fleet import cloud_fleet


def _fast(settings: RedfishSettings) -> RedfishSettings:
    """Short sushy retry delays keep throttling tests quick; the retry counts stay the provider's defaults."""
    return replace(
        settings,
        retry_delay=timedelta(seconds=0.05),
        connect_timeout=timedelta(seconds=5),
        read_timeout=timedelta(seconds=10),
    )


# --- sushy-tools' emulator --------------------------------------------------------------------------


@dataclass(frozen=True)
class Emulator:
    url: str
    # ComputerSystem URLs of the emulator's fake systems, in the order of the collection.
    systems: list[str]
    credentials_dir: Path
    ca_file: Path
    # Its access log: one line per request, with the status it answered.
    log: Path

    def settings(self, **overrides: Any) -> RedfishSettings:
        return replace(
            _fast(RedfishSettings(credentials_dir=self.credentials_dir, ca_bundle=self.ca_file)), **overrides
        )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _write_credentials(directory: Path, username: str, password: str, prefix: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    # As `kubectl create secret --from-file` keeps them: with the file's trailing newline.
    (directory / f"{prefix}username").write_text(username + "\n")
    (directory / f"{prefix}password").write_text(password + "\n")
    return directory


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """sushy-emulator's fake driver on a free port, over HTTPS, with basic authentication."""
    root = tmp_path_factory.mktemp("sushy-emulator")
    certificates = tls.issue(root / "tls")
    username, password = "bmc-admin", "correct horse battery staple"
    htpasswd = root / "htpasswd"
    htpasswd.write_text(f"{username}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()}\n")
    systems = [
        {"uuid": f"{index}1111111-1111-4111-8111-111111111111", "name": name, "power_state": "On", "nics": []}
        for index, name in enumerate(("force", "graceful", "steady"))
    ]
    config = root / "emulator.conf"
    config.write_text(
        f"SUSHY_EMULATOR_AUTH_FILE = {str(htpasswd)!r}\n"
        f"SUSHY_EMULATOR_STATE_DIR = {str(root / 'state')!r}\n"
        f"SUSHY_EMULATOR_FAKE_SYSTEMS = {systems!r}\n"
    )
    port = _free_port()
    log = (root / "emulator.log").open("w")
    process = subprocess.Popen(
        [
            str(Path(sysconfig.get_path("scripts")) / "sushy-emulator"),
            "--fake",
            "--config",
            str(config),
            "--interface",
            "127.0.0.1",
            "--port",
            str(port),
            "--ssl-certificate",
            str(certificates.cert_file),
            "--ssl-key",
            str(certificates.key_file),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"sushy-emulator exited with {process.returncode}: {(root / 'emulator.log').read_text()}")
            try:
                listing = requests.get(
                    f"{url}/redfish/v1/Systems", auth=(username, password), verify=str(certificates.ca_file), timeout=2
                )
                if listing.status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"sushy-emulator did not answer in 30 s: {(root / 'emulator.log').read_text()}")
            time.sleep(0.1)
        members = [url + member["@odata.id"] for member in listing.json()["Members"]]
        yield Emulator(
            url=url,
            systems=sorted(members),
            credentials_dir=_write_credentials(root / "credentials", username, password),
            ca_file=certificates.ca_file,
            log=root / "emulator.log",
        )
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


async def reset_answered(emulator: Emulator, system_url: str) -> None:
    """The emulator took the system's reset (its access log shows the POST answered 204).

    Its power state says nothing reliable: the fake driver powers a restarting system off and back on
    after a random 0 to 11 s (it rounds the time down), so "Off" may be over before anyone looks.
    """
    wanted = f"POST {urlsplit(system_url).path}/Actions/ComputerSystem.Reset HTTP/1.1"
    for _ in range(50):  # the line is written just after the answer goes out
        if any(wanted in line and line.rstrip().endswith("204 -") for line in emulator.log.read_text().splitlines()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {wanted!r} answered 204 in the emulator's log")


def _target(node: str, system_url: str, *, graceful: bool = False) -> RebootTarget:
    return RebootTarget(node=node, provider_id="", annotations={SYSTEM_ANNOTATION: system_url}, graceful=graceful)


async def test_emulator_force_restart_is_accepted_and_reaches_the_system(emulator: Emulator) -> None:
    provider = RedfishProvider(emulator.settings())
    target = _target("bm-0", emulator.systems[0])
    line = await provider.reboot(target)
    assert line == f"Redfish system {emulator.systems[0]} accepted ComputerSystem.Reset ForceRestart"
    await reset_answered(emulator, emulator.systems[0])


async def test_emulator_graceful_restart_when_asked(emulator: Emulator) -> None:
    provider = RedfishProvider(emulator.settings())
    target = _target("bm-1", emulator.systems[1], graceful=True)
    line = await provider.reboot(target)
    assert line == f"Redfish system {emulator.systems[1]} accepted ComputerSystem.Reset GracefulRestart"
    await reset_answered(emulator, emulator.systems[1])


async def test_emulator_describe(emulator: Emulator) -> None:
    provider = RedfishProvider(emulator.settings())
    summary = await provider.describe(_target("bm-2", emulator.systems[2]))
    assert summary == f"Redfish system {emulator.systems[2]}: PowerState On, Status Health OK"


async def test_emulator_unknown_system_is_not_retried(emulator: Emulator) -> None:
    provider = RedfishProvider(emulator.settings())
    missing = f"{emulator.url}/redfish/v1/Systems/no-such-system"
    with pytest.raises(ProviderError) as caught:
        await provider.reboot(_target("bm-9", missing))
    assert caught.value.retryable is False
    assert str(caught.value).startswith(f"Redfish system {missing} not found")
    assert f"check node bm-9's {SYSTEM_ANNOTATION} annotation" in str(caught.value)


async def test_emulator_wrong_credentials_name_the_secret(emulator: Emulator, tmp_path: Path) -> None:
    wrong = _write_credentials(tmp_path / "wrong", "bmc-admin", "not the password")
    provider = RedfishProvider(emulator.settings(credentials_dir=wrong))
    with pytest.raises(ProviderError) as caught:
        await provider.reboot(_target("bm-2", emulator.systems[2]))
    assert caught.value.retryable is False
    assert "rejected the credentials" in str(caught.value) and str(wrong / "username") in str(caught.value)


async def test_emulator_per_host_credentials_override_the_shared_ones(emulator: Emulator, tmp_path: Path) -> None:
    directory = _write_credentials(tmp_path / "mixed", "bmc-admin", "the shared, wrong password")
    good_password = (emulator.credentials_dir / "password").read_text().rstrip("\n")
    _write_credentials(directory, "bmc-admin", good_password, prefix="127.0.0.1.")
    provider = RedfishProvider(emulator.settings(credentials_dir=directory))
    assert "Status Health OK" in await provider.describe(_target("bm-2", emulator.systems[2]))


async def test_emulator_certificate_is_verified(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    target = _target("bm-2", emulator.systems[2])
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    untrusted = RedfishProvider(emulator.settings(ca_bundle=None))
    with pytest.raises(ProviderError) as caught:
        await untrusted.describe(target)
    assert caught.value.retryable is False
    assert "TLS verification" in str(caught.value) and "GPUHEAL_REDFISH_CA_BUNDLE" in str(caught.value)
    # Without GPUHEAL_REDFISH_CA_BUNDLE, requests' own REQUESTS_CA_BUNDLE decides.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(emulator.ca_file))
    assert "PowerState On" in await RedfishProvider(emulator.settings(ca_bundle=None)).describe(target)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    # Only the explicit, clearly named switch turns verification off.
    insecure = RedfishProvider(emulator.settings(ca_bundle=None, insecure=True))
    assert "PowerState On" in await insecure.describe(target)


async def test_emulator_keeps_no_record_of_requests(emulator: Emulator) -> None:
    provider = RedfishProvider(emulator.settings())
    assert await provider.requested_since(_target("bm-2", emulator.systems[2]), datetime.now(UTC)) is None


async def test_unreachable_bmc_is_retryable(tmp_path: Path) -> None:
    credentials = _write_credentials(tmp_path / "credentials", "u", "p")
    # One attempt: sushy would otherwise sleep between reconnection attempts.
    provider = RedfishProvider(_fast(RedfishSettings(credentials_dir=credentials, retries=1)))
    nobody = f"https://127.0.0.1:{_free_port()}/redfish/v1/Systems/1"
    with pytest.raises(ProviderError) as caught:
        await provider.reboot(_target("bm-3", nobody))
    assert caught.value.retryable is True
    assert "BMC unreachable" in str(caught.value)
    assert caught.value.refused is True  # never connected: nothing was sent


# --- the simulator's Redfish service ----------------------------------------------------------------


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[SimulatedCluster]:
    async with cloud_fleet("redfish", tmp_path / "sim") as running:
        yield running


def _endpoint(cluster: SimulatedCluster) -> RedfishEndpoint:
    return next(cloud for cloud in cluster._clouds if isinstance(cloud, RedfishEndpoint))


def _settings(cluster: SimulatedCluster, **overrides: Any) -> RedfishSettings:
    return replace(_fast(RedfishSettings.from_env(cluster.client_environment())), **overrides)


def _node_target(cluster: SimulatedCluster, node: str, *, graceful: bool = False) -> RebootTarget:
    """The node as the repair activity sees it: providerID and annotations from the API object."""
    obj = cluster.get_object("nodes", node)
    assert obj is not None
    return RebootTarget(
        node=node,
        provider_id=obj["spec"]["providerID"],
        annotations=obj["metadata"]["annotations"],
        graceful=graceful,
    )


async def _rebooted(cluster: SimulatedCluster, node: str, old_boot: str, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        state = cluster.node_state(node)
        if state["ready"] and not state["rebooting"] and state["bootId"] != old_boot:
            return
        assert asyncio.get_running_loop().time() < deadline, f"{node} did not come back: {state}"
        await asyncio.sleep(0.02)


async def test_bare_metal_nodes_carry_the_annotation_and_no_provider_id(cluster: SimulatedCluster) -> None:
    target = _node_target(cluster, "gpu-node-001")
    assert target.provider_id == ""
    assert target.annotations[SYSTEM_ANNOTATION] == f"{cluster.cloud_url}/redfish/v1/Systems/gpu-node-001"


async def test_reboot_restarts_the_node_once(cluster: SimulatedCluster) -> None:
    provider = RedfishProvider(_settings(cluster))
    target = _node_target(cluster, "gpu-node-000")
    before = cluster.node_state("gpu-node-000")
    line = await provider.reboot(target)
    assert line == f"Redfish system {target.annotations[SYSTEM_ANNOTATION]} accepted ComputerSystem.Reset ForceRestart"
    assert cluster.node_state("gpu-node-000")["rebootRequests"] == 1
    assert cluster.node_state("gpu-node-001")["rebootRequests"] == 0
    await _rebooted(cluster, "gpu-node-000", before["bootId"])
    assert cluster.node_state("gpu-node-000")["rebootRequests"] == 1
    assert [(r.node, r.reset_type) for r in _endpoint(cluster).resets] == [("gpu-node-000", "ForceRestart")]


async def test_graceful_restart_when_asked(cluster: SimulatedCluster) -> None:
    provider = RedfishProvider(_settings(cluster))
    line = await provider.reboot(_node_target(cluster, "gpu-node-001", graceful=True))
    assert line.endswith("accepted ComputerSystem.Reset GracefulRestart")
    assert [(r.node, r.reset_type) for r in _endpoint(cluster).resets] == [("gpu-node-001", "GracefulRestart")]
    assert cluster.node_state("gpu-node-001")["rebootRequests"] == 1


async def test_graceful_falls_back_to_force_restart_and_says_so(cluster: SimulatedCluster) -> None:
    endpoint = _endpoint(cluster)
    endpoint.reset_types = ("On", "ForceOff", "ForceRestart")
    provider = RedfishProvider(_settings(cluster))
    line = await provider.reboot(_node_target(cluster, "gpu-node-001", graceful=True))
    assert "accepted ComputerSystem.Reset ForceRestart" in line
    assert "GracefulRestart was asked for but the system allows only ForceOff, ForceRestart, On" in line
    assert [r.reset_type for r in endpoint.resets] == ["ForceRestart"]


async def test_a_reset_type_the_system_does_not_allow_is_refused_before_calling(cluster: SimulatedCluster) -> None:
    endpoint = _endpoint(cluster)
    endpoint.reset_types = ("On", "ForceOff", "GracefulShutdown")
    provider = RedfishProvider(_settings(cluster))
    with pytest.raises(ProviderError) as caught:
        await provider.reboot(_node_target(cluster, "gpu-node-000"))
    assert caught.value.retryable is False and caught.value.refused is True  # never posted
    assert "does not allow ComputerSystem.Reset ForceRestart" in str(caught.value)
    assert "ForceOff, GracefulShutdown, On" in str(caught.value)
    assert endpoint.resets == [] and cluster.node_state("gpu-node-000")["rebootRequests"] == 0
    endpoint.reset_types = DEFAULT_RESET_TYPES


async def test_throttling_is_retryable_and_a_later_call_succeeds(cluster: SimulatedCluster) -> None:
    provider = RedfishProvider(_settings(cluster))
    target = _node_target(cluster, "gpu-node-000")
    # sushy does not retry (settings.retries is 0): a 503 fails the call, for Temporal to retry.
    cluster.inject_cloud_fault("redfish", "throttle", 1)
    with pytest.raises(ProviderError) as caught:
        await provider.reboot(target)
    assert caught.value.retryable is True
    assert "HTTP 503 Base.1.16.ServiceTemporarilyUnavailable" in str(caught.value)
    assert caught.value.refused is True  # the reset was never posted
    assert cluster.reboot_requests("gpu-node-000") == 0
    assert "accepted ComputerSystem.Reset ForceRestart" in await provider.reboot(target)
    assert cluster.node_state("gpu-node-000")["rebootRequests"] == 1


@pytest.mark.parametrize(
    ("fault", "status"), [("throttle", "HTTP 503"), ("denied", "HTTP 403"), ("not_found", "HTTP 404")]
)
async def test_a_reset_post_the_bmc_refuses_is_refused(
    cluster: SimulatedCluster, monkeypatch: pytest.MonkeyPatch, fault: str, status: str
) -> None:
    """The faults hit the reset's POST itself, past the GETs before it."""
    provider = RedfishProvider(_settings(cluster))
    post = System.reset_system

    def refused_post(system: System, value: Any) -> None:
        cluster.inject_cloud_fault("redfish", fault, 3)  # more than sushy would ever post
        post(system, value)

    monkeypatch.setattr(System, "reset_system", refused_post)
    with pytest.raises(ProviderError) as caught:
        await provider.reboot(_node_target(cluster, "gpu-node-000"))
    assert status in str(caught.value)
    assert caught.value.refused is True
    assert cluster.reboot_requests("gpu-node-000") == 0
    assert _endpoint(cluster).resets == []
    # Exactly one request took a fault, and it was the POST: the GETs had been answered before.
    assert cluster.simulation.cloud_faults.pending("redfish") == 2
    cluster.simulation.cloud_faults.clear()


async def test_a_reset_whose_answer_times_out_is_not_refused(tmp_path: Path) -> None:
    """The BMC has the reset (it answers late): asking again would reset the server twice."""
    config = FleetConfig(nodes=1, cloud="redfish", workloads=False, reboot_seconds=0.2, reboot_reply_seconds=1.0)
    async with SimulatedCluster(config, state_dir=tmp_path / "slow") as slow:
        # One try: sushy posts again after a read timeout (its retries), which would reset twice.
        provider = RedfishProvider(_settings(slow, retries=1, read_timeout=timedelta(seconds=0.3)))
        with pytest.raises(ProviderError) as caught:
            await provider.reboot(_node_target(slow, "gpu-node-000"))
        assert caught.value.retryable is True and "Read timed out" in str(caught.value)
        assert caught.value.refused is False
        assert slow.reboot_requests("gpu-node-000") == 1


async def test_denied_is_not_retried_and_names_the_privilege(cluster: SimulatedCluster) -> None:
    settings = _settings(cluster)
    provider = RedfishProvider(settings)
    cluster.inject_cloud_fault("redfish", "denied")
    with pytest.raises(ProviderError) as caught:
        await provider.reboot(_node_target(cluster, "gpu-node-000"))
    assert caught.value.retryable is False and caught.value.refused is True
    message = str(caught.value)
    assert "HTTP 403 Base.1.16.InsufficientPrivilege" in message and "ConfigureComponents" in message
    assert str(settings.credentials_dir) in message
    assert cluster.node_state("gpu-node-000")["rebootRequests"] == 0


async def test_not_found_is_not_retried_and_points_at_the_annotation(cluster: SimulatedCluster) -> None:
    provider = RedfishProvider(_settings(cluster))
    cluster.inject_cloud_fault("redfish", "not_found")
    target = _node_target(cluster, "gpu-node-001")
    with pytest.raises(ProviderError) as caught:
        await provider.reboot(target)
    assert caught.value.retryable is False and caught.value.refused is True
    assert str(caught.value) == (
        f"Redfish system {target.annotations[SYSTEM_ANNOTATION]} not found (HTTP 404 "
        "Base.1.16.ResourceMissingAtURI); check node gpu-node-001's gpuheal.io/redfish-system annotation "
        "or its GPUHEAL_REDFISH_MAP entry"
    )
    # A system the BMC really does not have is the same error.
    wrong = _target("gpu-node-001", f"{cluster.cloud_url}/redfish/v1/Systems/gpu-node-999")
    with pytest.raises(ProviderError, match="gpu-node-999 not found") as again:
        await provider.reboot(wrong)
    assert again.value.retryable is False
    assert cluster.node_state("gpu-node-001")["rebootRequests"] == 0


async def test_wrong_credentials_are_refused_and_a_rotated_secret_is_picked_up(
    cluster: SimulatedCluster, tmp_path: Path
) -> None:
    settings = _settings(cluster)
    assert settings.credentials_dir is not None
    secret = tmp_path / "secret"
    shutil.copytree(settings.credentials_dir, secret)
    good = (secret / "password").read_text()
    (secret / "password").write_text("stale password")
    provider = RedfishProvider(replace(settings, credentials_dir=secret))
    target = _node_target(cluster, "gpu-node-000")
    with pytest.raises(ProviderError) as caught:
        await provider.reboot(target)
    assert caught.value.retryable is False
    assert f"rejected the credentials from {secret / 'username'} and {secret / 'password'}" in str(caught.value)
    assert "HTTP 401 Base.1.16.NoValidSession" in str(caught.value)
    # The Secret is updated in place, as the kubelet does: the next call uses it, no restart needed.
    (secret / "password").write_text(good)
    assert "accepted ComputerSystem.Reset" in await provider.reboot(target)


async def test_missing_credentials_give_a_clear_error(cluster: SimulatedCluster, tmp_path: Path) -> None:
    target = _node_target(cluster, "gpu-node-000")
    absent = tmp_path / "not-mounted"
    with pytest.raises(ProviderError) as caught:
        await RedfishProvider(_settings(cluster, credentials_dir=absent)).reboot(target)
    assert caught.value.retryable is False and caught.value.refused is True
    assert f"the Secret mounted at {absent} (GPUHEAL_REDFISH_CREDENTIALS_DIR) has neither" in str(caught.value)
    with pytest.raises(ProviderError, match="GPUHEAL_REDFISH_CREDENTIALS_DIR is not set") as unset:
        await RedfishProvider(_settings(cluster, credentials_dir=None)).reboot(target)
    assert unset.value.retryable is False
    assert cluster.node_state("gpu-node-000")["rebootRequests"] == 0


async def test_annotation_wins_over_the_map_and_the_map_serves_unannotated_nodes(
    cluster: SimulatedCluster, tmp_path: Path
) -> None:
    system = f"{cluster.cloud_url}/redfish/v1/Systems"
    mapping = tmp_path / "redfish-map.json"
    # The map points gpu-node-000 at the wrong system; its annotation must win.
    mapping.write_text(json.dumps({"gpu-node-000": f"{system}/gpu-node-001", "gpu-node-001": f"{system}/gpu-node-001"}))
    provider = RedfishProvider(_settings(cluster, map_file=mapping))
    await provider.reboot(_node_target(cluster, "gpu-node-000"))
    assert cluster.node_state("gpu-node-000")["rebootRequests"] == 1
    assert cluster.node_state("gpu-node-001")["rebootRequests"] == 0
    unannotated = RebootTarget(node="gpu-node-001", provider_id="")
    assert provider.owns(unannotated)
    await provider.reboot(unannotated)
    assert cluster.node_state("gpu-node-001")["rebootRequests"] == 1


async def test_map_changes_are_picked_up(tmp_path: Path) -> None:
    mapping = tmp_path / "map.json"
    mapping.write_text("{}")
    provider = RedfishProvider(RedfishSettings(map_file=mapping))
    node = RebootTarget(node="bm-7", provider_id="")
    assert not provider.owns(node)
    mapping.write_text(json.dumps({"bm-7": "https://10.0.0.7/redfish/v1/Systems/1"}))
    assert provider.owns(node)
    # A broken update keeps the last good mapping.
    mapping.write_text("{not json")
    assert provider.owns(node)
    bad = tmp_path / "list.json"
    bad.write_text("[]")
    with pytest.raises(ValueError, match="must be a JSON object"):
        RedfishProvider(RedfishSettings(map_file=bad))


async def test_describe(cluster: SimulatedCluster) -> None:
    provider = RedfishProvider(_settings(cluster))
    target = _node_target(cluster, "gpu-node-001")
    url = target.annotations[SYSTEM_ANNOTATION]
    assert await provider.describe(target) == f"Redfish system {url}: PowerState On, Status Health OK"
    cluster.inject_fault("gpu-node-001", 79)
    assert await provider.describe(target) == f"Redfish system {url}: PowerState On, Status Health Warning"


async def test_requested_since_is_unknown(cluster: SimulatedCluster) -> None:
    provider = RedfishProvider(_settings(cluster))
    assert await provider.requested_since(_node_target(cluster, "gpu-node-000"), datetime.now(UTC)) is None


def test_owns_by_annotation_or_map(tmp_path: Path) -> None:
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"bm-mapped": "https://10.0.0.6/redfish/v1/Systems/1"}))
    provider = RedfishProvider(RedfishSettings(map_file=mapping))
    assert provider.owns(_target("bm-annotated", "https://10.0.0.5/redfish/v1/Systems/1"))
    assert provider.owns(RebootTarget(node="bm-mapped", provider_id=""))
    assert not provider.owns(RebootTarget(node="cloud-node", provider_id="aws:///us-east-1a/i-0abc"))
    assert not provider.owns(RebootTarget(node="other", provider_id="", annotations={SYSTEM_ANNOTATION: ""}))
    assert not RedfishProvider().owns(RebootTarget(node="bm-mapped", provider_id=""))
    assert provider.name == "redfish" and provider.expects_new_boot and provider.supports_graceful


def test_system_urls_are_parsed() -> None:
    parsed = parse_system_url("bm", "https://10.0.0.5:8443/redfish/v1/Systems/System.Embedded.1/")
    assert parsed.base_url == "https://10.0.0.5:8443"
    assert parsed.root_prefix == "/redfish/v1/"
    assert parsed.path == "/redfish/v1/Systems/System.Embedded.1"
    assert parsed.host == "10.0.0.5"
    behind_proxy = parse_system_url("bm", "https://bmc-proxy.example/rack-7/redfish/v1/Systems/1")
    assert behind_proxy.root == "https://bmc-proxy.example/rack-7/redfish/v1/"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://10.0.0.5/redfish/v1/Systems/1", "clear text"),
        ("10.0.0.5/redfish/v1/Systems/1", "not an https URL"),
        ("https://10.0.0.5/redfish/v1/Chassis/1", "does not name one ComputerSystem"),
        ("https://10.0.0.5/redfish/v1/Systems/", "does not name one ComputerSystem"),
        ("https://10.0.0.5/redfish/v1/Systems/1/Bios", "does not name one ComputerSystem"),
    ],
)
async def test_malformed_system_urls_are_not_retried(url: str, why: str) -> None:
    with pytest.raises(ProviderError) as caught:
        await RedfishProvider().reboot(_target("bm-5", url))
    assert caught.value.retryable is False and caught.value.refused is True
    message = str(caught.value)
    assert message.startswith(f"node bm-5's Redfish system {url!r} is malformed")
    assert why in message and "https://<bmc>[:port]/redfish/v1/Systems/<id>" in message


def test_settings_from_env(tmp_path: Path) -> None:
    env = {
        "GPUHEAL_REDFISH_CREDENTIALS_DIR": "/var/run/secrets/redfish",
        "GPUHEAL_REDFISH_CA_BUNDLE": "/etc/gpuheal/bmc-ca.pem",
        "GPUHEAL_REDFISH_MAP": "/etc/gpuheal/redfish-map.json",
    }
    settings = RedfishSettings.from_env(env)
    assert settings.credentials_dir == Path("/var/run/secrets/redfish")
    assert settings.ca_bundle == Path("/etc/gpuheal/bmc-ca.pem")
    assert settings.map_file == Path("/etc/gpuheal/redfish-map.json")
    assert settings.insecure is False
    assert RedfishSettings.from_env({"GPUHEAL_REDFISH_INSECURE": "true"}).insecure is True
    assert RedfishSettings.from_env({}) == RedfishSettings()
    with pytest.raises(ValueError, match="not both"):
        RedfishSettings.from_env({**env, "GPUHEAL_REDFISH_INSECURE": "true"})
    with pytest.raises(ValueError, match="true or false"):
        RedfishSettings.from_env({"GPUHEAL_REDFISH_INSECURE": "sometimes"})


def test_delays_and_timeouts_are_durations() -> None:
    settings = RedfishSettings()
    assert settings.retry_delay == timedelta(seconds=1)
    assert (settings.connect_timeout, settings.read_timeout) == (timedelta(seconds=10), timedelta(seconds=30))
