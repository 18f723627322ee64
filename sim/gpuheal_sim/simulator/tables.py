"""Server-side printing: ``meta.k8s.io/v1`` Tables, as ``kubectl get`` asks for them.

kubectl sends ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io, …`` and prints the columns the
server chose. The API server builds them with the printers of ``pkg/printers/internalversion/printers.go``
(nodes: Name, Status, Roles, Age, Version; pods: Name, Ready, Status, Restarts, Age; PDBs: Name, Min
Available, Max Unavailable, Allowed Disruptions, Age; ``-o wide`` adds the priority-1 columns) and,
for resources without a printer, with ``staging/src/k8s.io/apiserver/pkg/registry/rest/table.go``'s
default (Name, Created At). Ages follow ``duration.HumanDuration``. Each row carries the object's
metadata as a ``PartialObjectMetadata`` unless ``includeObject`` says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from .jsonvalues import JsonDict, dig
from .timestamps import parse_rfc3339, utcnow

TABLE_MEDIA = "as=Table"
_NAME = "Name must be unique within a namespace."
_AGE = "CreationTimestamp is a timestamp representing the server time when this object was created."
_NODE_ROLE_PREFIX = "node-role.kubernetes.io/"
_NODE_ROLE_LABEL = "kubernetes.io/role"
_NODE_UNREACHABLE_REASON = "NodeLost"

Cell = str | int


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    description: str
    priority: int = 0
    format: str = ""

    def definition(self) -> JsonDict:
        return {
            "name": self.name,
            "type": self.type,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        }


Printer = Callable[[JsonDict, datetime], list[Cell]]


def wants_table(accept: str) -> bool:
    """Whether the client asked for a meta.k8s.io/v1 Table (its first choice among what it accepts)."""
    for choice in accept.split(","):
        params = {p.strip() for p in choice.split(";")[1:]}
        if "as=Table" in params and "g=meta.k8s.io" in params and "v=v1" in params:
            return True
        if choice.split(";")[0].strip() in ("application/json", "*/*") and not params:
            return False
    return False


def table(kind_key: str, items: Sequence[JsonDict], resource_version: str, include_object: str | None) -> JsonDict:
    """The Table for ``items`` of the resource stored under ``kind_key``."""
    columns, printer = _PRINTERS.get(kind_key, (_DEFAULT_COLUMNS, _default_row))
    now = utcnow()
    rows: list[JsonDict] = []
    for item in items:
        row: JsonDict = {"cells": printer(item, now)}
        attached = _attached(item, include_object)
        if attached is not None:
            row["object"] = attached
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [column.definition() for column in columns],
        "rows": rows,
    }


def _attached(item: JsonDict, include_object: str | None) -> JsonDict | None:
    if include_object == "None":
        return None
    if include_object == "Object":
        return item
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": item.get("metadata", {})}


def human_duration(seconds: float) -> str:
    """``duration.HumanDuration``: how kubectl's AGE column reads."""
    whole = int(seconds)
    if whole < -1:
        return "<invalid>"
    if whole < 0:
        return "0s"
    if whole < 120:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 10:
        rest = whole % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = whole // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def _since(timestamp: object, now: datetime) -> str:
    if not isinstance(timestamp, str) or not timestamp:
        return "<unknown>"
    try:
        return human_duration((now - parse_rfc3339(timestamp)).total_seconds())
    except ValueError:
        return "<unknown>"


def _age(obj: JsonDict, now: datetime) -> str:
    return _since(dig(obj, "metadata", "creationTimestamp"), now)


# --- nodes -------------------------------------------------------------------------------------------

_NODE_COLUMNS = (
    Column("Name", "string", _NAME, format="name"),
    Column("Status", "string", "The status of the node"),
    Column("Roles", "string", "The roles of the node"),
    Column("Age", "string", _AGE),
    Column("Version", "string", "Kubelet Version reported by the node."),
    Column("Internal-IP", "string", "List of addresses reachable to the node.", 1),
    Column("External-IP", "string", "List of addresses reachable to the node.", 1),
    Column("OS-Image", "string", "OS Image reported by the node from /etc/os-release.", 1),
    Column("Kernel-Version", "string", "Kernel Version reported by the node.", 1),
    Column("Container-Runtime", "string", "ContainerRuntime Version reported by the node.", 1),
)


def _node_row(node: JsonDict, now: datetime) -> list[Cell]:
    status = [
        ("Ready" if c.get("status") == "True" else "NotReady")
        for c in dig(node, "status", "conditions") or []
        if c.get("type") == "Ready"
    ][:1] or ["Unknown"]
    if dig(node, "spec", "unschedulable"):
        status.append("SchedulingDisabled")
    labels = dig(node, "metadata", "labels") or {}
    roles = sorted(
        {key[len(_NODE_ROLE_PREFIX) :] for key in labels if key.startswith(_NODE_ROLE_PREFIX)} - {""}
        | ({labels[_NODE_ROLE_LABEL]} if labels.get(_NODE_ROLE_LABEL) else set())
    )
    info = dig(node, "status", "nodeInfo") or {}
    addresses = dig(node, "status", "addresses") or []
    return [
        str(dig(node, "metadata", "name") or ""),
        ",".join(status),
        ",".join(roles) or "<none>",
        _age(node, now),
        str(info.get("kubeletVersion") or ""),
        _address(addresses, "InternalIP"),
        _address(addresses, "ExternalIP"),
        str(info.get("osImage") or "<unknown>"),
        str(info.get("kernelVersion") or "<unknown>"),
        str(info.get("containerRuntimeVersion") or "<unknown>"),
    ]


