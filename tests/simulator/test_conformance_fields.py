"""Unknown fields, duplicate keys, field validation modes and time formats, as kube-apiserver has them.

A real API server decodes every body into its Go types: unknown fields vanish, and
``fieldValidation`` (default ``Warn``) decides whether they are reported in ``Warning`` headers,
rejected (``Strict``) or ignored. Times come back as the Go types write them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from kubernetes.aio import client
from kubernetes.aio.client.exceptions import ApiException

from gpuheal_sim.simulator import SimulatedCluster
from gpuheal_sim.simulator.resources import ALL, to_view
from gpuheal_sim.simulator.schema import decode, schema_for
from gpuheal_sim.simulator.validation import validate_create

from .conformance import JSON_PATCH, MERGE, STRATEGIC, call, warning
from .conftest import eventually

NODE = "/api/v1/nodes/gpu-node-000"
TAINT_PATCH = {
    "spec": {
        "taints": [
            {
                "key": "gpuheal.io/quarantine",
                "effect": "NoSchedule",
                "time_added": "2024-01-01T00:00:00Z",
                "value": None,
            }
        ]
    }
}


async def test_merge_patch_drops_unknown_field_and_warns(cluster: SimulatedCluster) -> None:
    """Upstream: ``staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go`` (``applyPatch``
    decodes the patched object with the strict serializer and, under the default ``Warn``, calls
    ``addStrictDecodingWarnings`` in ``handlers/rest.go``); the path format is
    ``sigs.k8s.io/json``'s (``kubernetes_patch.go``); the header is ``net.NewWarningHeader``
    (``staging/src/k8s.io/apimachinery/pkg/util/net/http.go``): ``299 - "<text>"``.
    A ``null`` taint value is simply absent afterwards (``Taint.Value`` is ``omitempty``)."""
    reply = await call(cluster, "PATCH", NODE, TAINT_PATCH, content_type=MERGE)
    assert reply.status == 200
    assert reply.warnings == [warning('unknown field "spec.taints[0].time_added"')]
    assert reply.body["spec"]["taints"] == [{"key": "gpuheal.io/quarantine", "effect": "NoSchedule"}]
    stored = (await call(cluster, "GET", NODE)).body
    assert stored["spec"]["taints"] == [{"key": "gpuheal.io/quarantine", "effect": "NoSchedule"}]


async def test_strict_merge_patch_is_422_and_changes_nothing(cluster: SimulatedCluster) -> None:
    """Upstream: ``handlers/patch.go`` (``jsonPatcher.applyPatchToCurrentObject``): with
    ``fieldValidation=Strict`` an unknown field in the patched object is
    ``errors.NewInvalid(schema.GroupKind{}, "", field.Invalid(field.NewPath("patch"), patchedJS,
    "strict decoding error: ..."))``: a 422 whose message starts with ``"" is invalid``. (Creates
    and updates answer 400, see below.)"""
    before = (await call(cluster, "GET", NODE)).body
    reply = await call(cluster, "PATCH", NODE, TAINT_PATCH, content_type=MERGE, params={"fieldValidation": "Strict"})
    assert reply.status == 422
    body = reply.body
    assert body["reason"] == "Invalid" and body["code"] == 422
    assert body["message"].startswith(' "" is invalid: patch: Invalid value: "{')
    assert body["message"].endswith('}": strict decoding error: unknown field "spec.taints[0].time_added"')
    (cause,) = body["details"]["causes"]
    assert cause["reason"] == "FieldValueInvalid" and cause["field"] == "patch"
    assert set(body["details"]) == {"causes"}
    after = (await call(cluster, "GET", NODE)).body
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert "taints" not in after["spec"]


async def test_ignore_drops_unknown_fields_silently(cluster: SimulatedCluster) -> None:
    """Upstream: ``handlers/patch.go``: with ``fieldValidation=Ignore`` the non-strict serializer
    decodes, so unknown fields vanish without a warning."""
    reply = await call(cluster, "PATCH", NODE, TAINT_PATCH, content_type=MERGE, params={"fieldValidation": "Ignore"})
    assert reply.status == 200 and reply.warnings == []
    assert reply.body["spec"]["taints"] == [{"key": "gpuheal.io/quarantine", "effect": "NoSchedule"}]


async def test_unknown_field_validation_value_is_422(cluster: SimulatedCluster) -> None:
    """Upstream: ``staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/validation/validation.go``
    (``ValidateFieldValidation``, called from ``ValidatePatchOptions``; ``handlers/patch.go`` answers
    ``NewInvalid(GroupKind{meta.k8s.io, PatchOptions}, "", errs)``)."""
    reply = await call(
        cluster, "PATCH", NODE, {"metadata": {}}, content_type=MERGE, params={"fieldValidation": "Bogus"}
    )
    assert reply.status == 422
    assert reply.body["message"] == (
        'PatchOptions.meta.k8s.io "" is invalid: fieldValidation: Unsupported value: "Bogus": '
        'supported values: "", "Ignore", "Strict", "Warn"'
    )
    reply = await call(
        cluster, "POST", "/api/v1/namespaces", {"metadata": {"name": "x"}}, params={"fieldValidation": "warn"}
    )
    assert reply.status == 422 and reply.body["message"].startswith('CreateOptions.meta.k8s.io "" is invalid')


async def test_strict_create_and_update_are_400(cluster: SimulatedCluster, core: Any) -> None:
    """Upstream: ``handlers/create.go`` and ``handlers/update.go``: a strict decoding error under
    ``Strict`` goes through ``transformDecodeError`` (``handlers/rest.go``): 400 BadRequest
    ``<Kind> in version "<v>" cannot be handled as a <Kind>: strict decoding error: ...``; the
    error text is ``runtime.NewStrictDecodingError``
    (``staging/src/k8s.io/apimachinery/pkg/runtime/error.go``)."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "strict-pod"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "imagePullPolicyTwo": "Always"}], "bogus": 1},
    }
    reply = await call(cluster, "POST", "/api/v1/namespaces/ml/pods", pod, params={"fieldValidation": "Strict"})
    assert reply.status == 400
    assert reply.body["reason"] == "BadRequest"
    assert reply.body["message"] == (
        'Pod in version "v1" cannot be handled as a Pod: strict decoding error: '
        'unknown field "spec.containers[0].imagePullPolicyTwo", unknown field "spec.bogus"'
    )
    with pytest.raises(ApiException) as err:
        await core.read_namespaced_pod("strict-pod", "ml")
    assert err.value.status == 404
    node = (await call(cluster, "GET", NODE)).body
    node["spec"]["bogus"] = True
    reply = await call(cluster, "PUT", NODE, node, params={"fieldValidation": "Strict"})
    assert reply.status == 400
    assert reply.body["message"] == (
        'Node in version "v1" cannot be handled as a Node: strict decoding error: unknown field "spec.bogus"'
    )
    reply = await call(cluster, "PUT", NODE, node)
    assert reply.status == 200 and reply.warnings == [warning('unknown field "spec.bogus"')]
    assert "bogus" not in reply.body["spec"]


