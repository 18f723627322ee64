"""The AWS provider through real boto3: against moto in server mode and the simulator's EC2 endpoint."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from gpuheal.activities.providers import ProviderError, RebootTarget
from gpuheal.activities.providers.aws import AwsProvider, AwsSettings, Ec2Instance, parse_provider_id
from gpuheal_sim.simulator import FleetConfig, SimulatedCluster
from tests.cloud_fleet import cloud_fleet

# moto accepts any image ID; no AMI lookup keeps the fixture quick.
IMAGE = "ami-12c6146b"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No AWS setting from the machine running the tests: no AWS_* variables, no ~/.aws files, no IMDS."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


async def _raises(call: Awaitable[object]) -> ProviderError:
    """The ProviderError an awaited provider call raises; fails the test if it raises none."""
    with pytest.raises(ProviderError) as caught:
        await call
    return caught.value


# --- providerIDs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider_id", "expected"),
    [
        ("aws:///us-east-1a/i-0123456789abcdef0", Ec2Instance("i-0123456789abcdef0", "us-east-1a", "us-east-1")),
        ("aws:///eu-west-3c/i-12345678", Ec2Instance("i-12345678", "eu-west-3c", "eu-west-3")),
        (
            "aws:///us-gov-west-1b/i-0123456789abcdef0",
            Ec2Instance("i-0123456789abcdef0", "us-gov-west-1b", "us-gov-west-1"),
        ),
        (
            "aws:///eusc-de-east-1a/i-0123456789abcdef0",
            Ec2Instance("i-0123456789abcdef0", "eusc-de-east-1a", "eusc-de-east-1"),
        ),
        # Local and Wavelength zones belong to their parent region.
        (
            "aws:///us-west-2-lax-1a/i-0123456789abcdef0",
            Ec2Instance("i-0123456789abcdef0", "us-west-2-lax-1a", "us-west-2"),
        ),
        (
            "aws:///us-east-1-wl1-bos-wlz-1/i-0123456789abcdef0",
            Ec2Instance("i-0123456789abcdef0", "us-east-1-wl1-bos-wlz-1", "us-east-1"),
        ),
        # The zone in the host part, and no zone at all, as Kubernetes' AWS cloud provider accepts.
        ("aws://ap-south-1b/i-0123456789abcdef0", Ec2Instance("i-0123456789abcdef0", "ap-south-1b", "ap-south-1")),
        ("aws:////i-0123456789abcdef0", Ec2Instance("i-0123456789abcdef0", None, None)),
    ],
)
def test_provider_ids_name_the_instance_and_its_region(provider_id: str, expected: Ec2Instance) -> None:
    assert parse_provider_id("gpu-node-7", provider_id) == expected


@pytest.mark.parametrize(
    "provider_id",
    [
        "",
        "gce://project/us-central1-a/vm-1",
        "aws:///us-east-1a/",
        "aws:///us-east-1a/vol-0123456789abcdef0",
        "aws:///us-east-1a/i-0123456789ABCDEF0",
        "aws:///us-east-1a/i-0123",
        "aws:///us-east-1a/extra/i-0123456789abcdef0",
        "aws:///use1-az1/i-0123456789abcdef0",
        "aws:///us-east-1a/fargate-ip-192-168-1-10.ec2.internal",
    ],
)
async def test_a_malformed_provider_id_is_not_retried_and_says_what_is_expected(
    provider_id: str, aws_env: pytest.MonkeyPatch
) -> None:
    target = RebootTarget("gpu-node-7", provider_id)
    provider = AwsProvider()
    calls: list[Callable[[], Awaitable[str]]] = [lambda: provider.reboot(target), lambda: provider.describe(target)]
    for call in calls:
        error = await _raises(call())
        assert not error.retryable
        assert "gpu-node-7" in str(error) and repr(provider_id) in str(error)
        assert "aws:///<zone>/<instance-id>" in str(error)
    # Nothing was sent, so a retry may ask again; describe's errors say nothing about a reboot.
    assert (await _raises(provider.reboot(target))).refused
    assert not (await _raises(provider.describe(target))).refused


def test_owns_aws_provider_ids_only() -> None:
    provider = AwsProvider()
    assert provider.owns(RebootTarget("n", "aws:///us-east-1a/i-0123456789abcdef0"))
    assert provider.owns(RebootTarget("n", "aws://us-east-1a/i-0123456789abcdef0"))
    assert not provider.owns(RebootTarget("n", "azure:///subscriptions/s/resourceGroups/g/providers/x/y"))
    assert not provider.owns(RebootTarget("n", "gce://p/z/n"))
    assert not provider.owns(RebootTarget("n", ""))
    assert provider.name == "aws" and provider.expects_new_boot


def test_settings_leave_everything_to_the_standard_chain() -> None:
    # AWS has a standard variable for every setting; boto3 reads them itself.
    settings = AwsSettings.from_env({"AWS_ENDPOINT_URL_EC2": "https://elsewhere", "AWS_CA_BUNDLE": "/ca.pem"})
    assert settings == AwsSettings()
    assert settings.endpoint_url is None and settings.ca_bundle is None and settings.max_attempts == 3


def test_timeouts_are_durations_given_to_botocore_in_seconds() -> None:
    settings = AwsSettings()
    assert (settings.connect_timeout, settings.read_timeout) == (timedelta(seconds=5), timedelta(seconds=20))
    config = AwsProvider(settings)._client("us-east-1").meta.config
    assert (config.connect_timeout, config.read_timeout) == (5.0, 20.0)


# --- moto in server mode -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def _moto_ec2(url: str, region: str) -> Any:
    return boto3.client(
        "ec2", region_name=region, endpoint_url=url, aws_access_key_id="testing", aws_secret_access_key="testing"
    )


@pytest.fixture
def moto_instance(moto_url: str) -> Iterator[str]:
    """A running instance in moto's us-west-2b."""
    ec2 = _moto_ec2(moto_url, "us-west-2")
    reply = ec2.run_instances(
        ImageId=IMAGE, MinCount=1, MaxCount=1, InstanceType="p5.48xlarge", Placement={"AvailabilityZone": "us-west-2b"}
    )
    instance_id = str(reply["Instances"][0]["InstanceId"])
    yield instance_id
    ec2.terminate_instances(InstanceIds=[instance_id])


