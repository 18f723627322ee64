"""The API server's request semantics on top of the store: what each verb does to each resource.

This is the layer between HTTP and storage, shared by the HTTP handlers and by the simulated
controllers. It implements the rules clients depend on:

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
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from . import errors
from .conditions import set_condition
from .disruption import PDB_KEY, check_and_decrement, pdbs_for_pod
from .identity import new_uid, random_suffix
from .jsonvalues import JsonDict, clone, dig, json_equal
from .metadata import meta
from .objects import apply_pod_defaults, is_ready, is_terminal, is_terminating, qos_class
from .patching import PatchError, PatchFailed, json_patch, merge_patch, strategic_merge_patch
from .resources import BY_KEY, NAMESPACES, PODS, ResourceType, from_view, to_view
from .selectors import FieldSelector, LabelSelector, selector_from_object
from .store import Entry, Store
from .timestamps import rfc3339, utcnow

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
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

    def create(self, rt: ResourceType, namespace: str, body: Any, dry_run: bool = False) -> Entry:
        if not isinstance(body, dict):
            raise errors.bad_request(f"the object provided is unrecognized (must be of type {rt.kind})")
        obj = from_view(rt, body)
        _check_type(rt, body)
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
        if not m.get("name"):
            if m.get("generateName"):
                m["name"] = str(m["generateName"]) + random_suffix(self.rng)
            else:
                raise errors.invalid(
                    rt.kind,
                    "",
                    [("FieldValueRequired", "metadata.name", "Required value: name or generateName is required")],
                    rt.group,
                )
        name = str(m["name"])
        if rt.key != "events" and not _NAME_RE.match(name):
            raise errors.invalid(
                rt.kind,
                name,
                [
                    (
                        "FieldValueInvalid",
                        "metadata.name",
                        f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric '
                        "characters, '-' or '.', and must start and end with an alphanumeric character",
                    )
                ],
                rt.group,
            )
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
        m["generation"] = 1
        self._prepare_create(rt, obj)
        if dry_run:
            if self.store.get(rt.key, m.get("namespace") or "", name) is not None:
                raise errors.already_exists(rt.qualified, name)
            m["uid"] = "00000000-0000-0000-0000-000000000000"
            m["creationTimestamp"] = rfc3339()
            return Entry(obj, self.store.rv)
        return self.store.create(rt.key, obj)

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
            spec = obj.get("spec") or {}
            if spec.get("minAvailable") is not None and spec.get("maxUnavailable") is not None:
                raise errors.invalid(
                    "PodDisruptionBudget",
                    name,
                    [
                        (
                            "FieldValueInvalid",
                            "spec",
                            "Invalid value: policy.PodDisruptionBudgetSpec: minAvailable and maxUnavailable cannot be both set",
                        )
                    ],
                    "policy",
                )
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
    ) -> Entry:
        if not isinstance(body, dict):
            raise errors.bad_request(f"the object provided is unrecognized (must be of type {rt.kind})")
        _check_type(rt, body)
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
    ) -> Entry:
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
        if not isinstance(patched, dict):
            raise errors.bad_request("the patched object is not a JSON object")
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
        if subresource == "status":
            result = dict(old)
            result["metadata"] = dict(old["metadata"])
            if "status" in new:
                result["status"] = new["status"]
            else:
                result.pop("status", None)
        else:
            result = dict(new)
            result["kind"], result["apiVersion"] = stored_rt.kind, stored_rt.api_version
            nm = dict(new.get("metadata") or {})
            om = old["metadata"]
            for keep in (
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ):
                if keep in om:
                    nm[keep] = om[keep]
                else:
                    nm.pop(keep, None)
            nm.pop("managedFields", None)
            nm.pop("selfLink", None)
            result["metadata"] = nm
            if stored_rt.has_status:
                if "status" in old:
                    result["status"] = old["status"]
                else:
                    result.pop("status", None)
            if rt.key == "pods":
                _check_pod_update(old, result)
            if rt.key == "nodes":
                old_pid = dig(old, "spec", "providerID")
                if old_pid and dig(result, "spec", "providerID") != old_pid:
                    raise errors.invalid(
                        "Node",
                        current.name,
                        [
                            (
                                "FieldValueForbidden",
                                "spec.providerID",
                                'Forbidden: node updates may not change providerID except from "" to valid',
                            )
                        ],
                    )
            if not json_equal(old.get("spec"), result.get("spec")):
                nm["generation"] = int(om.get("generation", 1)) + 1
        if dry_run:
            return Entry(result, current.rv)
        if _ready_to_remove(rt.key, result):
            return self.store.delete(rt.key, current.namespace, current.name)
        return self.store.update(rt.key, result)

    # --- internal writes (controllers) -------------------------------------------------------------

    def mutate(self, key: str, namespace: str, name: str, fn: Callable[[JsonDict], bool]) -> Entry | None:
        """Apply ``fn`` to a copy of the object and store it when ``fn`` returns True.

        The controllers' write path: no concurrency check (the event loop serialises writers),
        generation moves on spec changes.
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