async def test_duplicate_keys(cluster: SimulatedCluster) -> None:
    """Upstream: ``sigs.k8s.io/json`` ``UnmarshalStrict`` (``DisallowDuplicateFields``, used by
    the strict JSON serializer, ``staging/src/k8s.io/apimachinery/pkg/runtime/serializer/json/json.go``,
    and by ``handlers/patch.go`` on merge and strategic patches): a repeated key is
    ``duplicate field "<path>"``; Warn reports it (the last value wins), Strict rejects it."""
    raw = '{"metadata": {"name": "dup-ns", "labels": {"a": "1", "a": "2"}}}'
    reply = await call(cluster, "POST", "/api/v1/namespaces", raw=raw, params={"fieldValidation": "Strict"})
    assert reply.status == 400
    assert reply.body["message"] == (
        'Namespace in version "v1" cannot be handled as a Namespace: strict decoding error: '
        'duplicate field "metadata.labels.a"'
    )
    reply = await call(cluster, "POST", "/api/v1/namespaces", raw=raw)
    assert reply.status == 201
    assert reply.warnings == [warning('duplicate field "metadata.labels.a"')]
    assert reply.body["metadata"]["labels"]["a"] == "2"
    patch = '{"metadata": {"labels": {"b": "1", "b": "2"}}}'
    reply = await call(cluster, "PATCH", NODE, raw=patch, content_type=MERGE, params={"fieldValidation": "Strict"})
    assert reply.status == 422
    assert reply.body["message"].endswith(': strict decoding error: duplicate field "metadata.labels.b"')
    reply = await call(cluster, "PATCH", NODE, raw=patch, content_type=STRATEGIC)
    assert reply.status == 200 and reply.warnings == [warning('duplicate field "metadata.labels.b"')]