@pytest.fixture
def moto_provider(aws_env: pytest.MonkeyPatch, moto_url: str) -> AwsProvider:
    aws_env.setenv("AWS_ACCESS_KEY_ID", "testing")
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return AwsProvider(AwsSettings(endpoint_url=moto_url))


async def test_moto_reboots_and_describes_the_instance(
    moto_provider: AwsProvider, moto_instance: str, moto_url: str
) -> None:
    target = RebootTarget("gpu-node-1", f"aws:///us-west-2b/{moto_instance}")
    detail = await moto_provider.reboot(target)
    assert detail.startswith(f"EC2 accepted RebootInstances for {moto_instance} in us-west-2")
    assert await moto_provider.describe(target) == (
        f"EC2 {moto_instance} in us-west-2: running; status checks: instance ok, system ok"
    )
    await asyncio.to_thread(_moto_ec2(moto_url, "us-west-2").stop_instances, InstanceIds=[moto_instance])
    described = await moto_provider.describe(target)
    assert described.startswith(f"EC2 {moto_instance} in us-west-2: stopped (")
    # EC2 keeps no record of reboot requests, so the provider cannot say whether it was asked.
    assert await moto_provider.requested_since(target, datetime(2000, 1, 1, tzinfo=UTC)) is None


async def test_moto_replace_terminates_the_instance_and_again_without_error(
    moto_provider: AwsProvider, moto_instance: str, moto_url: str
) -> None:
    target = RebootTarget("gpu-node-1", f"aws:///us-west-2b/{moto_instance}")
    detail = await moto_provider.replace(target)
    assert detail.startswith(f"EC2 accepted TerminateInstances for {moto_instance} in us-west-2: ")
    ec2 = _moto_ec2(moto_url, "us-west-2")
    reply = await asyncio.to_thread(ec2.describe_instances, InstanceIds=[moto_instance])
    assert reply["Reservations"][0]["Instances"][0]["State"]["Name"] in ("shutting-down", "terminated")
    # A retried attempt after EC2 acted (its answer lost) finds the instance terminated: no error.
    assert " in us-west-2: " in await moto_provider.replace(target)


async def test_moto_the_region_comes_from_the_zone(moto_provider: AwsProvider, moto_instance: str) -> None:
    # moto keeps a backend per region, chosen by the request's signature as EC2's regional endpoints are.
    for provider_id in (f"aws:///us-west-2-lax-1a/{moto_instance}", f"aws://us-west-2b/{moto_instance}"):
        assert " in us-west-2 " in await moto_provider.reboot(RebootTarget("gpu-node-1", provider_id))
    error = await _raises(moto_provider.reboot(RebootTarget("gpu-node-1", f"aws:///us-east-1a/{moto_instance}")))
    assert not error.retryable and error.refused
    assert f"EC2 instance {moto_instance} does not exist in us-east-1 (InvalidInstanceID.NotFound)" in str(error)


