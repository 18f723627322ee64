"""The resource types the simulated API server serves, and what the server knows about each.

A ``ResourceType`` names a resource the way the REST paths do (group, version, plural), says
whether it is namespaced and which subresources it has, which field selectors it supports, and
how strategic merge patch treats its lists (the ``patchMergeKey`` of each list, from the
Kubernetes Go types). ``events.k8s.io/v1`` events are a second view of the core ``events``
storage, as in a real cluster; the conversion functions live here too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .jsonvalues import JsonDict, dig

# Path (field names from the object root; list elements add nothing) -> patchMergeKey.
# An empty key marks a list of primitives merged as a set (like ``metadata.finalizers``).
PatchSchema = Mapping[tuple[str, ...], str]

_META_SCHEMA: dict[tuple[str, ...], str] = {
    ("metadata", "ownerReferences"): "uid",
    ("metadata", "finalizers"): "",
}

_POD_SPEC_LISTS: dict[tuple[str, ...], str] = {
    ("containers",): "name",
    ("initContainers",): "name",
    ("ephemeralContainers",): "name",
    ("containers", "env"): "name",
    ("initContainers", "env"): "name",
    ("containers", "ports"): "containerPort",
    ("initContainers", "ports"): "containerPort",
    ("containers", "volumeMounts"): "mountPath",
    ("initContainers", "volumeMounts"): "mountPath",
    ("containers", "volumeDevices"): "devicePath",
    ("volumes",): "name",
    ("imagePullSecrets",): "name",
    ("hostAliases",): "ip",
    ("resourceClaims",): "name",
    ("schedulingGates",): "name",
}


def _pod_spec_schema(prefix: tuple[str, ...]) -> dict[tuple[str, ...], str]:
    return {prefix + path: key for path, key in _POD_SPEC_LISTS.items()}


def _schema(*parts: Mapping[tuple[str, ...], str]) -> dict[tuple[str, ...], str]:
    merged = dict(_META_SCHEMA)
    for part in parts:
        merged.update(part)
    return merged


_CONDITIONS: dict[tuple[str, ...], str] = {("status", "conditions"): "type"}

# Field selector getters: label -> value as a string ("" when absent, as the server does).
FieldGetter = Callable[[JsonDict], str]


def _field(*path: str) -> FieldGetter:
    def get(obj: JsonDict) -> str:
        value = dig(obj, *path)
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    return get


_META_FIELDS: dict[str, FieldGetter] = {
    "metadata.name": _field("metadata", "name"),
    "metadata.namespace": _field("metadata", "namespace"),
}


@dataclass(frozen=True)
class ResourceType:
    """One REST resource: ``/api/v1/pods`` is ``ResourceType("", "v1", "pods", "Pod", True)``."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    subresources: frozenset[str] = frozenset()
    fields: Mapping[str, FieldGetter] = field(default_factory=lambda: dict(_META_FIELDS))
    patch_schema: PatchSchema = field(default_factory=lambda: dict(_META_SCHEMA))
    short_names: tuple[str, ...] = ()
    # The storage this resource is a view of (events.k8s.io events are stored as core events).
    storage: str | None = None

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``pods`` or ``deployments.apps``: how error messages name the resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def key(self) -> str:
        """The storage key: objects of views live under the viewed resource's key."""
        return self.storage or self.qualified

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    @property
    def list_kind(self) -> str:
        return self.kind + "List"


POD_FIELDS: dict[str, FieldGetter] = {
    **_META_FIELDS,
    "spec.nodeName": _field("spec", "nodeName"),
    "spec.restartPolicy": _field("spec", "restartPolicy"),
    "spec.schedulerName": _field("spec", "schedulerName"),
    "spec.serviceAccountName": _field("spec", "serviceAccountName"),
    "spec.hostNetwork": lambda obj: "true" if dig(obj, "spec", "hostNetwork") else "false",
    "status.phase": _field("status", "phase"),
    "status.podIP": _field("status", "podIP"),
    "status.nominatedNodeName": _field("status", "nominatedNodeName"),
}

NODE_FIELDS: dict[str, FieldGetter] = {
    "metadata.name": _field("metadata", "name"),
    "spec.unschedulable": lambda obj: "true" if dig(obj, "spec", "unschedulable") else "false",
}