async def test_strategic_merge_patch_reports_unknown_fields_sorted(cluster: SimulatedCluster) -> None:
    """Upstream: ``handlers/patch.go`` (``applyPatchToObject``:
    ``DefaultUnstructuredConverter.FromUnstructuredWithValidation``), whose unknown-field errors
    are sorted (``staging/src/k8s.io/apimachinery/pkg/runtime/converter.go``); under Strict the
    422 shows the patch as Go's ``%+v`` of the patch map."""
    patch = {"spec": {"zeta": 1, "alpha": {"x": 1}}, "metadata": {"labels": {"k": "v"}, "bogus": "b"}}
    reply = await call(cluster, "PATCH", NODE, patch, content_type=STRATEGIC)
    assert reply.status == 200
    assert reply.warnings == [
        warning('unknown field "metadata.bogus"'),
        warning('unknown field "spec.alpha"'),
        warning('unknown field "spec.zeta"'),
    ]
    assert reply.body["metadata"]["labels"]["k"] == "v"
    reply = await call(cluster, "PATCH", NODE, patch, content_type=STRATEGIC, params={"fieldValidation": "Strict"})
    assert reply.status == 422
    assert reply.body["message"] == (
        ' "" is invalid: patch: Invalid value: "map[metadata:map[bogus:b labels:map[k:v]] spec:map[alpha:map[x:1] zeta:1]]": '
        'strict decoding error: unknown field "metadata.bogus", unknown field "spec.alpha", unknown field "spec.zeta"'
    )


async def test_json_patch_reports_op_fields_and_unknown_paths(cluster: SimulatedCluster) -> None:
    """Upstream: ``handlers/patch.go`` (``applyJSPatch``: ops are strictly decoded into
    ``jsonPatchOp`` and their errors prefixed ``json patch``; the patched object is then strictly
    decoded)."""
    ops = [
        {"op": "add", "path": "/metadata/labels/x", "value": "y", "comment": "why"},
        {"op": "add", "path": "/spec/bogus", "value": 1},
    ]
    reply = await call(cluster, "PATCH", NODE, ops, content_type=JSON_PATCH)
    assert reply.status == 200
    assert reply.warnings == [warning('json patch unknown field "[0].comment"'), warning('unknown field "spec.bogus"')]
    assert reply.body["metadata"]["labels"]["x"] == "y" and "bogus" not in reply.body["spec"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "extra-node"}}),
        (
            "/api/v1/namespaces/ml/pods",
            {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
        ),
        (
            "/api/v1/namespaces/default/events",
            {"metadata": {"name": "e"}, "involvedObject": {"kind": "Node", "name": "gpu-node-000"}, "reason": "R"},
        ),
        (
            "/apis/events.k8s.io/v1/namespaces/default/events",
            {
                "metadata": {"name": "e1"},
                "eventTime": "2024-01-01T00:00:00.000000Z",
                "regarding": {"kind": "Node", "name": "gpu-node-000"},
                "reason": "R",
                "action": "A",
                "type": "Normal",
                "reportingController": "gpuheal.io/test",
                "reportingInstance": "test-1",
            },
        ),
        (
            "/apis/policy/v1/namespaces/ml/poddisruptionbudgets",
            {"metadata": {"name": "pdb"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"a": "b"}}}},
        ),
        (
            "/apis/apps/v1/namespaces/ml/deployments",
            {
                "metadata": {"name": "d"},
                "spec": {
                    "selector": {"matchLabels": {"a": "b"}},
                    "template": {
                        "metadata": {"labels": {"a": "b"}},
                        "spec": {"containers": [{"name": "c", "image": "i"}]},
                    },
                    "replicas": 0,
                },
            },
        ),
        (
            "/apis/apps/v1/namespaces/ml/replicasets",
            {
                "metadata": {"name": "rs"},
                "spec": {
                    "selector": {"matchLabels": {"a": "c"}},
                    "template": {
                        "metadata": {"labels": {"a": "c"}},
                        "spec": {"containers": [{"name": "c", "image": "i"}]},
                    },
                    "replicas": 0,
                },
            },
        ),
        (
            "/apis/apps/v1/namespaces/ml/daemonsets",
            {
                "metadata": {"name": "ds"},
                "spec": {
                    "selector": {"matchLabels": {"a": "d"}},
                    "template": {
                        "metadata": {"labels": {"a": "d"}},
                        "spec": {"containers": [{"name": "c", "image": "i"}], "nodeSelector": {"none": "none"}},
                    },
                },
            },
        ),
        (
            "/apis/batch/v1/namespaces/ml/jobs",
            {
                "metadata": {"name": "j"},
                "spec": {
                    "template": {"spec": {"containers": [{"name": "c", "image": "i"}], "restartPolicy": "Never"}},
                    "suspend": True,
                },
            },
        ),
        ("/api/v1/namespaces", {"metadata": {"name": "extra-ns"}}),
    ],
    ids=["node", "pod", "event", "events.k8s.io", "pdb", "deployment", "replicaset", "daemonset", "job", "namespace"],
)
async def test_every_kind_drops_unknown_fields(cluster: SimulatedCluster, path: str, body: dict[str, Any]) -> None:
    """Upstream: ``handlers/create.go`` (strict decoding, ``addStrictDecodingWarnings``) for every
    served kind; errors come in document order (``sigs.k8s.io/json``)."""
    body = json.loads(json.dumps(body))
    body["metadata"]["surprise"] = {"deep": 1}
    body["extraTop"] = "x"
    reply = await call(cluster, "POST", path, body)
    assert reply.status == 201, reply.body
    assert reply.warnings == [warning('unknown field "metadata.surprise"'), warning('unknown field "extraTop"')]
    assert "surprise" not in reply.body["metadata"] and "extraTop" not in reply.body
    name = body["metadata"]["name"]
    stored = (await call(cluster, "GET", f"{path}/{name}")).body
    assert "surprise" not in stored["metadata"] and "extraTop" not in stored
    reply = await call(
        cluster,
        "POST",
        path,
        {**body, "metadata": {**body["metadata"], "name": name + "-2"}},
        params={"fieldValidation": "Strict"},
    )
    assert reply.status == 400
    assert reply.body["message"].endswith(
        'strict decoding error: unknown field "metadata.surprise", unknown field "extraTop"'
    )