def _address(addresses: list[JsonDict], kind: str) -> str:
    return next((str(a.get("address")) for a in addresses if a.get("type") == kind), "<none>")


# --- pods --------------------------------------------------------------------------------------------

_POD_COLUMNS = (
    Column("Name", "string", _NAME, format="name"),
    Column("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
    Column("Status", "string", "The aggregate status of the containers in this pod."),
    Column(
        "Restarts",
        "string",
        "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
    ),
    Column("Age", "string", _AGE),
    Column("IP", "string", "podIP address allocated to the pod.", 1),
    Column("Node", "string", "NodeName indicates in which node this pod is scheduled.", 1),
    Column("Nominated Node", "string", "nominatedNodeName is set when this pod preempts other pods on the node.", 1),
    Column("Readiness Gates", "string", "If specified, all readiness gates will be evaluated for pod readiness.", 1),
)


def _pod_row(pod: JsonDict, now: datetime) -> list[Cell]:
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    reason = str(status.get("reason") or status.get("phase") or "")
    restarts = ready = 0
    last_restart = ""
    for container in reversed(status.get("containerStatuses") or []):
        restarts += int(container.get("restartCount") or 0)
        finished = dig(container, "lastState", "terminated", "finishedAt")
        if isinstance(finished, str) and finished > last_restart:
            last_restart = finished
        state = container.get("state") or {}
        waiting, terminated = state.get("waiting"), state.get("terminated")
        if waiting and waiting.get("reason"):
            reason = str(waiting["reason"])
        elif terminated and terminated.get("reason"):
            reason = str(terminated["reason"])
        elif terminated:
            signal = terminated.get("signal")
            reason = f"Signal:{signal}" if signal else f"ExitCode:{terminated.get('exitCode', 0)}"
        elif container.get("ready") and state.get("running") is not None:
            ready += 1
    if dig(pod, "metadata", "deletionTimestamp"):
        if status.get("reason") == _NODE_UNREACHABLE_REASON:
            reason = "Unknown"
        elif status.get("phase") not in ("Succeeded", "Failed"):
            reason = "Terminating"
    restarts_cell = str(restarts)
    if restarts and last_restart:
        restarts_cell = f"{restarts} ({_since(last_restart, now)} ago)"
    gates = spec.get("readinessGates") or []
    return [
        str(dig(pod, "metadata", "name") or ""),
        f"{ready}/{len(spec.get('containers') or [])}",
        reason,
        restarts_cell,
        _age(pod, now),
        str(status.get("podIP") or "<none>"),
        str(spec.get("nodeName") or "<none>"),
        str(status.get("nominatedNodeName") or "<none>"),
        _gates(gates, status.get("conditions") or []),
    ]


def _gates(gates: list[JsonDict], conditions: list[JsonDict]) -> str:
    if not gates:
        return "<none>"
    met = {c.get("type") for c in conditions if c.get("status") == "True"}
    return f"{sum(1 for gate in gates if gate.get('conditionType') in met)}/{len(gates)}"


# --- pod disruption budgets --------------------------------------------------------------------------

_PDB_COLUMNS = (
    Column("Name", "string", _NAME, format="name"),
    Column("Min Available", "string", "The minimum number of pods that must be available."),
    Column("Max Unavailable", "string", "The maximum number of pods that may be unavailable."),
    Column("Allowed Disruptions", "integer", "Calculated number of pods that may be disrupted at this time."),
    Column("Age", "string", _AGE),
)


def _pdb_row(pdb: JsonDict, now: datetime) -> list[Cell]:
    spec = pdb.get("spec") or {}

    def shown(value: object) -> str:
        return "N/A" if value is None else str(value)

    return [
        str(dig(pdb, "metadata", "name") or ""),
        shown(spec.get("minAvailable")),
        shown(spec.get("maxUnavailable")),
        int(dig(pdb, "status", "disruptionsAllowed") or 0),
        _age(pdb, now),
    ]


# --- everything else ---------------------------------------------------------------------------------

_DEFAULT_COLUMNS = (
    Column("Name", "string", _NAME, format="name"),
    Column("Created At", "date", _AGE),
)


def _default_row(obj: JsonDict, now: datetime) -> list[Cell]:
    return [str(dig(obj, "metadata", "name") or ""), str(dig(obj, "metadata", "creationTimestamp") or "")]


_PRINTERS: dict[str, tuple[tuple[Column, ...], Printer]] = {
    "nodes": (_NODE_COLUMNS, _node_row),
    "pods": (_POD_COLUMNS, _pod_row),
    "poddisruptionbudgets.policy": (_PDB_COLUMNS, _pdb_row),
}
