"""A write that changes nothing keeps the resourceVersion and sends no watch event."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from gpuheal_sim.simulator import SimulatedCluster
from gpuheal_sim.simulator.jsonvalues import JsonDict

from .conformance import JSON_PATCH, MERGE, STRATEGIC, call

NAMESPACE = "/api/v1/namespaces/ml"


async def _watch_ml(cluster: SimulatedCluster, rv: str) -> list[tuple[str, str]]:
    """The events a one-second watch on namespace ``ml`` from ``rv`` delivers."""
    headers = {"Authorization": f"Bearer {cluster.token}"}
    params = {"watch": "1", "resourceVersion": rv, "timeoutSeconds": "1", "fieldSelector": "metadata.name=ml"}
    path = "/api/v1/namespaces"
    async with (
        aiohttp.ClientSession() as session,
        session.get(cluster.url + path, headers=headers, params=params, ssl=False) as resp,
    ):
        lines = [json.loads(line) for line in (await resp.read()).splitlines()]
    return [(e["type"], e["object"]["metadata"]["resourceVersion"]) for e in lines]


async def test_noop_patches_and_update_keep_the_resource_version(cluster: SimulatedCluster) -> None:
    """Upstream: ``staging/src/k8s.io/apiserver/pkg/storage/etcd3/store.go`` (``GuaranteedUpdate``:
    ``if !origState.stale && bytes.Equal(data, origState.data)`` returns the current object without
    writing, so neither the resourceVersion nor the watch moves)."""
    current = (await call(cluster, "GET", NAMESPACE)).body
    rv = current["metadata"]["resourceVersion"]
    same_label = {"metadata": {"labels": current["metadata"]["labels"]}}
    for content_type, patch in (
        (MERGE, same_label),
        (STRATEGIC, same_label),
        (JSON_PATCH, [{"op": "test", "path": "/metadata/name", "value": "ml"}]),
        (MERGE, {"metadata": {"annotations": None}}),
    ):
        reply = await call(cluster, "PATCH", NAMESPACE, patch, content_type=content_type)
        assert reply.status == 200, reply.body
        assert reply.body["metadata"]["resourceVersion"] == rv, content_type
    reply = await call(cluster, "PUT", NAMESPACE, current)
    assert reply.status == 200 and reply.body["metadata"]["resourceVersion"] == rv
    # Unknown fields are dropped before the comparison, so they change nothing either.
    reply = await call(cluster, "PATCH", NAMESPACE, {"spec": {"bogus": 1}}, content_type=MERGE)
    assert reply.body["metadata"]["resourceVersion"] == rv
    assert await _watch_ml(cluster, rv) == []
    changed = await call(cluster, "PATCH", NAMESPACE, {"metadata": {"labels": {"x": "y"}}}, content_type=MERGE)
    new_rv = changed.body["metadata"]["resourceVersion"]
    assert new_rv != rv
    events = await _watch_ml(cluster, rv)
    assert events == [("MODIFIED", new_rv)]


async def test_noop_node_patch_keeps_the_resource_version(cluster: SimulatedCluster) -> None:
    """Upstream: ``staging/src/k8s.io/apiserver/pkg/storage/etcd3/store.go`` (``GuaranteedUpdate``);
    a taint written again with ``timeAdded`` in another offset is the same object once decoded."""
    taint = {"key": "gpuheal.io/q", "effect": "NoExecute", "timeAdded": "2024-05-01T10:00:00Z"}
    first = await call(
        cluster, "PATCH", "/api/v1/nodes/gpu-node-002", {"spec": {"taints": [taint]}}, content_type=MERGE
    )
    rv = first.body["metadata"]["resourceVersion"]
    again = {**taint, "timeAdded": "2024-05-01T12:00:00+02:00"}
    reply = await call(
        cluster, "PATCH", "/api/v1/nodes/gpu-node-002", {"spec": {"taints": [again]}}, content_type=MERGE
    )
    assert reply.body["metadata"]["resourceVersion"] == rv


async def test_noop_mutate_does_not_write(cluster: SimulatedCluster) -> None:
    """Upstream: ``staging/src/k8s.io/apiserver/pkg/storage/etcd3/store.go`` (``GuaranteedUpdate``):
    the simulated controllers' write path (``Registry.mutate``) skips an unchanged object too."""
    registry = cluster.simulation.registry
    store = cluster.store
    entry = store.get("namespaces", "", "ml")
    assert entry is not None
    before = store.rv
    seen: list[str] = []
    store.add_listener(lambda change: seen.append(change.type))

    def touch(obj: JsonDict) -> bool:
        obj["metadata"]["labels"] = dict(obj["metadata"]["labels"])
        return True

    result = registry.mutate("namespaces", "", "ml", touch)
    assert result is entry and store.rv == before and seen == []
    status: Any = dict(entry.obj["status"])
    registry.write_status("namespaces", "", "ml", status)
    assert store.rv == before and seen == []
    registry.write_status("namespaces", "", "ml", {**status, "phase": "Active", "extra": "x"})
    assert store.rv == before + 1 and seen == ["MODIFIED"]