async def test_times_are_written_as_the_go_types_write_them(cluster: SimulatedCluster, core: Any) -> None:
    """Upstream: ``staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/time.go`` (``Time.MarshalJSON``:
    UTC, RFC 3339, whole seconds) and ``micro_time.go`` (``MicroTime``: six fractional digits).
    The Python client sends ``datetime.isoformat()`` (``+00:00``); the server answers ``Z``."""
    added = datetime(2024, 5, 1, 12, 34, 56, 789000, tzinfo=timezone(timedelta(hours=2)))
    taint = client.V1Taint(key="gpuheal.io/quarantine", effect="NoExecute", time_added=added)
    await core.patch_node("gpu-node-001", {"spec": {"taints": [taint]}})
    raw = (await call(cluster, "GET", "/api/v1/nodes/gpu-node-001")).body
    assert raw["spec"]["taints"][0]["timeAdded"] == "2024-05-01T10:34:56Z"
    status = {
        "status": {
            "conditions": [{"type": "Probe", "status": "True", "lastHeartbeatTime": "2024-05-01T10:00:00.5+00:00"}]
        }
    }
    reply = await call(cluster, "PATCH", "/api/v1/nodes/gpu-node-001/status", status, content_type=STRATEGIC)
    probe = next(c for c in reply.body["status"]["conditions"] if c["type"] == "Probe")
    assert probe["lastHeartbeatTime"] == "2024-05-01T10:00:00Z"
    event = client.CoreV1Event(
        metadata=client.V1ObjectMeta(name="timed"),
        involved_object=client.V1ObjectReference(kind="Node", name="gpu-node-001"),
        event_time=datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC),
        reason="Probe",
        action="Probe",
        reporting_component="gpuheal.io/test",
        reporting_instance="test-1",
    )
    await core.create_namespaced_event("default", event)
    raw = (await call(cluster, "GET", "/api/v1/namespaces/default/events/timed")).body
    assert raw["eventTime"] == "2024-05-01T10:00:00.123456Z"


