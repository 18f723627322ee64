"""Nodes through the official asyncio client: reads, watches, the three patch types, conflicts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes.aio import client
from kubernetes.aio.client.exceptions import ApiException

from gpuheal_sim.simulator import SimulatedCluster

from .conftest import aio_api, fast_config, new_watch, trusting

MERGE = "application/merge-patch+json"


async def test_get_and_list_nodes(core: Any) -> None:
    nodes = await core.list_node(label_selector="nvidia.com/gpu.present=true")
    names = [n.metadata.name for n in nodes.items]
    assert names == ["gpu-node-000", "gpu-node-001", "gpu-node-002", "gpu-node-003"]
    assert int(nodes.metadata.resource_version) > 0
    node = await core.read_node("gpu-node-001")
    assert node.spec.provider_id == "sim://gpu-node-001"
    assert node.status.capacity["nvidia.com/gpu"] == "8"
    assert node.metadata.uid and node.metadata.creation_timestamp is not None
    conditions = {c.type: c for c in node.status.conditions}
    assert conditions["Ready"].status == "True" and conditions["Ready"].reason == "KubeletReady"
    assert conditions["GpuHealthy"].status == "True" and conditions["GpuHealthy"].reason == "GpusHealthy"
    assert len(node.status.node_info.boot_id) == 36
    only = await core.list_node(field_selector="metadata.name=gpu-node-002")
    assert [n.metadata.name for n in only.items] == ["gpu-node-002"]
    assert (await core.list_node(label_selector="nvidia.com/gpu.present!=true")).items == []


async def test_not_found_is_a_real_status(core: Any) -> None:
    with pytest.raises(ApiException) as err:
        await core.read_node("no-such-node")
    assert err.value.status == 404
    assert err.value.reason == "Not Found"
    body = json.loads(str(err.value.body))
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'nodes "no-such-node" not found',
        "reason": "NotFound",
        "details": {"name": "no-such-node", "kind": "nodes"},
        "code": 404,
    }


async def test_strategic_merge_patch_taints_labels_annotations(core: Any) -> None:
    await core.patch_node(
        "gpu-node-000",
        {
            "metadata": {"labels": {"gpuheal.io/state": "quarantined"}, "annotations": {"gpuheal.io/a": "1"}},
            "spec": {"taints": [{"key": "gpuheal.io/quarantine", "value": "xid", "effect": "NoSchedule"}]},
        },
    )
    node = await core.patch_node(
        "gpu-node-000",
        {
            "metadata": {"annotations": {"gpuheal.io/a": None, "gpuheal.io/b": "2"}},
            "spec": {"taints": [{"key": "other", "effect": "NoExecute"}], "unschedulable": True},
        },
    )
    assert node.metadata.labels["gpuheal.io/state"] == "quarantined"
    assert "gpuheal.io/a" not in node.metadata.annotations, "null deletes an annotation"
    assert node.metadata.annotations["gpuheal.io/b"] == "2"
    assert [t.key for t in node.spec.taints] == ["other"], "spec.taints is atomic: the patch replaces the list"
    assert node.spec.unschedulable is True


async def test_merge_patch_with_stale_resource_version_conflicts(core: Any) -> None:
    before = await core.read_node("gpu-node-001")
    patched = await core.patch_node(
        "gpu-node-001",
        {"metadata": {"resourceVersion": before.metadata.resource_version, "labels": {"x": "1"}}},
        _content_type=MERGE,
    )
    assert patched.metadata.labels["x"] == "1"
    assert int(patched.metadata.resource_version) > int(before.metadata.resource_version)
    with pytest.raises(ApiException) as err:
        await core.patch_node(
            "gpu-node-001",
            {"metadata": {"resourceVersion": before.metadata.resource_version, "labels": {"x": "2"}}},
            _content_type=MERGE,
        )
    assert err.value.status == 409
    body = json.loads(str(err.value.body))
    assert body["reason"] == "Conflict"
    assert body["message"] == (
        'Operation cannot be fulfilled on nodes "gpu-node-001": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    assert (await core.read_node("gpu-node-001")).metadata.labels["x"] == "1"


async def test_merge_patch_replaces_lists(core: Any) -> None:
    await core.patch_node("gpu-node-002", {"spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]}})
    node = await core.patch_node(
        "gpu-node-002", {"spec": {"taints": [{"key": "b", "effect": "NoSchedule"}]}}, _content_type=MERGE
    )
    assert [t.key for t in node.spec.taints] == ["b"]
    node = await core.patch_node("gpu-node-002", {"spec": {"taints": None}}, _content_type=MERGE)
    assert node.spec.taints is None


async def test_json_patch_and_failed_test_is_422(core: Any) -> None:
    node = await core.read_node("gpu-node-003")
    rv = node.metadata.resource_version
    patched = await core.patch_node(
        "gpu-node-003",
        [
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "add", "path": "/metadata/labels/gpuheal.io~1managed", "value": "false"},
            {"op": "add", "path": "/spec/taints", "value": [{"key": "k", "effect": "NoSchedule"}]},
        ],
    )
    assert patched.metadata.labels["gpuheal.io/managed"] == "false"
    assert [t.key for t in patched.spec.taints] == ["k"]
    with pytest.raises(ApiException) as err:
        await core.patch_node("gpu-node-003", [{"op": "test", "path": "/metadata/resourceVersion", "value": rv}])
    assert err.value.status == 422
    body = json.loads(str(err.value.body))
    assert body["reason"] == "Invalid"
    assert "test failed" in body["details"]["causes"][0]["message"]


async def test_status_patch_merges_conditions_and_main_resource_ignores_status(core: Any) -> None:
    await core.patch_node_status(
        "gpu-node-000",
        {"status": {"conditions": [{"type": "NetworkUnavailable", "status": "False", "reason": "RouteCreated"}]}},
    )
    node = await core.read_node_status("gpu-node-000")
    types = [c.type for c in node.status.conditions]
    assert types == ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready", "GpuHealthy", "NetworkUnavailable"]
    # Through the main resource the status is ignored, as on a real API server.
    node = await core.patch_node(
        "gpu-node-000", {"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Nope"}]}}
    )
    assert {c.type: c.status for c in node.status.conditions}["Ready"] == "True"
    # And the status subresource ignores spec changes.
    node = await core.patch_node_status("gpu-node-000", {"spec": {"unschedulable": True}})
    assert not node.spec.unschedulable


async def test_watch_reports_a_patch_as_modified(core: Any) -> None:
    listed = await core.list_node()
    rv = listed.metadata.resource_version

    async def patch_later() -> None:
        await asyncio.sleep(0.1)
        await core.patch_node("gpu-node-002", {"spec": {"unschedulable": True}})

    task = asyncio.create_task(patch_later())
    events: list[dict[str, Any]] = []
    watcher = new_watch()
    async with watcher.stream(core.list_node, resource_version=rv, timeout_seconds=5) as stream:
        async for event in stream:
            events.append(event)
            watcher.stop()
    await task
    assert events[0]["type"] == "MODIFIED"
    assert events[0]["object"].metadata.name == "gpu-node-002"
    assert events[0]["object"].spec.unschedulable is True
    assert int(events[0]["object"].metadata.resource_version) > int(rv)


async def test_watch_without_resource_version_starts_with_the_current_state(core: Any) -> None:
    seen: list[tuple[str, str]] = []
    watcher = new_watch()
    async with watcher.stream(core.list_node, label_selector="kubernetes.io/hostname=gpu-node-001") as stream:
        async for event in stream:
            seen.append((event["type"], event["object"].metadata.name))
            watcher.stop()
    assert seen == [("ADDED", "gpu-node-001")]


async def watch_nodes_from(core: Any, resource_version: str) -> None:
    """Watch the nodes from `resource_version` until the watch ends."""
    watcher = new_watch()
    async with watcher.stream(core.list_node, resource_version=resource_version, timeout_seconds=2) as stream:
        async for _ in stream:
            pass


async def test_watch_from_a_too_old_resource_version_is_410(tmp_path: Path) -> None:
    config = fast_config(watch_history=10, workloads=False)
    async with SimulatedCluster(config, state_dir=tmp_path) as small, await aio_api(small) as api:
        core: Any = client.CoreV1Api(api)
        for i in range(15):
            await core.patch_node("gpu-node-000", {"metadata": {"labels": {"i": str(i)}}})

        with pytest.raises(ApiException) as err:
            await watch_nodes_from(core, "1")
        assert err.value.status == 410
        assert "Expired" in str(err.value.reason)


async def test_watch_from_more_than_one_below_the_oldest_change_kept_is_410(tmp_path: Path) -> None:
    """The API server's watch cache refuses a version more than one below its oldest event, whatever
    other resources wrote in between (staging/src/k8s.io/apiserver/pkg/storage/cacher/watch_cache.go:
    `if resourceVersion < oldest-1` → "too old resource version"). A client that resumes from a
    version of another resource's write, or from a bookmark, must be ready to list again."""
    history = 10
    config = fast_config(watch_history=history, workloads=False)
    async with SimulatedCluster(config, state_dir=tmp_path) as small, await aio_api(small) as api:
        core: Any = client.CoreV1Api(api)
        for i in range(history):
            await core.patch_node("gpu-node-000", {"metadata": {"labels": {"i": str(i)}}})
        # Two writes of another resource: the node history's oldest kept change is two versions on.
        first = await core.patch_namespace("default", {"metadata": {"labels": {"j": "1"}}})
        await core.patch_namespace("default", {"metadata": {"labels": {"j": "2"}}})
        for i in range(history):
            await core.patch_node("gpu-node-000", {"metadata": {"labels": {"i": str(history + i)}}})

        with pytest.raises(ApiException) as err:
            await watch_nodes_from(core, first.metadata.resource_version)
        assert err.value.status == 410
        assert "too old resource version" in str(err.value.reason)


