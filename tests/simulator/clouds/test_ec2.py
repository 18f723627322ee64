"""The simulator's EC2 endpoint, spoken to by boto3 directly (the simulation runs in a background thread)."""

from __future__ import annotations

import re
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from gpuheal_sim.simulator import FleetConfig, SimulatedCluster
from tests.simulator.conftest import eventually_sync


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SimulatedCluster]:
    config = FleetConfig(nodes=7, cloud="aws", workloads=False, reboot_seconds=0.2)
    with SimulatedCluster.running_in_thread(config, tmp_path) as running:
        yield running


def ec2(cluster: SimulatedCluster, region: str = "us-east-1") -> Any:
    """A boto3 EC2 client for the simulator, configured explicitly (no process environment), no retries."""
    environment = cluster.client_environment()
    return boto3.client(
        "ec2",
        region_name=region,
        endpoint_url=environment["AWS_ENDPOINT_URL_EC2"],
        verify=environment["AWS_CA_BUNDLE"],
        aws_access_key_id=environment["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=environment["AWS_SECRET_ACCESS_KEY"],
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )


def instance_ids(cluster: SimulatedCluster) -> dict[str, str]:
    """The instance ID in each node's providerID."""
    ids = {}
    for node in cluster.node_names():
        obj = cluster.get_object("nodes", node)
        assert obj is not None
        ids[node] = str(obj["spec"]["providerID"]).rsplit("/", 1)[1]
    return ids


def error_of(call: Any, **kwargs: Any) -> tuple[int, str, str]:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    response = caught.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"], response["Error"]["Message"]


def test_nodes_carry_ec2_provider_ids_and_environment(cluster: SimulatedCluster) -> None:
    provider_ids = [cluster.get_object("nodes", node)["spec"]["providerID"] for node in cluster.node_names()]  # type: ignore[index]
    assert all(re.fullmatch(r"aws:///us-east-1[abc]/i-0[0-9a-f]{16}", pid) for pid in provider_ids), provider_ids
    assert len(set(provider_ids)) == len(provider_ids)
    environment = cluster.client_environment()
    assert environment["AWS_ENDPOINT_URL_EC2"] == cluster.cloud_url
    assert environment["AWS_CA_BUNDLE"] == str(cluster.ca_file)
    assert environment["AWS_DEFAULT_REGION"] == "us-east-1"


def test_describe_instances_lists_the_fleet_in_its_region(cluster: SimulatedCluster) -> None:
    ids = instance_ids(cluster)
    pages = ec2(cluster).get_paginator("describe_instances").paginate(PaginationConfig={"PageSize": 5})
    pages = list(pages)
    assert len(pages) == 2  # seven instances, five a page
    listed = [
        instance for page in pages for reservation in page["Reservations"] for instance in reservation["Instances"]
    ]
    assert sorted(instance["InstanceId"] for instance in listed) == sorted(ids.values())
    by_id = {instance["InstanceId"]: instance for instance in listed}
    for index, (node, instance_id) in enumerate(ids.items()):
        instance = by_id[instance_id]
        assert instance["State"] == {"Code": 16, "Name": "running"}
        assert instance["Placement"]["AvailabilityZone"] == ("us-east-1a", "us-east-1b", "us-east-1c")[index % 3]
        assert {"Key": "Name", "Value": node} in instance["Tags"]
    # The regional endpoint of another region knows none of them.
    assert ec2(cluster, "us-west-2").describe_instances()["Reservations"] == []
    one = ec2(cluster).describe_instances(InstanceIds=[ids["gpu-node-003"]])["Reservations"]
    assert [i["InstanceId"] for r in one for i in r["Instances"]] == [ids["gpu-node-003"]]


def test_unknown_and_malformed_instances_are_ec2_errors(cluster: SimulatedCluster) -> None:
    client = ec2(cluster)
    status, code, message = error_of(client.describe_instances, InstanceIds=["i-0fffffffffffffff0"])
    assert (status, code, message) == (
        400,
        "InvalidInstanceID.NotFound",
        "The instance ID 'i-0fffffffffffffff0' does not exist",
    )
    assert error_of(client.describe_instances, InstanceIds=["i-nothex"])[:2] == (400, "InvalidInstanceID.Malformed")
    # An instance of us-east-1 asked for at us-west-2.
    known = instance_ids(cluster)["gpu-node-000"]
    assert error_of(ec2(cluster, "us-west-2").reboot_instances, InstanceIds=[known])[1] == "InvalidInstanceID.NotFound"
    # One unknown ID fails the whole request: nothing is rebooted.
    status, code, message = error_of(client.reboot_instances, InstanceIds=[known, "i-0fffffffffffffff0"])
    assert (status, code) == (400, "InvalidInstanceID.NotFound") and "i-0fffffffffffffff0" in message
    assert cluster.reboot_requests("gpu-node-000") == 0
    # An action the simulator does not play is EC2's InvalidAction, not a silent success.
    assert error_of(client.stop_instances, InstanceIds=[known])[:2] == (400, "InvalidAction")


def test_reboot_instances_reboots_the_nodes(cluster: SimulatedCluster) -> None:
    ids = instance_ids(cluster)
    client = ec2(cluster)
    assert error_of(client.reboot_instances, InstanceIds=[ids["gpu-node-001"]], DryRun=True)[:2] == (
        412,
        "DryRunOperation",
    )
    assert cluster.reboot_requests("gpu-node-001") == 0
    boots = {node: cluster.node_state(node)["bootId"] for node in ("gpu-node-001", "gpu-node-002")}
    reply = client.reboot_instances(InstanceIds=[ids["gpu-node-001"], ids["gpu-node-002"]])
    assert reply["ResponseMetadata"]["HTTPStatusCode"] == 200 and reply["ResponseMetadata"]["RequestId"]
    assert [cluster.reboot_requests(node) for node in cluster.node_names()] == [0, 1, 1, 0, 0, 0, 0]
    # The instance stays `running` (as on EC2); its instance status check shows the reboot.
    statuses = client.describe_instance_status(InstanceIds=[ids["gpu-node-001"], ids["gpu-node-000"]])
    checks = {
        s["InstanceId"]: (s["InstanceState"]["Name"], s["InstanceStatus"]["Status"])
        for s in statuses["InstanceStatuses"]
    }
    assert checks == {ids["gpu-node-001"]: ("running", "initializing"), ids["gpu-node-000"]: ("running", "ok")}
    for node, boot in boots.items():
        eventually_sync(lambda node=node, boot=boot: cluster.node_state(node)["bootId"] != boot, timeout=5)  # type: ignore[misc]
    status = client.describe_instance_status(InstanceIds=[ids["gpu-node-001"]])["InstanceStatuses"][0]
    assert status["InstanceStatus"]["Status"] == "ok" and status["SystemStatus"]["Status"] == "ok"


def test_injected_faults_answer_in_ec2s_words(cluster: SimulatedCluster) -> None:
    known = instance_ids(cluster)["gpu-node-000"]
    client = ec2(cluster)
    cluster.inject_cloud_fault("aws", "throttle")
    assert error_of(client.reboot_instances, InstanceIds=[known]) == (
        503,
        "RequestLimitExceeded",
        "Request limit exceeded.",
    )
    cluster.inject_cloud_fault("aws", "denied")
    status, code, message = error_of(client.reboot_instances, InstanceIds=[known])
    assert (status, code) == (403, "UnauthorizedOperation") and "ec2:RebootInstances" in message
    cluster.inject_cloud_fault("aws", "not_found")
    status, code, message = error_of(client.describe_instances, InstanceIds=[known])
    assert (status, code, message) == (400, "InvalidInstanceID.NotFound", f"The instance ID '{known}' does not exist")
    assert cluster.reboot_requests("gpu-node-000") == 0
    # Each fault answered one request; the next is served.
    client.reboot_instances(InstanceIds=[known])
    assert cluster.reboot_requests("gpu-node-000") == 1


def test_a_request_missing_a_parameter_gets_an_ec2_error_document(cluster: SimulatedCluster) -> None:
    context = ssl.create_default_context(cafile=str(cluster.ca_file))
    request = urllib.request.Request(f"{cluster.cloud_url}/", data=b"Action=RebootInstances&Version=2016-11-15")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, context=context, timeout=5)
    body = caught.value.read().decode()
    assert caught.value.code == 400 and "<Code>MissingParameter</Code>" in body and "<RequestID>" in body