async def test_moto_the_zone_less_form_uses_the_configured_region(
    moto_provider: AwsProvider, moto_instance: str, moto_url: str, aws_env: pytest.MonkeyPatch
) -> None:
    target = RebootTarget("gpu-node-1", f"aws:////{moto_instance}")
    error = await _raises(moto_provider.reboot(target))
    assert not error.retryable and "AWS_DEFAULT_REGION" in str(error)
    assert error.refused  # no client, so no request
    aws_env.setenv("AWS_DEFAULT_REGION", "us-west-2")
    # A fresh provider: clients, and the region they were made for, are cached per provider.
    described = await AwsProvider(AwsSettings(endpoint_url=moto_url)).describe(target)
    assert described.startswith(f"EC2 {moto_instance} in the configured default region: running")


async def test_moto_an_unknown_instance_is_not_retried(moto_provider: AwsProvider, moto_instance: str) -> None:
    target = RebootTarget("gpu-node-9", "aws:///us-west-2a/i-0123456789abcdef0")
    calls: list[Callable[[], Awaitable[str]]] = [
        lambda: moto_provider.reboot(target),
        lambda: moto_provider.describe(target),
    ]
    for call in calls:
        error = await _raises(call())
        assert not error.retryable
        assert str(error) == (
            "EC2 instance i-0123456789abcdef0 does not exist in us-west-2 (InvalidInstanceID.NotFound); "
            "check node gpu-node-9's providerID 'aws:///us-west-2a/i-0123456789abcdef0'"
        )


async def test_an_unreachable_endpoint_is_retryable(aws_env: pytest.MonkeyPatch) -> None:
    aws_env.setenv("AWS_ACCESS_KEY_ID", "testing")
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = AwsProvider(AwsSettings(endpoint_url=f"http://127.0.0.1:{port}", max_attempts=1))
    error = await _raises(provider.reboot(RebootTarget("gpu-node-1", "aws:///us-east-1a/i-0123456789abcdef0")))
    assert error.retryable and "EC2 in us-east-1 unreachable" in str(error)
    assert error.refused  # the connection was refused: nothing was sent


async def test_missing_credentials_name_irsa(aws_env: pytest.MonkeyPatch, moto_url: str) -> None:
    provider = AwsProvider(AwsSettings(endpoint_url=moto_url))
    error = await _raises(provider.reboot(RebootTarget("gpu-node-1", "aws:///us-east-1a/i-0123456789abcdef0")))
    assert not error.retryable and "no AWS credentials" in str(error) and "IRSA" in str(error)
    assert error.refused  # unsigned, so never sent


# --- the simulator's EC2 endpoint --------------------------------------------------------------------


@asynccontextmanager
async def aws_fleet(
    tmp_path: Path, aws_env: pytest.MonkeyPatch, *, reboot_seconds: float = 0.2, terminate_seconds: float = 1.0
) -> AsyncIterator[SimulatedCluster]:
    """A two-node fleet on simulated EC2, and the standard AWS variables under which the SDK reaches it."""
    async with cloud_fleet(
        "aws", tmp_path / "sim", reboot_seconds=reboot_seconds, terminate_seconds=terminate_seconds
    ) as cluster:
        for name, value in cluster.client_environment().items():
            if name.startswith("AWS_"):
                aws_env.setenv(name, value)
        yield cluster


@pytest.fixture
async def sim(tmp_path: Path, aws_env: pytest.MonkeyPatch) -> AsyncIterator[SimulatedCluster]:
    """A two-node fleet on simulated EC2, with the environment its SDK settings reach it under."""
    async with aws_fleet(tmp_path, aws_env) as cluster:
        yield cluster


@pytest.fixture
async def rebooting_sim(tmp_path: Path, aws_env: pytest.MonkeyPatch) -> AsyncIterator[SimulatedCluster]:
    """`sim`, with reboots that last long enough (5 s) for a describe to see one under way on a busy machine."""
    async with aws_fleet(tmp_path, aws_env, reboot_seconds=5.0) as cluster:
        yield cluster


def _target(cluster: SimulatedCluster, node: str) -> RebootTarget:
    obj = cluster.get_object("nodes", node)
    assert obj is not None
    return RebootTarget(node, str(obj["spec"]["providerID"]))


