"""Quarantine and release against the simulated API server: what gpuheal does not own comes back untouched."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.aio import client
from temporalio.testing import ActivityEnvironment

from gpuheal.activities.nodes import NodeActivities
from gpuheal.domain import marks
from gpuheal.domain.steps import NodeRecord, NodeRef, NodeState, Outcome, QuarantineRequest, ReleaseRequest
from gpuheal.kubeclient import connect
from gpuheal_sim.simulator import FleetConfig, SimulatedCluster

NODE = "gpu-node-000"
HOLDER = "remediate-gpu-node-000/run-1"

# Taints other components own, in the exact form the API server serves them: the node lifecycle
# controller's NoExecute taint with its `timeAdded`, and an operator's taint with a value.
FOREIGN_TAINTS: list[dict[str, Any]] = [
    {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": "2026-11-30T08:15:00Z"},
    {"key": "example.com/maintenance", "value": "rack-7", "effect": "PreferNoSchedule"},
]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[SimulatedCluster]:
    config = FleetConfig(nodes=2, gpus_per_node=2, workloads=False, node_lifecycle_taints=False)
    async with SimulatedCluster(config, state_dir=tmp_path) as running:
        yield running


def taints_json(cluster: SimulatedCluster) -> str:
    node = cluster.get_object("nodes", NODE)
    assert node is not None
    return json.dumps(node["spec"].get("taints", []), sort_keys=False)


async def test_quarantine_and_release_hand_back_foreign_taints_byte_identical(
    cluster: SimulatedCluster, api: client.ApiClient
) -> None:
    core = client.CoreV1Api(api)
    await core.patch_node(NODE, {"spec": {"taints": FOREIGN_TAINTS}}, _content_type="application/merge-patch+json")
    before = taints_json(cluster)
    activities = NodeActivities(api)
    env = ActivityEnvironment()

    record: NodeRecord = await env.run(
        activities.quarantine_node, QuarantineRequest(node=NODE, holder=HOLDER, reason="XID 79")
    )
    quarantined = cluster.get_object("nodes", NODE)
    assert quarantined is not None
    taints = quarantined["spec"]["taints"]
    assert taints[: len(FOREIGN_TAINTS)] == FOREIGN_TAINTS, "quarantine rewrote a taint it does not own"
    assert taints[-1]["key"] == marks.QUARANTINE_TAINT_KEY

    await env.run(
        activities.release_node,
        ReleaseRequest(node=NODE, holder=HOLDER, outcome=Outcome.RESOLVED, cordoned_before=record.cordoned_before),
    )

    assert taints_json(cluster) == before


async def test_an_escalated_node_taken_back_loses_only_the_escalation_reason(
    cluster: SimulatedCluster, api: client.ApiClient
) -> None:
    """A person resumed or retried it: gpuheal works on the node again, still cordoned and tainted."""
    activities = NodeActivities(api)
    env = ActivityEnvironment()
    await env.run(activities.quarantine_node, QuarantineRequest(node=NODE, holder=HOLDER, reason="XID 79"))

    def release(outcome: Outcome, reason: str) -> Any:
        request = ReleaseRequest(node=NODE, holder=HOLDER, outcome=outcome, cordoned_before=False, reason=reason)
        return env.run(activities.release_node, request)

    await release(Outcome.ESCALATED, "GPUs did not report healthy")
    escalated = cluster.get_object("nodes", NODE)
    await release(Outcome.TAKEN_BACK, "")
    taken_back = cluster.get_object("nodes", NODE)

    assert escalated is not None and taken_back is not None
    assert escalated["metadata"]["annotations"][marks.ESCALATION_ANNOTATION] == "GPUs did not report healthy"
    assert marks.ESCALATION_ANNOTATION not in taken_back["metadata"]["annotations"]
    assert taken_back["metadata"]["annotations"][marks.REMEDIATION_ANNOTATION] == HOLDER
    assert taken_back["spec"]["unschedulable"] is True
    assert [t["key"] for t in taken_back["spec"]["taints"]] == [marks.QUARANTINE_TAINT_KEY]


async def test_quarantine_records_the_nodes_labels_for_the_approval_rule(
    cluster: SimulatedCluster, api: client.ApiClient
) -> None:
    await client.CoreV1Api(api).patch_node(
        NODE, {"metadata": {"labels": {"pool": "h100-prod"}}}, _content_type="application/merge-patch+json"
    )

    record: NodeRecord = await ActivityEnvironment().run(
        NodeActivities(api).quarantine_node, QuarantineRequest(node=NODE, holder=HOLDER, reason="XID 79")
    )

    assert record.labels.get("pool") == "h100-prod"


async def test_the_lifecycle_controllers_taints_come_back_byte_identical(tmp_path: Path) -> None:
    """With the node lifecycle controller running: a node cordoned by a person and down past the
    grace carries unschedulable, unreachable:NoSchedule and unreachable:NoExecute taints, each with the
    timeAdded the controller gave it (pkg/controller/nodelifecycle/node_lifecycle_controller.go);
    quarantine and release hand them back exactly."""
    config = FleetConfig(nodes=1, gpus_per_node=2, workloads=False, node_monitor_grace_seconds=0.2, reboot_seconds=60)
    async with SimulatedCluster(config, state_dir=tmp_path) as cluster, await connect(cluster.kubeconfig) as api:
        core = client.CoreV1Api(api)
        await core.patch_node(NODE, {"spec": {"unschedulable": True}}, _content_type="application/merge-patch+json")
        cluster.request_reboot(NODE)
        for _ in range(100):
            if len(json.loads(taints_json(cluster))) == 3:
                break
            await asyncio.sleep(0.05)
        before = taints_json(cluster)
        assert {(t["key"], t["effect"]) for t in json.loads(before)} == {
            ("node.kubernetes.io/unschedulable", "NoSchedule"),
            ("node.kubernetes.io/unreachable", "NoSchedule"),
            ("node.kubernetes.io/unreachable", "NoExecute"),
        }
        activities = NodeActivities(api)
        env = ActivityEnvironment()
        record: NodeRecord = await env.run(
            activities.quarantine_node, QuarantineRequest(node=NODE, holder=HOLDER, reason="XID 79")
        )
        assert record.cordoned_before
        await env.run(
            activities.release_node,
            ReleaseRequest(node=NODE, holder=HOLDER, outcome=Outcome.RESOLVED, cordoned_before=True),
        )
        await asyncio.sleep(0.1)  # the controller's next pass changes nothing
        assert taints_json(cluster) == before


async def test_observe_reads_on_which_boot_and_when_gpu_health_was_reported(
    cluster: SimulatedCluster, api: client.ApiClient
) -> None:
    state: NodeState = await ActivityEnvironment().run(NodeActivities(api).observe_node, NodeRef(node=NODE))
    assert state.gpu_healthy is True and state.gpu_report is not None
    assert state.gpu_report.boot_id == state.boot_id != ""
    assert state.gpu_report.reported_at is not None and state.gpu_report.heartbeat is not None
    assert "[boot" not in state.gpu_message, "the stamp is read, not shown"


async def test_observing_a_deleted_node_reads_it_as_absent(api: client.ApiClient) -> None:
    """observe_node must not raise 404 for ever under its retry policy: a deleted node is an answer."""
    await client.CoreV1Api(api).delete_node(NODE)

    state: NodeState = await ActivityEnvironment().run(NodeActivities(api).observe_node, NodeRef(node=NODE))

    assert not state.exists and state.node == NODE


async def test_quarantine_clears_the_orders_an_earlier_run_left_on_the_node(
    cluster: SimulatedCluster, api: client.ApiClient
) -> None:
    """A run that ended without its release (terminated) leaves its orders: no agent may act on them now."""
    left = {
        marks.GPU_RESET_REQUEST_ANNOTATION: '{"id": "remediate-gpu-node-000/old"}',
        marks.GPU_CHECK_REQUEST_ANNOTATION: '{"id": "remediate-gpu-node-000/old/check-0"}',
        marks.DIAGNOSTICS_REQUEST_ANNOTATION: '{"id": "remediate-gpu-node-000/old/diagnostics"}',
        "example.com/owner": "team-a",
    }
    await client.CoreV1Api(api).patch_node(
        NODE, {"metadata": {"annotations": left}}, _content_type="application/merge-patch+json"
    )

    await ActivityEnvironment().run(
        NodeActivities(api).quarantine_node, QuarantineRequest(node=NODE, holder=HOLDER, reason="XID 79")
    )

    node = cluster.get_object("nodes", NODE)
    assert node is not None
    annotations = node["metadata"]["annotations"]
    assert not {marks.GPU_RESET_REQUEST_ANNOTATION, marks.GPU_CHECK_REQUEST_ANNOTATION} & set(annotations)
    assert marks.DIAGNOSTICS_REQUEST_ANNOTATION not in annotations
    assert annotations["example.com/owner"] == "team-a"
