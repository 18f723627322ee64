"""422 Invalid with the API server's own messages: taints, labels, annotations, ObjectMeta, Events."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.aio import client
from kubernetes.aio.client.exceptions import ApiException

from gpuheal_sim.simulator import SimulatedCluster

from .conformance import MERGE, call

NODE = "/api/v1/nodes/gpu-node-000"
LABEL_KEY_ERROR = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)


async def _rv(cluster: SimulatedCluster, path: str = NODE) -> str:
    return str((await call(cluster, "GET", path)).body["metadata"]["resourceVersion"])


async def test_unsupported_taint_effect(cluster: SimulatedCluster) -> None:
    """Upstream: ``pkg/apis/core/validation/validation.go`` (``validateNodeTaints`` →
    ``validateTaintEffect``: ``field.NotSupported``; ``ValidateNodeUpdate`` passes
    ``field.NewPath("metadata").Child("taints")``, so the real path is ``metadata.taints``), and
    ``staging/src/k8s.io/apimachinery/pkg/api/errors/errors.go`` (``NewInvalid``)."""
    rv = await _rv(cluster)
    patch = {"spec": {"taints": [{"key": "gpuheal.io/quarantine", "effect": "Bogus"}]}}
    reply = await call(cluster, "PATCH", NODE, patch, content_type=MERGE)
    assert reply.status == 422
    detail = 'Unsupported value: "Bogus": supported values: "NoSchedule", "PreferNoSchedule", "NoExecute"'
    assert reply.body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f'Node "gpu-node-000" is invalid: metadata.taints[0].effect: {detail}',
        "reason": "Invalid",
        "details": {
            "name": "gpu-node-000",
            "kind": "Node",
            "causes": [{"reason": "FieldValueNotSupported", "message": detail, "field": "metadata.taints[0].effect"}],
        },
        "code": 422,
    }
    assert await _rv(cluster) == rv


async def test_duplicate_taint_and_bad_taint_key_and_value(cluster: SimulatedCluster, core: Any) -> None:
    """Upstream: ``pkg/apis/core/validation/validation.go`` (``validateNodeTaints``: key by
    ``ValidateLabelName``, value by ``IsValidLabelValue`` joined with ``;``, a repeated key+effect
    is ``field.Duplicate`` of the internal ``core.Taint`` with the detail "taints must be unique by
    key and effect pair"; the value is printed by ``json.Marshal`` as ``field.Error.ErrorBody``
    does in ``staging/src/k8s.io/apimachinery/pkg/util/validation/field/errors.go``)."""
    taints = [
        {"key": "gpuheal.io/q", "effect": "NoSchedule"},
        {"key": "gpuheal.io/q", "effect": "NoSchedule", "value": "again"},
    ]
    with pytest.raises(ApiException) as err:
        await core.patch_node("gpu-node-000", {"spec": {"taints": taints}})
    assert err.value.status == 422
    body = _json(err.value.body)
    assert body["message"] == (
        'Node "gpu-node-000" is invalid: metadata.taints[1]: Duplicate value: '
        '{"Key":"gpuheal.io/q","Value":"again","Effect":"NoSchedule","TimeAdded":null}: '
        "taints must be unique by key and effect pair"
    )
    assert body["details"]["causes"][0]["reason"] == "FieldValueDuplicate"
    bad = [{"key": "bad key!", "value": "not ok!", "effect": "NoExecute"}]
    reply = await call(cluster, "PATCH", NODE, {"spec": {"taints": bad}}, content_type=MERGE)
    assert reply.status == 422
    value_error = (
        "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
        "start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used "
        "for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
    )
    assert reply.body["message"] == (
        f'Node "gpu-node-000" is invalid: [metadata.taints[0].key: Invalid value: "bad key!": {LABEL_KEY_ERROR}, '
        f'metadata.taints[0].value: Invalid value: "not ok!": {value_error}]'
    )
    assert not (await core.read_node("gpu-node-000")).spec.taints


async def test_bad_label_key_on_update_and_create(cluster: SimulatedCluster, core: Any) -> None:
    """Upstream: ``staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/validation/validation.go``
    (``ValidateLabels``: ``field.Invalid(fldPath, k, msg)`` on ``metadata.labels``) and
    ``staging/src/k8s.io/apiserver/pkg/registry/rest/update.go`` (``validateCommonFields`` runs the
    create- and update-style ObjectMeta checks before ``ValidateNodeUpdate`` runs
    ``ValidateObjectMetaUpdate`` again: the cause is listed three times, the message once,
    ``ErrorList.ToAggregate`` de-duplicating it)."""
    rv = await _rv(cluster)
    reply = await call(cluster, "PATCH", NODE, {"metadata": {"labels": {"bad key!": "x"}}}, content_type=MERGE)
    assert reply.status == 422
    expected = f'metadata.labels: Invalid value: "bad key!": {LABEL_KEY_ERROR}'
    assert reply.body["message"] == f'Node "gpu-node-000" is invalid: {expected}'
    causes = reply.body["details"]["causes"]
    assert (
        causes
        == [{"reason": "FieldValueInvalid", "message": expected.split(": ", 1)[1], "field": "metadata.labels"}] * 3
    )
    assert await _rv(cluster) == rv
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="labelled", labels={"bad key!": "x", "ok": "-bad value"}),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="i")]),
    )
    with pytest.raises(ApiException) as err:
        await core.create_namespaced_pod("ml", pod)
    body = _json(err.value.body)
    assert err.value.status == 422
    assert [c["field"] for c in body["details"]["causes"]] == ["metadata.labels", "metadata.labels"]
    assert body["message"].startswith('Pod "labelled" is invalid: [metadata.labels: Invalid value: "bad key!": ')
    assert 'metadata.labels: Invalid value: "-bad value": a valid label must be' in body["message"]
    with pytest.raises(ApiException) as err:
        await core.read_namespaced_pod("labelled", "ml")
    assert err.value.status == 404


async def test_annotations_keys_and_total_size(cluster: SimulatedCluster, core: Any) -> None:
    """Upstream: ``staging/src/k8s.io/apimachinery/pkg/api/validation/objectmeta.go``
    (``ValidateAnnotations``: keys lower-cased then ``IsQualifiedName``; keys plus values over
    ``TotalAnnotationSizeLimitB`` = 256 KiB is ``field.TooLong``: "may not be more than 262144 bytes")."""
    rv = await _rv(cluster)
    reply = await call(
        cluster, "PATCH", NODE, {"metadata": {"annotations": {"gpuheal.io/blob": "x" * 300_000}}}, content_type=MERGE
    )
    assert reply.status == 422
    assert reply.body["message"] == (
        'Node "gpu-node-000" is invalid: metadata.annotations: Too long: may not be more than 262144 bytes'
    )
    assert reply.body["details"]["causes"][0] == {
        "reason": "FieldValueTooLong",
        "message": "Too long: may not be more than 262144 bytes",
        "field": "metadata.annotations",
    }
    assert await _rv(cluster) == rv
    node = await core.read_node("gpu-node-000")
    assert "gpuheal.io/blob" not in (node.metadata.annotations or {})
    reply = await call(cluster, "PATCH", NODE, {"metadata": {"annotations": {"a/b/c": "x"}}}, content_type=MERGE)
    assert reply.status == 422
    assert reply.body["message"].startswith(
        'Node "gpu-node-000" is invalid: metadata.annotations: Invalid value: "a/b/c": a valid label key must consist of'
    )


async def test_object_meta_on_create_for_every_kind(cluster: SimulatedCluster) -> None:
    """Upstream: ``staging/src/k8s.io/apimachinery/pkg/api/validation/objectmeta.go``
    (``ValidateObjectMetaAccessor``: names by the kind's name function, ``IsDNS1123Subdomain`` or
    for namespaces ``IsDNS1123Label``, in ``staging/src/k8s.io/apimachinery/pkg/util/validation/validation.go``;
    owner references need apiVersion, kind, name and uid; at most one controller), and
    ``pkg/apis/core/validation/validation.go`` (``validateKubeFinalizerName``)."""
    reply = await call(cluster, "POST", "/api/v1/namespaces", {"metadata": {"name": "has.dots"}})
    assert reply.status == 422
    assert (
        reply.body["message"]
        == 'Namespace "has.dots" is invalid: metadata.name: Invalid value: "has.dots": must not contain dots'
    )
    deploy = {
        "metadata": {
            "name": "Bad_Name",
            "finalizers": ["custom"],
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node"}],
        },
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
        },
    }
    reply = await call(cluster, "POST", "/apis/apps/v1/namespaces/ml/deployments", deploy)
    assert reply.status == 422
    body = reply.body
    assert body["message"].startswith(
        'Deployment.apps "Bad_Name" is invalid: [metadata.name: Invalid value: "Bad_Name": '
    )
    assert body["details"]["group"] == "apps" and body["details"]["kind"] == "Deployment"
    assert [c["field"] for c in body["details"]["causes"]] == [
        "metadata.name",
        "metadata.ownerReferences[0].name",
        "metadata.ownerReferences[0].uid",
        "metadata.finalizers[0]",
    ]
    assert body["details"]["causes"][-1]["message"] == (
        'Invalid value: "custom": name is neither a standard finalizer name nor is it fully qualified'
    )


async def test_uid_is_immutable_on_update(cluster: SimulatedCluster) -> None:
    """Upstream: ``staging/src/k8s.io/apimachinery/pkg/api/validation/objectmeta.go``
    (``ValidateObjectMetaAccessorUpdate``: ``ValidateImmutableField`` on uid: "field is immutable")."""
    node = (await call(cluster, "GET", NODE)).body
    node["metadata"]["uid"] = "00000000-0000-0000-0000-00000000dead"
    reply = await call(cluster, "PUT", NODE, node)
    assert reply.status == 422
    assert reply.body["message"] == (
        'Node "gpu-node-000" is invalid: metadata.uid: Invalid value: "00000000-0000-0000-0000-00000000dead": '
        "field is immutable"
    )


async def test_event_namespace_rules(cluster: SimulatedCluster) -> None:
    """Upstream: ``pkg/apis/core/validation/events.go`` (``legacyValidateEvent``): without
    ``eventTime`` an Event about a cluster-scoped object (no involvedObject namespace) lives in
    ``default`` or ``""``, otherwise in its object's namespace; with ``eventTime`` it may also live
    in ``kube-system``, and reportingController (a qualified name), reportingInstance, action and
    reason are required, with length limits."""
    about_node = {"involvedObject": {"kind": "Node", "name": "gpu-node-000"}, "reason": "Probe"}
    reply = await call(cluster, "POST", "/api/v1/namespaces/ml/events", {"metadata": {"name": "n1"}, **about_node})
    assert reply.status == 422
    assert reply.body["message"] == (
        'Event "n1" is invalid: involvedObject.namespace: Invalid value: "": does not match event.namespace'
    )
    reply = await call(cluster, "POST", "/api/v1/namespaces/default/events", {"metadata": {"name": "n1"}, **about_node})
    assert reply.status == 201
    about_pod = {"involvedObject": {"kind": "Pod", "name": "p", "namespace": "batch"}, "reason": "Probe"}
    reply = await call(cluster, "POST", "/api/v1/namespaces/ml/events", {"metadata": {"name": "p1"}, **about_pod})
    assert reply.status == 422
    assert reply.body["details"]["causes"][0]["message"] == 'Invalid value: "batch": does not match event.namespace'
    timed = {"metadata": {"name": "t1"}, **about_node, "eventTime": "2024-05-01T10:00:00.000000Z", "reason": "R" * 129}
    reply = await call(cluster, "POST", "/api/v1/namespaces/ml/events", timed)
    assert reply.status == 422
    assert reply.body["message"] == (
        'Event "t1" is invalid: [involvedObject.namespace: Invalid value: "": does not match event.namespace, '
        "reportingController: Required value, "
        'reportingController: Invalid value: "": name part must be non-empty, '
        "reportingController: Invalid value: \"\": name part must consist of alphanumeric characters, '-', '_' or "
        "'.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', "
        "regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]'), "
        "reportingInstance: Required value, action: Required value, "
        'reason: Invalid value: "": can have at most 128 characters]'
    )
    timed.update(reportingComponent="gpuheal.io/agent", reportingInstance="agent-1", action="Probe", reason="Probe")
    reply = await call(cluster, "POST", "/api/v1/namespaces/kube-system/events", timed)
    assert reply.status == 201, reply.body


async def test_events_k8s_io_strict_rules(cluster: SimulatedCluster) -> None:
    """Upstream: ``pkg/apis/core/validation/events.go`` (``ValidateEventCreate``: through
    events.k8s.io/v1 also ObjectMeta, a required ``eventTime``, type Normal or Warning, and the
    deprecated fields unset; ``ValidateEventUpdate``: those fields are immutable)."""
    event = {
        "metadata": {"name": "v1-event"},
        "regarding": {"kind": "Node", "name": "gpu-node-000"},
        "reason": "Probe",
        "action": "Probe",
        "type": "Bogus",
        "reportingController": "gpuheal.io/agent",
        "reportingInstance": "agent-1",
        "deprecatedCount": 3,
    }
    path = "/apis/events.k8s.io/v1/namespaces/default/events"
    reply = await call(cluster, "POST", path, event)
    assert reply.status == 422
    assert reply.body["message"] == (
        'Event "v1-event" is invalid: [eventTime: Required value, type: Invalid value: "": has invalid value: Bogus, '
        'count: Invalid value: "": needs to be unset]'
    )
    event.update(type="Normal", eventTime="2024-05-01T10:00:00.000000Z")
    del event["deprecatedCount"]
    reply = await call(cluster, "POST", path, event)
    assert reply.status == 201, reply.body
    reply = await call(cluster, "PATCH", f"{path}/v1-event", {"note": "changed"}, content_type=MERGE)
    assert reply.status == 422
    assert reply.body["message"] == 'Event "v1-event" is invalid: message: Invalid value: "changed": field is immutable'
    core = await call(
        cluster, "PATCH", "/api/v1/namespaces/default/events/v1-event", {"message": "ok"}, content_type=MERGE
    )
    assert core.status == 200, "core/v1 updates keep only the legacy rules"


def _json(body: Any) -> Any:
    import json

    return json.loads(str(body))