EVENT_FIELDS: dict[str, FieldGetter] = {
    **_META_FIELDS,
    "involvedObject.kind": _field("involvedObject", "kind"),
    "involvedObject.namespace": _field("involvedObject", "namespace"),
    "involvedObject.name": _field("involvedObject", "name"),
    "involvedObject.uid": _field("involvedObject", "uid"),
    "involvedObject.apiVersion": _field("involvedObject", "apiVersion"),
    "involvedObject.resourceVersion": _field("involvedObject", "resourceVersion"),
    "involvedObject.fieldPath": _field("involvedObject", "fieldPath"),
    "reason": _field("reason"),
    "reportingComponent": _field("reportingComponent"),
    "source": _field("source", "component"),
    "type": _field("type"),
}

EVENTS_V1_FIELDS: dict[str, FieldGetter] = {
    **_META_FIELDS,
    "regarding.kind": _field("regarding", "kind"),
    "regarding.namespace": _field("regarding", "namespace"),
    "regarding.name": _field("regarding", "name"),
    "regarding.uid": _field("regarding", "uid"),
    "regarding.apiVersion": _field("regarding", "apiVersion"),
    "regarding.resourceVersion": _field("regarding", "resourceVersion"),
    "regarding.fieldPath": _field("regarding", "fieldPath"),
    "reason": _field("reason"),
    "reportingController": _field("reportingController"),
    "type": _field("type"),
}

NAMESPACE_FIELDS: dict[str, FieldGetter] = {
    "metadata.name": _field("metadata", "name"),
    "status.phase": _field("status", "phase"),
}

_POD_IPS: dict[tuple[str, ...], str] = {("status", "podIPs"): "ip", ("status", "hostIPs"): "ip"}
_NODE_LISTS: dict[tuple[str, ...], str] = {("status", "addresses"): "type", ("spec", "podCIDRs"): ""}
_POD_SCHEMA = _schema(
    _pod_spec_schema(("spec",)),
    _CONDITIONS,
    _POD_IPS,
)
_TEMPLATE_SCHEMA = _schema(_pod_spec_schema(("spec", "template", "spec")), _CONDITIONS)

NAMESPACES = ResourceType(
    "",
    "v1",
    "namespaces",
    "Namespace",
    False,
    frozenset({"status"}),
    NAMESPACE_FIELDS,
    _schema(_CONDITIONS),
    ("ns",),
)
NODES = ResourceType(
    "",
    "v1",
    "nodes",
    "Node",
    False,
    frozenset({"status"}),
    NODE_FIELDS,
    _schema(_CONDITIONS, _NODE_LISTS),
    ("no",),
)
PODS = ResourceType("", "v1", "pods", "Pod", True, frozenset({"status", "eviction"}), POD_FIELDS, _POD_SCHEMA, ("po",))
EVENTS = ResourceType("", "v1", "events", "Event", True, frozenset(), EVENT_FIELDS, _schema(), ("ev",))
EVENTS_V1 = ResourceType(
    "events.k8s.io",
    "v1",
    "events",
    "Event",
    True,
    frozenset(),
    EVENTS_V1_FIELDS,
    _schema(),
    ("ev",),
    storage="events",
)
PDBS = ResourceType(
    "policy",
    "v1",
    "poddisruptionbudgets",
    "PodDisruptionBudget",
    True,
    frozenset({"status"}),
    dict(_META_FIELDS),
    _schema(_CONDITIONS),
    ("pdb",),
)
DEPLOYMENTS = ResourceType(
    "apps",
    "v1",
    "deployments",
    "Deployment",
    True,
    frozenset({"status"}),
    dict(_META_FIELDS),
    _TEMPLATE_SCHEMA,
    ("deploy",),
)
REPLICASETS = ResourceType(
    "apps",
    "v1",
    "replicasets",
    "ReplicaSet",
    True,
    frozenset({"status"}),
    dict(_META_FIELDS),
    _TEMPLATE_SCHEMA,
    ("rs",),
)
DAEMONSETS = ResourceType(
    "apps",
    "v1",
    "daemonsets",
    "DaemonSet",
    True,
    frozenset({"status"}),
    dict(_META_FIELDS),
    _TEMPLATE_SCHEMA,
    ("ds",),
)
JOBS = ResourceType(
    "batch",
    "v1",
    "jobs",
    "Job",
    True,
    frozenset({"status"}),
    {**_META_FIELDS, "status.successful": _field("status", "succeeded")},
    _TEMPLATE_SCHEMA,
)

