"""The ``status`` subresource's update strategies: what a status write may change besides the status.

Upstream: ``pkg/registry/core/node/strategy.go`` (``nodeStatusStrategy.PrepareForUpdate`` resets
only the spec, so labels and annotations written through ``nodes/status`` persist),
``pkg/registry/core/pod/strategy.go`` (``podStatusStrategy.PrepareForUpdate``: the spec and the
``ownerReferences`` come from the stored pod, the rest of the metadata from the request),
``staging/src/k8s.io/apiserver/pkg/registry/rest/update.go`` (``BeforeUpdate``: uid,
creationTimestamp, generation and deletion fields stay the server's).
"""

from __future__ import annotations

from gpuheal_sim.simulator import SimulatedCluster

from .conformance import MERGE, STRATEGIC, call


async def test_node_status_writes_keep_metadata_changes_and_drop_spec_changes(cluster: SimulatedCluster) -> None:
    before = (await call(cluster, "GET", "/api/v1/nodes/gpu-node-000")).body
    patch = {
        "metadata": {
            "labels": {"example.com/written-through": "status"},
            "annotations": {"example.com/note": "kept"},
            "uid": before["metadata"]["uid"],
            "creationTimestamp": "2001-01-01T00:00:00Z",
        },
        "spec": {"unschedulable": True},
        "status": {"conditions": [{"type": "NetworkUnavailable", "status": "False", "reason": "RouteCreated"}]},
    }
    reply = await call(cluster, "PATCH", "/api/v1/nodes/gpu-node-000/status", patch, content_type=STRATEGIC)
    assert reply.status == 200, reply.body
    after = (await call(cluster, "GET", "/api/v1/nodes/gpu-node-000")).body
    assert after["metadata"]["labels"]["example.com/written-through"] == "status"
    assert after["metadata"]["annotations"]["example.com/note"] == "kept"
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["metadata"]["creationTimestamp"] == before["metadata"]["creationTimestamp"]
    assert after["spec"] == before["spec"]
    assert "NetworkUnavailable" in {c["type"] for c in after["status"]["conditions"]}


async def test_pod_status_writes_keep_labels_but_not_owner_reference_changes(cluster: SimulatedCluster) -> None:
    pods = (await call(cluster, "GET", "/api/v1/pods")).body["items"]
    owned = next(p for p in pods if p["metadata"].get("ownerReferences"))
    path = f"/api/v1/namespaces/{owned['metadata']['namespace']}/pods/{owned['metadata']['name']}"
    patch = {"metadata": {"labels": {"example.com/status-label": "yes"}, "ownerReferences": None}}
    reply = await call(cluster, "PATCH", path + "/status", patch, content_type=MERGE)
    assert reply.status == 200, reply.body
    after = (await call(cluster, "GET", path)).body
    assert after["metadata"]["labels"]["example.com/status-label"] == "yes"
    assert after["metadata"]["ownerReferences"] == owned["metadata"]["ownerReferences"]
    assert after["spec"] == owned["spec"]


async def test_a_strategic_merge_patch_element_without_its_merge_key_is_refused(cluster: SimulatedCluster) -> None:
    """``staging/src/k8s.io/apimachinery/pkg/util/strategicpatch/patch.go`` (``mergeSliceWith[out]
    SpecialElements``): every element of a list merged by key must carry the key, a ``$patch:
    delete`` one too, else ``mergepatch.ErrNoMergeKey``, which ``handlers/patch.go``
    (``interpretStrategicMergePatchError``) returns unconverted: a 500 Status without a reason."""
    before = (await call(cluster, "GET", "/api/v1/nodes/gpu-node-000")).body
    path = "/api/v1/nodes/gpu-node-000/status"
    for element, shown in (
        ({"status": "False", "reason": "NoType"}, "map[reason:NoType status:False]"),
        ({"$patch": "delete", "status": "False"}, "map[$patch:delete status:False]"),
    ):
        patch = {"status": {"conditions": [{"type": "GpuHealthy", "status": "True"}, element]}}
        reply = await call(cluster, "PATCH", path, patch, content_type=STRATEGIC)
        assert (reply.status, reply.body) == (
            500,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": f"map: {shown} does not contain declared merge key: type",
                "code": 500,
            },
        )
    containers = {"spec": {"containers": [{"image": "nginx:1.25"}]}}
    pods = (await call(cluster, "GET", "/api/v1/pods")).body["items"]
    pod = pods[0]["metadata"]
    reply = await call(
        cluster,
        "PATCH",
        f"/api/v1/namespaces/{pod['namespace']}/pods/{pod['name']}",
        containers,
        content_type=STRATEGIC,
    )
    assert (reply.status, reply.body["message"]) == (
        500,
        "map: map[image:nginx:1.25] does not contain declared merge key: name",
    )
    after = (await call(cluster, "GET", "/api/v1/nodes/gpu-node-000")).body
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