async def _back_with_new_boot(cluster: SimulatedCluster, node: str, boot_id: str, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while cluster.node_state(node)["rebooting"] or cluster.node_state(node)["bootId"] == boot_id:
        assert asyncio.get_running_loop().time() < deadline, f"{node} did not come back"
        await asyncio.sleep(0.02)


async def test_sim_reboot_really_reboots_the_node_once(rebooting_sim: SimulatedCluster) -> None:
    sim = rebooting_sim
    node, other = sim.node_names()
    target = _target(sim, node)
    boot_id = sim.node_state(node)["bootId"]
    # No settings: endpoint, CA and credentials all come from the standard AWS variables.
    provider = AwsProvider()
    detail = await provider.reboot(target)
    instance = parse_provider_id(node, target.provider_id)
    assert detail.startswith(f"EC2 accepted RebootInstances for {instance.instance_id} in us-east-1 (request ")
    assert sim.node_state(node)["rebootRequests"] == 1 and sim.node_state(node)["rebooting"]
    assert await provider.describe(target) == (
        f"EC2 {instance.instance_id} in us-east-1: running; status checks: instance initializing, system ok"
    )
    await _back_with_new_boot(sim, node, boot_id)
    assert sim.node_state(node)["rebootRequests"] == 1
    assert sim.node_state(other)["rebootRequests"] == 0
    assert await provider.describe(target) == (
        f"EC2 {instance.instance_id} in us-east-1: running; status checks: instance ok, system ok"
    )
    assert await provider.requested_since(target, datetime(2000, 1, 1, tzinfo=UTC)) is None


@pytest.fixture
async def terminating_sim(tmp_path: Path, aws_env: pytest.MonkeyPatch) -> AsyncIterator[SimulatedCluster]:
    """`sim`, whose terminated machines keep their nodes for 5 s, for a look at one shutting down."""
    async with aws_fleet(tmp_path, aws_env, terminate_seconds=5.0) as cluster:
        yield cluster


async def test_sim_replace_terminates_the_instance_and_the_node_goes(terminating_sim: SimulatedCluster) -> None:
    sim = terminating_sim
    node, other = sim.node_names()
    target = _target(sim, node)
    instance = parse_provider_id(node, target.provider_id)
    provider = AwsProvider()

    detail = await provider.replace(target)

    assert detail.startswith(f"EC2 accepted TerminateInstances for {instance.instance_id} in us-east-1: shutting-down")
    assert sim.node_state(node)["terminatedAt"] is not None and not sim.node_state(node)["rebooting"]
    assert await provider.describe(target) == f"EC2 {instance.instance_id} in us-east-1: shutting-down"
    # EC2 will not reboot a terminated instance; the simulator refuses it as EC2 does.
    error = await _raises(provider.reboot(target))
    assert not error.retryable and "IncorrectInstanceState" in str(error)
    deadline = asyncio.get_running_loop().time() + 20
    while sim.get_object("nodes", node) is not None:  # the cloud's node controller deletes the Node
        assert asyncio.get_running_loop().time() < deadline, f"{node} was not deleted"
        await asyncio.sleep(0.05)
    # Terminated instances stay listed for a while, and terminating one again is no error.
    assert await provider.describe(target) == f"EC2 {instance.instance_id} in us-east-1: terminated"
    again = await provider.replace(target)
    assert again.startswith(f"EC2 accepted TerminateInstances for {instance.instance_id} in us-east-1: terminated")
    assert sim.node_state(other)["terminatedAt"] is None and sim.get_object("nodes", other) is not None


async def test_sim_a_throttled_reboot_is_refused_at_once_for_the_caller_to_retry(sim: SimulatedCluster) -> None:
    node = sim.node_names()[0]
    target = _target(sim, node)
    provider = AwsProvider()
    # RebootInstances is sent once (botocore would retry a read timeout too, and that reboot may
    # have happened): a throttle fails the call, refused, and the caller's later attempt goes through.
    sim.inject_cloud_fault("aws", "throttle", 1)
    error = await _raises(provider.reboot(target))
    assert error.retryable and "RequestLimitExceeded" in str(error)
    assert error.refused
    assert sim.node_state(node)["rebootRequests"] == 0
    await provider.reboot(target)
    assert sim.node_state(node)["rebootRequests"] == 1
    # Reads are retried by botocore: one throttle is absorbed within the call.
    sim.inject_cloud_fault("aws", "throttle", 1)
    assert "running" in await provider.describe(target)
    assert sim.simulation.cloud_faults.pending("aws") == 0


async def test_sim_permission_denied_names_the_permission(sim: SimulatedCluster) -> None:
    node = sim.node_names()[0]
    target = _target(sim, node)
    provider = AwsProvider()
    calls: list[tuple[Callable[[], Awaitable[str]], str]] = [
        (lambda: provider.reboot(target), "ec2:RebootInstances"),
        (lambda: provider.describe(target), "ec2:DescribeInstances"),
        (lambda: provider.replace(target), "ec2:TerminateInstances"),
    ]
    for call, permission in calls:
        sim.inject_cloud_fault("aws", "denied")
        error = await _raises(call())
        assert not error.retryable
        assert f"grant {permission} to the IAM role of the worker's service account (IRSA)" in str(error)
        assert "UnauthorizedOperation" in str(error)
        # EC2 answered that it did not act: the reboot was refused (describe's errors stay unmarked).
        assert error.refused is (permission == "ec2:RebootInstances")
    assert sim.node_state(node)["rebootRequests"] == 0
    assert sim.node_state(node)["terminatedAt"] is None


async def test_sim_a_missing_instance_is_not_retried(sim: SimulatedCluster) -> None:
    node = sim.node_names()[0]
    target = _target(sim, node)
    instance_id = parse_provider_id(node, target.provider_id).instance_id
    sim.inject_cloud_fault("aws", "not_found")
    error = await _raises(AwsProvider().reboot(target))
    assert not error.retryable and error.refused
    assert str(error) == (
        f"EC2 instance {instance_id} does not exist in us-east-1 (InvalidInstanceID.NotFound); "
        f"check node {node}'s providerID {target.provider_id!r}"
    )
    assert sim.node_state(node)["rebootRequests"] == 0
    # An ID no node carries is unknown to the simulated EC2 as well.
    error = await _raises(AwsProvider().describe(RebootTarget(node, "aws:///us-east-1a/i-0fffffffffffffff0")))
    assert not error.retryable and "InvalidInstanceID.NotFound" in str(error)


async def test_sim_an_untrusted_certificate_is_not_retried(sim: SimulatedCluster, aws_env: pytest.MonkeyPatch) -> None:
    aws_env.delenv("AWS_CA_BUNDLE")
    error = await _raises(AwsProvider().reboot(_target(sim, sim.node_names()[0])))
    assert not error.retryable and "AWS_CA_BUNDLE" in str(error)
    assert error.refused  # the certificate failed verification in the handshake, before the request
    assert sim.node_state(sim.node_names()[0])["rebootRequests"] == 0
    # The explicit override trusts the simulator's CA.
    await AwsProvider(AwsSettings(ca_bundle=str(sim.ca_file))).reboot(_target(sim, sim.node_names()[0]))
    assert sim.node_state(sim.node_names()[0])["rebootRequests"] == 1


async def test_sim_a_reboot_throttled_beyond_botos_retries_is_refused(sim: SimulatedCluster) -> None:
    node = sim.node_names()[1]
    sim.inject_cloud_fault("aws", "throttle", AwsSettings().max_attempts)
    error = await _raises(AwsProvider().reboot(_target(sim, node)))
    assert error.retryable and error.refused
    assert sim.reboot_requests(node) == 0


# --- answers that never came: EC2 may have rebooted the instance -------------------------------------


@pytest.fixture
async def slow_sim(tmp_path: Path, aws_env: pytest.MonkeyPatch) -> AsyncIterator[SimulatedCluster]:
    """Simulated EC2 that records a reboot at once but holds its answer back for a second."""
    config = FleetConfig(nodes=1, cloud="aws", workloads=False, reboot_seconds=0.2, reboot_reply_seconds=1.0)
    async with SimulatedCluster(config, state_dir=tmp_path / "slow") as cluster:
        for name, value in cluster.client_environment().items():
            if name.startswith("AWS_"):
                aws_env.setenv(name, value)
        yield cluster


async def test_sim_a_read_timeout_after_sending_is_not_refused(slow_sim: SimulatedCluster) -> None:
    (node,) = slow_sim.node_names()
    provider = AwsProvider(AwsSettings(read_timeout=timedelta(seconds=0.3), max_attempts=1))
    error = await _raises(provider.reboot(_target(slow_sim, node)))
    assert error.retryable and "Read timeout" in str(error)
    # EC2 had the request and rebooted the instance; only its answer was lost. Asking again would
    # reboot it twice.
    assert not error.refused
    assert slow_sim.reboot_requests(node) == 1


async def test_sim_a_read_timeout_on_the_reboot_is_not_retried_by_botocore(slow_sim: SimulatedCluster) -> None:
    """The timed-out request reached EC2; sending it again would reboot the node twice."""
    (node,) = slow_sim.node_names()
    provider = AwsProvider(AwsSettings(read_timeout=timedelta(seconds=0.3), max_attempts=3))
    error = await _raises(provider.reboot(_target(slow_sim, node)))
    assert not error.refused
    assert slow_sim.reboot_requests(node) == 1
