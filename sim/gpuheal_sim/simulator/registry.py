"""The API server's request semantics on top of the store: what each verb does to each resource.

This is the layer between HTTP and storage, shared by the HTTP handlers and by the simulated
controllers. It implements the rules clients depend on:

* decoding: a client's object (a create or PUT body, or the result of a patch) is decoded into the
  kind's type first (``schema.decode``): unknown fields and repeated keys are dropped and, by
  ``field_validation``, reported into ``warnings`` (``Warn``, the default), rejected (``Strict``:
  400 on create and update, 422 on a patch) or ignored; times are re-written as the Go types write
  them; a value of the wrong type is a 400 (422 on a patch);
* validation: ObjectMeta for every kind, node taints, providerID and podCIDRs, Events, with the
  API server's 422 messages (``validation``);
* create: defaults (pods get the admission defaults), ``generateName``, namespace checks, 409
  AlreadyExists, ``status`` reset where the server resets it;
* update/patch: optimistic concurrency (a stale ``metadata.resourceVersion`` in a PUT body or in a
  patch is 409 Conflict), the main resource ignores ``status`` and the ``status`` subresource
  ignores everything else, ``metadata.generation`` moves on spec changes, pod specs are immutable
  apart from the fields Kubernetes allows;
* delete: graceful pod deletion (``deletionTimestamp`` = now + grace, the pod stays listed until
  the simulated kubelet finishes it; grace 0, unscheduled and finished pods go at once),
  preconditions, finalizers;
* eviction: PodDisruptionBudgets hold on their stored status (429 TooManyRequests with the
  server's message and a ``DisruptionBudget`` cause; the allowed disruption is spent and the pod
  recorded in ``disruptedPods`` in one write), terminating/pending/finished pods are evicted
  without a budget check, evicted pods get the ``DisruptionTarget`` condition.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from . import errors, validation
from .conditions import set_condition
from .disruption import PDB_KEY, check_and_decrement, pdbs_for_pod
from .golang import marshal, sprint
from .identity import new_uid, random_suffix
from .jsonvalues import JsonDict, clone, dig, json_equal
from .metadata import meta
from .objects import apply_pod_defaults, is_ready, is_terminal, is_terminating, qos_class
from .patching import MergeKeyMissing, PatchError, PatchFailed, json_patch, merge_patch, strategic_merge_patch
from .resources import BY_KEY, EVENTS_V1, NAMESPACES, PODS, ResourceType, from_view, to_view
from .schema import DecodeError, DupDict, decode, duplicate_fields, schema_for
from .selectors import FieldSelector, LabelSelector, selector_from_object
from .store import Entry, Store
from .timestamps import rfc3339, utcnow

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"

# Pod spec fields a pod update may change (everything else is immutable).
_POD_MUTABLE = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds", "schedulingGates")


@dataclass
class DeleteOptions:
    grace_period_seconds: int | None = None
    uid: str | None = None
    resource_version: str | None = None
    propagation_policy: str | None = None
    dry_run: bool = False

    @classmethod
    def parse(cls, body: Any, query_grace: str | None, query_policy: str | None, dry_run: bool) -> DeleteOptions:
        opts = cls(dry_run=dry_run)
        if isinstance(body, dict):
            grace = body.get("gracePeriodSeconds")
            if grace is not None:
                opts.grace_period_seconds = _as_int(grace, "gracePeriodSeconds")
            pre = body.get("preconditions") or {}
            if isinstance(pre, dict):
                opts.uid = pre.get("uid")
                opts.resource_version = pre.get("resourceVersion")
            opts.propagation_policy = body.get("propagationPolicy")
            if body.get("dryRun"):
                opts.dry_run = True
        if query_grace is not None:
            opts.grace_period_seconds = _as_int(query_grace, "gracePeriodSeconds")
        if query_policy:
            opts.propagation_policy = query_policy
        return opts


def _as_int(value: Any, field: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise errors.bad_request(f"invalid {field}: {value!r}") from None


@dataclass
class ListResult:
    items: list[Entry]
    resource_version: int
    continue_token: str | None
    remaining: int | None


ReadHook = Callable[[str | None], None]
# (``list`` is a method name inside Registry.)
Warnings = list[str]
Causes = list[validation.Cause]


class Registry:
    """Verbs over the store, with the Kubernetes API server's semantics."""

    def __init__(self, store: Store, rng: random.Random | None = None, *, eviction_retry_after: int = 0) -> None:
        self.store = store
        self.rng = rng or random.Random(0)
        self.eviction_retry_after = eviction_retry_after
        # Storage key -> hook run before reads, so derived state (PDB status) is never stale.
        self.read_hooks: dict[str, ReadHook] = {}

    # --- reads -------------------------------------------------------------------------------------

    def _before_read(self, rt: ResourceType, namespace: str | None) -> None:
        hook = self.read_hooks.get(rt.key)
        if hook is not None:
            hook(namespace)

    def get(self, rt: ResourceType, namespace: str, name: str) -> Entry:
        self._before_read(rt, namespace)
        entry = self.store.get(rt.key, namespace if rt.namespaced else "", name)
        if entry is None:
            raise errors.not_found(rt.qualified, name)
        return entry

    def list(
        self,
        rt: ResourceType,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> ListResult:
        self._before_read(rt, namespace)
        store = self.store
        ns = namespace if rt.namespaced else None
        name = fields.exact("metadata.name")
        node = fields.exact("spec.nodeName") if rt is PODS else None
        if name is not None:
            spaces = [ns] if ns is not None else (store.namespaces_in_use(rt.key) if rt.namespaced else [""])
            candidates = [e for s in sorted(spaces) if (e := store.get(rt.key, s, name)) is not None]
        elif node:
            candidates = sorted(
                (e for e in store.pods_on_node(node) if ns is None or e.namespace == ns),
                key=lambda e: (e.namespace, e.name),
            )
        else:
            candidates = store.sorted_objects(rt.key, ns)
        if continue_token:
            start = _decode_continue(continue_token)
            candidates = [e for e in candidates if (e.namespace, e.name) > start]
        view = rt.storage is not None
        items = [
            e
            for e in candidates
            if (labels.empty or labels.matches_object(e.obj))
            and (not fields.requirements or fields.matches(to_view(rt, e.obj) if view else e.obj))
        ]
        token = None
        remaining = None
        if limit is not None and limit > 0 and len(items) > limit:
            remaining = len(items) - limit
            items = items[:limit]
            last = items[-1]
            token = _encode_continue(last.namespace, last.name)
        return ListResult(items, store.rv, token, remaining)

    # --- create ------------------------------------------------------------------------------------

    def create(
        self,
        rt: ResourceType,
        namespace: str,
        body: Any,
        dry_run: bool = False,
        *,
        field_validation: str = "Warn",
        warnings: Warnings | None = None,
    ) -> Entry:
        """Create from a client's body: decoded into the kind's type (``field_validation``: unknown
        fields warned about into ``warnings``, rejected, or ignored), defaulted, validated, stored."""
        if not isinstance(body, dict):
            raise errors.bad_request(f"the object provided is unrecognized (must be of type {rt.kind})")
        _check_type(rt, body)
        view = _decode_body(rt, body, field_validation, warnings)
        obj = from_view(rt, view)
        obj["kind"], obj["apiVersion"] = BY_KEY[rt.key].kind, BY_KEY[rt.key].api_version
        m = meta(obj)
        if rt.namespaced:
            if m.get("namespace") and m["namespace"] != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            m["namespace"] = namespace
            if self.store.get(NAMESPACES.key, "", namespace) is None:
                raise errors.not_found("namespaces", namespace)
        else:
            m.pop("namespace", None)
        for server_field in (
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "managedFields",
        ):
            m.pop(server_field, None)
        if not m.get("name"):
            if not m.get("generateName"):
                raise errors.invalid(BY_KEY[rt.key].kind, "", self._create_causes(rt, obj, view), BY_KEY[rt.key].group)
            m["name"] = str(m["generateName"]) + random_suffix(self.rng)
        name = str(m["name"])
        m["generation"] = 1
        causes: Causes = []
        try:
            self._prepare_create(rt, obj)
        except errors.ApiError as err:
            if err.code != 422:
                raise
            causes = errors.causes_of(err)
        causes = self._create_causes(rt, obj, view) + causes
        if causes:
            raise errors.invalid(BY_KEY[rt.key].kind, name, causes, BY_KEY[rt.key].group)
        if dry_run:
            if self.store.get(rt.key, m.get("namespace") or "", name) is not None:
                raise errors.already_exists(rt.qualified, name)
            m["uid"] = "00000000-0000-0000-0000-000000000000"
            m["creationTimestamp"] = rfc3339()
            return Entry(obj, self.store.rv)
        return self.store.create(rt.key, obj)

    @staticmethod
    def _create_causes(rt: ResourceType, obj: JsonDict, view: JsonDict) -> Causes:
        source = view.get("deprecatedSource") if rt is EVENTS_V1 else None
        return validation.validate_create(rt.kind, obj, rt.namespaced, v1_event=rt is EVENTS_V1, source=source)

    def _prepare_create(self, rt: ResourceType, obj: JsonDict) -> None:
        key = rt.key
        name = str(obj["metadata"]["name"])
        if key == "pods":
            if not dig(obj, "spec", "containers"):
                raise errors.invalid("Pod", name, [("FieldValueRequired", "spec.containers", "Required value")])
            apply_pod_defaults(obj)
            obj["status"] = {"phase": "Pending", "qosClass": qos_class(obj)}
        elif key == "namespaces":
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
            obj["spec"] = {"finalizers": ["kubernetes"]}
            obj["status"] = {"phase": "Active"}
        elif key == "poddisruptionbudgets.policy":
            obj["status"] = {"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0}
        elif key in ("deployments.apps", "replicasets.apps", "daemonsets.apps", "jobs.batch"):
            if key == "jobs.batch":
                _default_job_selector(obj)
            _check_template_selector(rt, obj)
            spec = obj.setdefault("spec", {})
            if key in ("deployments.apps", "replicasets.apps"):
                spec.setdefault("replicas", 1)
            if key == "jobs.batch":
                spec.setdefault("completions", 1)
                spec.setdefault("parallelism", 1)
                spec.setdefault("backoffLimit", 6)
                template_spec = spec.setdefault("template", {}).setdefault("spec", {})
                template_spec.setdefault("restartPolicy", "Never")
            obj["status"] = {}

    # --- update / patch ----------------------------------------------------------------------------

    def replace(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: Any,
        subresource: str | None = None,
        dry_run: bool = False,
        *,
        field_validation: str = "Warn",
        warnings: Warnings | None = None,
    ) -> Entry:
        """PUT: the body decoded as on create (``field_validation``, ``warnings``), then the update."""
        if not isinstance(body, dict):
            raise errors.bad_request(f"the object provided is unrecognized (must be of type {rt.kind})")
        _check_type(rt, body)
        body = _decode_body(rt, body, field_validation, warnings)
        body_name = dig(body, "metadata", "name")
        if body_name and body_name != name:
            raise errors.bad_request(
                f"the name of the object ({body_name}) does not match the name on the URL ({name})"
            )
        current = self.get(rt, namespace, name)
        rv = dig(body, "metadata", "resourceVersion")
        if rv and str(rv) != str(current.rv):
            raise errors.conflict(rt.qualified, name)
        return self._write(rt, current, from_view(rt, body), subresource, dry_run)

    def patch(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        content_type: str,
        patch: Any,
        subresource: str | None = None,
        dry_run: bool = False,
        *,
        field_validation: str = "Warn",
        warnings: Warnings | None = None,
    ) -> Entry:
        """PATCH: apply the patch to the current object, decode the result (``field_validation``:
        unknown fields and repeated keys into ``warnings``, or a 422, or dropped), then update."""
        current = self.get(rt, namespace, name)
        original = to_view(rt, current.obj)
        try:
            if content_type == JSON_PATCH:
                patched = json_patch(original, patch)
            elif content_type == MERGE_PATCH:
                if not isinstance(patch, dict):
                    raise PatchError("merge patch must be a JSON object")
                patched = merge_patch(original, patch)
            elif content_type == STRATEGIC_PATCH:
                patched = strategic_merge_patch(original, patch, rt.patch_schema)
            else:
                raise errors.unsupported_media_type(content_type)
        except PatchError as exc:
            raise errors.bad_request(str(exc)) from None
        except PatchFailed as exc:
            raise errors.patch_rejected(str(exc)) from None
        except MergeKeyMissing as exc:
            raise errors.ApiError(500, "", str(exc)) from None
        if not isinstance(patched, dict):
            raise errors.bad_request("the patched object is not a JSON object")
        patched = _decode_patched(rt, content_type, patch, patched, field_validation, warnings)
        rv = dig(patched, "metadata", "resourceVersion")
        if rv and str(rv) != str(current.rv):
            raise errors.conflict(rt.qualified, name)
        patched_name = dig(patched, "metadata", "name")
        if patched_name is not None and patched_name != name:
            raise errors.bad_request(
                f"the name of the object ({patched_name}) does not match the name on the URL ({name})"
            )
        return self._write(rt, current, from_view(rt, patched), subresource, dry_run)

    def _write(self, rt: ResourceType, current: Entry, new: JsonDict, subresource: str | None, dry_run: bool) -> Entry:
        old = current.obj
        stored_rt = BY_KEY[rt.key]
        om = old["metadata"]
        nm = _before_update_metadata(dict(new.get("metadata") or {}), om)
        if subresource == "status":
            # The status strategies' PrepareForUpdate: everything but the spec comes from the
            # request (metadata too, as rest.BeforeUpdate leaves it), with each kind's exceptions.
            result = dict(old)
            result["metadata"] = nm
            if "status" in new:
                result["status"] = new["status"]
            else:
                result.pop("status", None)
            for keep in _STATUS_KEEPS_METADATA.get(rt.key, ()):
                if keep in om:
                    nm[keep] = om[keep]
                else:
                    nm.pop(keep, None)
        else:
            result = dict(new)
            result["kind"], result["apiVersion"] = stored_rt.kind, stored_rt.api_version
            result["metadata"] = nm
            if stored_rt.has_status:
                if "status" in old:
                    result["status"] = old["status"]
                else:
                    result.pop("status", None)
            if rt.key == "pods":
                _check_pod_update(old, result)
            if not json_equal(old.get("spec"), result.get("spec")):
                nm["generation"] = int(om.get("generation", 1)) + 1
        causes = validation.validate_update(stored_rt.kind, result, old, rt.namespaced, v1_event=rt is EVENTS_V1)
        if causes:
            raise errors.invalid(stored_rt.kind, current.name, causes, stored_rt.group)
        if dry_run:
            return Entry(result, current.rv)
        if _ready_to_remove(rt.key, result):
            return self.store.delete(rt.key, current.namespace, current.name)
        return self.store.update(rt.key, result)

    # --- internal writes (controllers) -------------------------------------------------------------

    def mutate(self, key: str, namespace: str, name: str, fn: Callable[[JsonDict], bool]) -> Entry | None:
        """Apply ``fn`` to a copy of the object and store it when ``fn`` returns True.

        The controllers' write path: no concurrency check (the event loop serialises writers),
        generation moves on spec changes, and an object ``fn`` left as it was is not written (no
        new resourceVersion, no watch event; ``Store.update``).
        """
        entry = self.store.get(key, namespace, name)
        if entry is None:
            return None
        obj = clone(entry.obj)
        if not fn(obj):
            return entry
        if not json_equal(entry.obj.get("spec"), obj.get("spec")):
            obj["metadata"]["generation"] = int(entry.obj["metadata"].get("generation", 1)) + 1
        if _ready_to_remove(key, obj):
            return self.store.delete(key, namespace, name)
        return self.store.update(key, obj)

    def write_status(self, key: str, namespace: str, name: str, status: JsonDict) -> None:
        def put(obj: JsonDict) -> bool:
            obj["status"] = status
            return True

        self.mutate(key, namespace, name, put)

    def create_object(self, key: str, obj: JsonDict) -> Entry:
        """Create an object on behalf of a controller (already fully shaped)."""
        m = meta(obj)
        m.setdefault("generation", 1)
        if key == "pods":
            apply_pod_defaults(obj)
        return self.store.create(key, obj)

    # --- delete ------------------------------------------------------------------------------------

    def delete(self, rt: ResourceType, namespace: str, name: str, opts: DeleteOptions) -> tuple[Entry, bool]:
        """Delete; returns ``(entry, returns_object)``: pods answer with the pod, others with Status."""
        current = self.get(rt, namespace, name)
        _check_preconditions(rt, current, opts)
        if rt.key == "pods":
            return self.delete_pod(current, opts.grace_period_seconds, opts.dry_run), True
        if opts.dry_run:
            return current, rt.key == "namespaces"
        if rt.key == "namespaces":
            return self._terminate(rt.key, current), True
        if current.obj["metadata"].get("finalizers"):
            return self._terminate(rt.key, current), False
        return self.store.delete(rt.key, current.namespace, current.name), False

    def _terminate(self, key: str, current: Entry) -> Entry:
        if is_terminating(current.obj):
            return current

        def mark(obj: JsonDict) -> bool:
            obj["metadata"]["deletionTimestamp"] = rfc3339()
            obj["metadata"]["deletionGracePeriodSeconds"] = 0
            if key == "namespaces":
                obj.setdefault("status", {})["phase"] = "Terminating"
            return True

        entry = self.mutate(key, current.namespace, current.name, mark)
        assert entry is not None
        return entry

    def delete_pod(self, current: Entry, grace: int | None, dry_run: bool = False) -> Entry:
        """Graceful pod deletion, as the pod storage strategy does it."""
        pod = current.obj
        if grace is None:
            grace = int(dig(pod, "spec", "terminationGracePeriodSeconds") or 30)
        if grace < 0:
            grace = 1
        if not dig(pod, "spec", "nodeName") or is_terminal(pod):
            grace = 0
        if is_terminating(pod):
            old_grace = dig(pod, "metadata", "deletionGracePeriodSeconds")
            if old_grace is not None and grace >= int(old_grace):
                return current
        if dry_run:
            return current
        has_finalizers = bool(pod["metadata"].get("finalizers"))
        if grace == 0 and not has_finalizers:
            return self.store.delete("pods", current.namespace, current.name)

        def mark(obj: JsonDict) -> bool:
            obj["metadata"]["deletionTimestamp"] = rfc3339(utcnow() + timedelta(seconds=grace))
            obj["metadata"]["deletionGracePeriodSeconds"] = grace
            return True

        entry = self.mutate("pods", current.namespace, current.name, mark)
        assert entry is not None
        return entry

    def finish_pod(self, namespace: str, name: str, uid: str) -> None:
        """The kubelet is done with a terminating pod: remove it (or wait for its finalizers)."""
        entry = self.store.get("pods", namespace, name)
        if entry is None or entry.uid != uid:
            return
        if entry.obj["metadata"].get("finalizers"):

            def zero(obj: JsonDict) -> bool:
                obj["metadata"]["deletionGracePeriodSeconds"] = 0
                return True

            self.mutate("pods", namespace, name, zero)
            return
        self.store.delete("pods", namespace, name)

    # --- eviction ----------------------------------------------------------------------------------

    def evict(self, namespace: str, name: str, body: Any, dry_run: bool = False) -> JsonDict:
        """The ``pods/eviction`` subresource (upstream's ``EvictionREST.Create``); the 201 Status or raises."""
        if body is not None and not isinstance(body, dict):
            raise errors.bad_request("the object provided is unrecognized (must be of type Eviction)")
        body = body or {}
        if dig(body, "metadata", "name") != name:
            raise errors.bad_request("name in URL does not match name in Eviction object")
        entry = self.get(PODS, namespace, name)
        opts = DeleteOptions.parse(body.get("deleteOptions"), None, None, dry_run)
        _check_preconditions(PODS, entry, opts)
        pod = entry.obj
        phase = dig(pod, "status", "phase")
        if not (is_terminating(pod) or phase in ("Succeeded", "Failed", "Pending")):  # canIgnorePDB
            self._check_budget(pod, opts.dry_run)
        if not opts.dry_run:
            entry = self._mark_disruption_target(entry)
        self.delete_pod(entry, opts.grace_period_seconds, opts.dry_run)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    def _check_budget(self, pod: JsonDict, dry_run: bool) -> None:
        budgets = pdbs_for_pod(self.store, pod)
        if not budgets:
            return
        if len(budgets) > 1:
            # Upstream returns a failure Status without a reason, which the handler serves as the error.
            raise errors.ApiError(
                500,
                "",
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            )
        pdb = budgets[0].obj
        if not is_ready(pod):
            # An unhealthy pod may go without spending a disruption: always, or when the budget is met.
            status = pdb.get("status") or {}
            desired = int(status.get("desiredHealthy") or 0)
            if dig(pdb, "spec", "unhealthyPodEvictionPolicy") == "AlwaysAllow":
                return
            if int(status.get("currentHealthy") or 0) >= desired > 0:
                return
        new_status = check_and_decrement(pdb, str(pod["metadata"]["name"]), dry_run, self.eviction_retry_after)
        if new_status is not None:
            self.write_status(PDB_KEY, budgets[0].namespace, budgets[0].name, new_status)

    def _mark_disruption_target(self, current: Entry) -> Entry:
        """``addConditionAndDeletePod``: the pod says why it is going before it is deleted."""

        def mark(obj: JsonDict) -> bool:
            conditions = obj.setdefault("status", {}).setdefault("conditions", [])
            return set_condition(
                conditions,
                "DisruptionTarget",
                "True",
                "EvictionByEvictionAPI",
                "Eviction API: evicting",
                rfc3339(),
                probe=True,
            )

        return self.mutate("pods", current.namespace, current.name, mark) or current


# --- decoding into the typed object (fieldValidation) ---------------------------------------------


def _strict_error(strict: list[str]) -> str:
    """``runtime.NewStrictDecodingError(...).Error()``."""
    return "strict decoding error: " + ", ".join(strict)


def _decode_body(rt: ResourceType, body: JsonDict, field_validation: str, warnings: list[str] | None) -> JsonDict:
    """A create or update body as the typed object (``handlers/create.go``, ``update.go``): a decode
    error, or a strict one under ``Strict``, is 400 ``<Kind> in version "v1" cannot be handled as a
    <Kind>: ...`` (``transformDecodeError``); under ``Warn`` strict errors become warnings."""
    schema = schema_for(rt.group, rt.version, rt.kind)
    if schema is None:
        return body
    prefix = f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
    try:
        decoded = decode(schema, body, track=field_validation != "Ignore")
    except DecodeError as exc:
        raise errors.bad_request(prefix + str(exc)) from None
    if decoded.strict:
        if field_validation == "Strict":
            raise errors.bad_request(prefix + _strict_error(decoded.strict))
        if warnings is not None:
            warnings.extend(decoded.strict)
    return dict(decoded.obj)


def _patch_strict_errors(content_type: str, patch: Any) -> list[str]:
    """What strict decoding of the patch document itself finds (``handlers/patch.go``): repeated
    keys, and for a JSON patch the fields an operation does not have."""
    if content_type != JSON_PATCH:
        return duplicate_fields(patch)
    out: list[str] = []
    for i, op in enumerate(patch if isinstance(patch, list) else []):
        if not isinstance(op, dict):
            continue
        if isinstance(op, DupDict):
            out.extend(f'json patch duplicate field "[{i}].{k}"' for k in op.duplicates)
        out.extend(f'json patch unknown field "[{i}].{k}"' for k in op if k not in ("op", "path", "from", "value"))
        out.extend("json patch " + e for e in duplicate_fields(op.get("value"), f"[{i}].value"))
    return out


def _decode_patched(
    rt: ResourceType,
    content_type: str,
    patch: Any,
    patched: JsonDict,
    field_validation: str,
    warnings: list[str] | None,
) -> JsonDict:
    """The patched object as the typed object. Errors are 422 ``"" is invalid: patch: Invalid
    value: ...`` showing the patched JSON (JSON and merge patches) or the patch map as ``%+v``
    (strategic merge patches, whose unknown-field errors come sorted from the converter)."""
    schema = schema_for(rt.group, rt.version, rt.kind)
    if schema is None:
        return patched
    track = field_validation != "Ignore"
    strategic = content_type == STRATEGIC_PATCH

    def rejected(detail: str) -> errors.ApiError:
        shown = sprint(patch) if strategic else marshal(patched)
        return errors.invalid("", "", [validation.invalid("patch", shown, detail)])

    strict = _patch_strict_errors(content_type, patch) if track else []
    try:
        decoded = decode(schema, patched, track=track, sort=not strategic)
    except DecodeError as exc:
        raise rejected(str(exc)) from None
    strict += sorted(decoded.strict) if strategic else decoded.strict
    if strict:
        if field_validation == "Strict":
            raise rejected(_strict_error(strict))
        if warnings is not None:
            warnings.extend(strict)
    return dict(decoded.obj)


# What the status subresource's PrepareForUpdate takes from the stored object besides the spec:
# pods keep their owners (pkg/registry/core/pod/strategy.go podStatusStrategy), deployments their
# labels (pkg/registry/apps/deployment/strategy.go deploymentStatusStrategy). Nodes, PDBs, replica
# sets, daemon sets, jobs and namespaces reset only the spec.
_STATUS_KEEPS_METADATA: dict[str, tuple[str, ...]] = {
    "pods": ("ownerReferences",),
    "deployments.apps": ("labels",),
}


def _before_update_metadata(nm: JsonDict, om: JsonDict) -> JsonDict:
    """What rest.BeforeUpdate sets before validating (a different uid, or a deletion timestamp or
    grace period where there was none, is then an immutable-field 422)."""
    for keep in ("name", "namespace", "creationTimestamp", "generation"):
        if keep in om:
            nm[keep] = om[keep]
        else:
            nm.pop(keep, None)
    if not nm.get("uid") and "uid" in om:
        nm["uid"] = om["uid"]
    if om.get("deletionTimestamp"):
        nm["deletionTimestamp"] = om["deletionTimestamp"]
    if om.get("deletionGracePeriodSeconds") is not None and nm.get("deletionGracePeriodSeconds") is None:
        nm["deletionGracePeriodSeconds"] = om["deletionGracePeriodSeconds"]
    nm.pop("managedFields", None)
    nm.pop("selfLink", None)
    return nm


def _check_type(rt: ResourceType, body: JsonDict) -> None:
    kind = body.get("kind")
    api_version = body.get("apiVersion")
    if kind and kind != rt.kind:
        raise errors.bad_request(
            f"the object provided is unrecognized (must be of type {rt.kind}): kind {kind!r} does not match"
        )
    if api_version and api_version != rt.api_version:
        raise errors.bad_request(
            f"the API version in the data ({api_version}) does not match the expected API version ({rt.api_version})"
        )


def _check_preconditions(rt: ResourceType, current: Entry, opts: DeleteOptions) -> None:
    if opts.uid and opts.uid != current.uid:
        raise errors.conflict(
            rt.qualified,
            current.name,
            f"Precondition failed: UID in precondition: {opts.uid}, UID in object meta: {current.uid}",
        )
    if opts.resource_version and str(opts.resource_version) != str(current.rv):
        raise errors.conflict(
            rt.qualified,
            current.name,
            f"Precondition failed: ResourceVersion in precondition: {opts.resource_version}, "
            f"ResourceVersion in object meta: {current.rv}",
        )


def _ready_to_remove(key: str, obj: JsonDict) -> bool:
    """A deleted object whose last finalizer is gone (pods: once the kubelet has finished too)."""
    m = obj["metadata"]
    if not m.get("deletionTimestamp") or m.get("finalizers"):
        return False
    if key == "namespaces":
        return False  # the namespace controller removes it once it is empty
    return key != "pods" or m.get("deletionGracePeriodSeconds") == 0


def _check_pod_update(old: JsonDict, new: JsonDict) -> None:
    old_spec = dict(old.get("spec") or {})
    new_spec = dict(new.get("spec") or {})
    for field in _POD_MUTABLE:
        old_spec.pop(field, None)
        new_spec.pop(field, None)
    for spec in (old_spec, new_spec):
        spec["containers"] = [{k: v for k, v in c.items() if k != "image"} for c in spec.get("containers") or []]
    if not json_equal(old_spec, new_spec):
        raise errors.invalid(
            "Pod",
            str(old["metadata"]["name"]),
            [
                (
                    "FieldValueForbidden",
                    "spec",
                    "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
                    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
                    "existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was "
                    "previously negative)",
                )
            ],
        )


def _check_template_selector(rt: ResourceType, obj: JsonDict) -> None:
    selector = dig(obj, "spec", "selector")
    template_labels = dig(obj, "spec", "template", "metadata", "labels") or {}
    name = str(obj["metadata"]["name"])
    if selector is None:
        if rt.key == "jobs.batch":
            return
        raise errors.invalid(rt.kind, name, [("FieldValueRequired", "spec.selector", "Required value")], rt.group)
    if not selector_from_object(selector).matches(template_labels):
        raise errors.invalid(
            rt.kind,
            name,
            [
                (
                    "FieldValueInvalid",
                    "spec.template.metadata.labels",
                    f"Invalid value: {json.dumps(template_labels)}: `selector` does not match template `labels`",
                )
            ],
            rt.group,
        )


def _default_job_selector(job: JsonDict) -> None:
    """Jobs get a generated selector on their controller uid, as the Job API does."""
    spec = job.setdefault("spec", {})
    if spec.get("selector") is not None:
        return
    uid = job["metadata"].setdefault("uid", new_uid())
    name = str(job["metadata"]["name"])
    spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    tmeta = spec.setdefault("template", {}).setdefault("metadata", {})
    labels = tmeta.setdefault("labels", {})
    labels.update(
        {
            "batch.kubernetes.io/controller-uid": uid,
            "batch.kubernetes.io/job-name": name,
            "controller-uid": uid,
            "job-name": name,
        }
    )


def _encode_continue(namespace: str, name: str) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "start": [namespace, name]}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_continue(token: str) -> tuple[str, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        start = data["start"]
        return str(start[0]), str(start[1])
    except Exception:
        raise errors.bad_request("continue key is not valid: incorrect encoded start resourceVersion") from None