async def test_unauthorized_without_the_token(cluster: SimulatedCluster) -> None:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusting(cluster))) as session:
        async with session.get(f"{cluster.url}/api/v1/nodes") as response:
            assert response.status == 401
            assert (await response.json())["reason"] == "Unauthorized"
        headers = {"Authorization": f"Bearer {cluster.token}"}
        async with session.get(f"{cluster.url}/api/v1/nodes?watch=1&timeoutSeconds=1", headers=headers) as response:
            assert response.status == 200
            lines = [json.loads(line) for line in (await response.read()).splitlines()]
            assert [e["type"] for e in lines] == ["ADDED"] * 4
            assert lines[0]["object"]["kind"] == "Node"
        query = "watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan"
        async with session.get(f"{cluster.url}/api/v1/nodes?{query}&timeoutSeconds=1", headers=headers) as response:
            lines = [json.loads(line) for line in (await response.read()).splitlines()]
            assert [e["type"] for e in lines] == ["ADDED"] * 4 + ["BOOKMARK"]
            assert lines[-1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
        async with session.get(f"{cluster.url}/apis/policy/v1", headers=headers) as response:
            names = [r["name"] for r in (await response.json())["resources"]]
            assert "poddisruptionbudgets" in names


async def test_nodes_are_labelled_by_rack_in_runs_of_nodes_per_rack(tmp_path: Path) -> None:
    config = fast_config(nodes=11, nodes_per_rack=4, workloads=False)
    async with SimulatedCluster(config, state_dir=tmp_path) as cluster, await aio_api(cluster) as api:
        core: Any = client.CoreV1Api(api)
        racks = {n.metadata.name: n.metadata.labels.get("sim.gpuheal.io/rack") for n in (await core.list_node()).items}
        in_rack_2 = await core.list_node(label_selector="sim.gpuheal.io/rack=rack-2")
    assert list(racks.values()) == ["rack-0"] * 4 + ["rack-1"] * 4 + ["rack-2"] * 3
    assert [n.metadata.name for n in in_rack_2.items] == ["gpu-node-008", "gpu-node-009", "gpu-node-010"]
    assert all(n.metadata.labels["nvidia.com/gpu.present"] == "true" for n in in_rack_2.items)