ALL: tuple[ResourceType, ...] = (
    NAMESPACES,
    NODES,
    PODS,
    EVENTS,
    EVENTS_V1,
    PDBS,
    DEPLOYMENTS,
    REPLICASETS,
    DAEMONSETS,
    JOBS,
)

# (group, version, plural) -> resource type, for routing.
BY_PATH: dict[tuple[str, str, str], ResourceType] = {(r.group, r.version, r.plural): r for r in ALL}

# Storage key -> the resource type whose shape is stored there.
BY_KEY: dict[str, ResourceType] = {r.key: r for r in ALL if r.storage is None}


def group_versions() -> dict[str, list[str]]:
    """Served API groups (``""`` is the core group) and their versions."""
    out: dict[str, list[str]] = {}
    for r in ALL:
        versions = out.setdefault(r.group, [])
        if r.version not in versions:
            versions.append(r.version)
    return out


# --- events.k8s.io/v1 <-> core/v1 conversion -------------------------------------------------------

_CORE_TO_V1 = {
    "involvedObject": "regarding",
    "message": "note",
    "firstTimestamp": "deprecatedFirstTimestamp",
    "lastTimestamp": "deprecatedLastTimestamp",
    "count": "deprecatedCount",
    "source": "deprecatedSource",
    "reportingComponent": "reportingController",
}
_V1_TO_CORE = {v: k for k, v in _CORE_TO_V1.items()}


def event_to_v1(core: JsonDict) -> JsonDict:
    """A stored core/v1 Event as events.k8s.io/v1 shows it."""
    out: JsonDict = {"kind": "Event", "apiVersion": "events.k8s.io/v1"}
    for key, value in core.items():
        if key in ("kind", "apiVersion"):
            continue
        out[_CORE_TO_V1.get(key, key)] = value
    if not out.get("eventTime"):
        # events.k8s.io/v1 requires eventTime, and the Python client rejects a null one: use the
        # event's first timestamp (core events written without eventTime), in MicroTime form.
        first = out.get("deprecatedFirstTimestamp") or dig(core, "metadata", "creationTimestamp")
        if isinstance(first, str) and first.endswith("Z") and "." not in first:
            out["eventTime"] = first[:-1] + ".000000Z"
    return out


def event_from_v1(v1: JsonDict) -> JsonDict:
    """An events.k8s.io/v1 Event converted to the core/v1 shape it is stored in."""
    out: JsonDict = {"kind": "Event", "apiVersion": "v1"}
    for key, value in v1.items():
        if key in ("kind", "apiVersion"):
            continue
        out[_V1_TO_CORE.get(key, key)] = value
    if "reportingComponent" in out and not out.get("source"):
        out["source"] = {"component": out["reportingComponent"]}
    return out


def to_view(rt: ResourceType, stored: JsonDict) -> JsonDict:
    """The stored object as ``rt`` presents it (identity except for converted views)."""
    if rt is EVENTS_V1:
        return event_to_v1(stored)
    return stored


def from_view(rt: ResourceType, obj: JsonDict) -> JsonDict:
    """An object in ``rt``'s shape converted to its storage shape."""
    if rt is EVENTS_V1:
        return event_from_v1(obj)
    return obj


def discovery_resources(group: str, version: str) -> list[JsonDict]:
    """The ``APIResourceList.resources`` entries for one group/version."""
    out: list[JsonDict] = []
    for r in ALL:
        if r.group != group or r.version != version:
            continue
        verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        entry: JsonDict = {
            "name": r.plural,
            "singularName": r.kind.lower(),
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": verbs,
        }
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        out.append(entry)
        for sub in sorted(r.subresources):
            if sub == "status":
                out.append(
                    {
                        "name": f"{r.plural}/status",
                        "singularName": "",
                        "namespaced": r.namespaced,
                        "kind": r.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
            elif sub == "eviction":
                out.append(
                    {
                        "name": f"{r.plural}/eviction",
                        "singularName": "",
                        "namespaced": r.namespaced,
                        "group": "policy",
                        "version": "v1",
                        "kind": "Eviction",
                        "verbs": ["create"],
                    }
                )
    return out