async def test_unparseable_time_is_a_decode_error(cluster: SimulatedCluster) -> None:
    """Upstream: ``metav1.Time.UnmarshalJSON`` (``time.Parse(time.RFC3339, ...)``) fails the decode:
    400 from ``handlers/create.go`` (``transformDecodeError``), 422 on a patch
    (``handlers/patch.go``: ``field.Invalid(field.NewPath("patch"), ...)``). ``MicroTime`` needs
    exactly six fractional digits (``RFC3339Micro``)."""
    event: dict[str, Any] = {
        "metadata": {"name": "bad-time"},
        "involvedObject": {"kind": "Node", "name": "gpu-node-000"},
        "firstTimestamp": "yesterday",
    }
    reply = await call(cluster, "POST", "/api/v1/namespaces/default/events", event)
    assert reply.status == 400
    assert reply.body["message"] == (
        'Event in version "v1" cannot be handled as a Event: parsing time "yesterday" as '
        '"2006-01-02T15:04:05Z07:00": cannot parse "yesterday" as "2006"'
    )
    event = {**event, "firstTimestamp": None, "eventTime": "2024-05-01T10:00:00Z"}
    reply = await call(cluster, "POST", "/api/v1/namespaces/default/events", event)
    assert reply.status == 400
    assert reply.body["message"].endswith(
        'parsing time "2024-05-01T10:00:00Z" as "2006-01-02T15:04:05.000000Z07:00": cannot parse "Z" as ".000000"'
    )
    patch = {"spec": {"taints": [{"key": "k", "effect": "NoExecute", "timeAdded": "2024-13-01T00:00:00Z"}]}}
    reply = await call(cluster, "PATCH", NODE, patch, content_type=MERGE)
    assert reply.status == 422
    assert reply.body["message"].endswith('": parsing time "2024-13-01T00:00:00Z": month out of range')
    wrong_type = await call(cluster, "PATCH", NODE, {"spec": {"unschedulable": "yes"}}, content_type=MERGE)
    assert wrong_type.status == 422
    assert wrong_type.body["message"].endswith(
        '": json: cannot unmarshal string into Go struct field NodeSpec.spec.unschedulable of type bool'
    )


async def _async(value: bool) -> bool:
    return value


async def test_what_the_simulator_serves_decodes_unchanged(cluster: SimulatedCluster, core: Any) -> None:
    """Every object the simulated controllers wrote is what a round trip through the Go types
    gives (no field the types lack, times in their marshalled form), so a no-op write stays a no-op,
    and passes validation. Upstream: ``staging/src/k8s.io/apimachinery/pkg/runtime/serializer/json/json.go``,
    ``pkg/apis/core/validation/validation.go``."""

    async def running() -> bool:
        pods = await core.list_namespaced_pod("ml")
        return bool(pods.items) and all(p.status.phase == "Running" for p in pods.items)

    await eventually(running)
    cluster.request_reboot("gpu-node-003")  # the node controller records Events about it
    await eventually(lambda: _async(cluster.store.count("events") > 0))
    checked = 0
    for rt in ALL:
        schema = schema_for(rt.group, rt.version, rt.kind)
        assert schema is not None, rt.qualified
        for entry in cluster.store.sorted_objects(rt.key):
            view = to_view(rt, entry.obj)
            decoded = decode(schema, view)
            assert decoded.strict == [], (rt.qualified, entry.name)
            assert decoded.obj == view, (rt.qualified, entry.name)
            if rt.storage is None:
                assert validate_create(rt.kind, entry.obj, rt.namespaced) == [], (rt.qualified, entry.name)
            checked += 1
    assert checked > 20


async def test_quantities_and_int_or_strings_are_typed(cluster: SimulatedCluster) -> None:
    """Upstream: ``staging/src/k8s.io/apimachinery/pkg/api/resource/quantity.go``
    (``Quantity.UnmarshalJSON``: a number is read as a quantity and written back as a string; a
    malformed one is ``ErrFormatWrong``) and ``staging/src/k8s.io/apimachinery/pkg/util/intstr``
    (``IntOrString``: an integer or a string)."""
    pod: dict[str, Any] = {
        "metadata": {"name": "sized"},
        "spec": {"containers": [{"name": "c", "image": "i", "resources": {"limits": {"nvidia.com/gpu": 1}}}]},
    }
    reply = await call(cluster, "POST", "/api/v1/namespaces/ml/pods", pod)
    assert reply.status == 201, reply.body
    assert reply.body["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    pod["metadata"] = {"name": "oversized"}
    pod["spec"]["containers"][0]["resources"] = {"limits": {"memory": "lots"}}
    reply = await call(cluster, "POST", "/api/v1/namespaces/ml/pods", pod)
    assert reply.status == 400
    assert reply.body["message"] == (
        'Pod in version "v1" cannot be handled as a Pod: quantities must match the regular expression '
        "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )
    pdb = {"metadata": {"name": "half"}, "spec": {"maxUnavailable": True, "selector": {"matchLabels": {"a": "b"}}}}
    reply = await call(cluster, "POST", "/apis/policy/v1/namespaces/ml/poddisruptionbudgets", pdb)
    assert reply.status == 400
    assert reply.body["message"].startswith(
        'PodDisruptionBudget in version "v1" cannot be handled as a PodDisruptionBudget: json: cannot unmarshal bool'
    )
