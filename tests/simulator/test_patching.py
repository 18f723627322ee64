"""The patch engines on their own: RFC 7386, RFC 6902 and strategic merge with Kubernetes' merge keys."""

from __future__ import annotations

from typing import Any

import pytest

from gpuheal_sim.simulator.patching import PatchError, PatchFailed, json_patch, merge_patch, strategic_merge_patch
from gpuheal_sim.simulator.resources import NODES, PODS

NODE: dict[str, Any] = {
    "metadata": {"name": "n1", "labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
    "spec": {"taints": [{"key": "t1", "effect": "NoSchedule"}, {"key": "t2", "effect": "NoExecute"}]},
    "status": {
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady"},
            {"type": "GpuHealthy", "status": "True", "reason": "GpusHealthy"},
        ]
    },
}


def test_merge_patch_replaces_lists_and_null_deletes() -> None:
    out = merge_patch(NODE, {"metadata": {"labels": {"a": None, "c": "3"}}, "spec": {"taints": [{"key": "t3"}]}})
    assert out["metadata"]["labels"] == {"b": "2", "c": "3"}
    assert out["spec"]["taints"] == [{"key": "t3"}]
    assert NODE["metadata"]["labels"] == {"a": "1", "b": "2"}, "the original is untouched"


def test_strategic_merge_taints_are_atomic_conditions_merge_by_type() -> None:
    patch = {
        "spec": {"taints": [{"key": "new", "effect": "NoSchedule"}]},
        "status": {"conditions": [{"type": "GpuHealthy", "status": "False", "reason": "GpuFault"}]},
    }
    out = strategic_merge_patch(NODE, patch, NODES.patch_schema)
    assert out["spec"]["taints"] == [{"key": "new", "effect": "NoSchedule"}]
    conds = {c["type"]: c for c in out["status"]["conditions"]}
    assert conds["Ready"]["status"] == "True"
    assert conds["GpuHealthy"] == {"type": "GpuHealthy", "status": "False", "reason": "GpuFault"}


def test_strategic_merge_directives() -> None:
    out = strategic_merge_patch(
        NODE,
        {
            "metadata": {"finalizers": ["y"], "labels": {"$patch": "replace", "only": "me"}},
            "status": {"conditions": [{"type": "Ready", "$patch": "delete"}]},
        },
        NODES.patch_schema,
    )
    assert out["metadata"]["finalizers"] == ["x", "y"], "primitive lists with a merge strategy are unioned"
    assert out["metadata"]["labels"] == {"only": "me"}
    assert [c["type"] for c in out["status"]["conditions"]] == ["GpuHealthy"]
    out = strategic_merge_patch(NODE, {"$deleteFromPrimitiveList/metadata": None}, NODES.patch_schema)
    assert out["metadata"]["finalizers"] == ["x"]
    out = strategic_merge_patch(
        {"metadata": {"finalizers": ["x", "y"]}}, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}}, {}
    )
    assert out["metadata"]["finalizers"] == ["y"]


def test_strategic_merge_containers_by_name() -> None:
    pod = {"spec": {"containers": [{"name": "a", "image": "x:1", "env": [{"name": "E", "value": "1"}]}]}}
    out = strategic_merge_patch(
        pod,
        {"spec": {"containers": [{"name": "a", "env": [{"name": "F", "value": "2"}]}, {"name": "b", "image": "y"}]}},
        PODS.patch_schema,
    )
    assert [c["name"] for c in out["spec"]["containers"]] == ["a", "b"]
    assert out["spec"]["containers"][0]["image"] == "x:1"
    assert [e["name"] for e in out["spec"]["containers"][0]["env"]] == ["E", "F"]


def test_json_patch_operations() -> None:
    doc = {"a": {"b": [1, 2]}, "c": "x"}
    out = json_patch(
        doc,
        [
            {"op": "add", "path": "/a/b/-", "value": 3},
            {"op": "replace", "path": "/c", "value": "y"},
            {"op": "copy", "from": "/c", "path": "/d"},
            {"op": "move", "from": "/d", "path": "/e~1f"},
            {"op": "remove", "path": "/a/b/0"},
            {"op": "test", "path": "/a/b", "value": [2, 3]},
        ],
    )
    assert out == {"a": {"b": [2, 3]}, "c": "y", "e/f": "y"}
    assert doc == {"a": {"b": [1, 2]}, "c": "x"}


def test_json_patch_failures() -> None:
    with pytest.raises(PatchFailed, match="test failed"):
        json_patch({"a": True}, [{"op": "test", "path": "/a", "value": 1}])
    with pytest.raises(PatchFailed, match="missing path"):
        json_patch({}, [{"op": "remove", "path": "/nope"}])
    with pytest.raises(PatchError):
        json_patch({}, {"op": "add"})
    with pytest.raises(PatchError):
        json_patch({}, [{"op": "frobnicate", "path": "/a"}])
