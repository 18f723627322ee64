"""Decoding request objects into the API's typed shapes, as the API server's serializers do.

A real API server decodes every body into its Go types, so a field the type does not have is gone
afterwards, and a value the type cannot hold is a decode error. The schema of each served kind
comes from the official client's generated models (``kubernetes.client.models``, generated from the
upstream OpenAPI document): ``openapi_types`` gives each field's type, ``attribute_map`` its JSON
name. It is compiled once per kind and cached.

``decode`` walks an object against that schema and returns the typed object's JSON form:

* unknown fields are dropped and reported as ``unknown field "spec.taints[0].time_added"`` (the
  path format of ``sigs.k8s.io/json`` and of the unstructured converter), duplicate JSON keys as
  ``duplicate field "metadata.labels.a"``; the caller turns them into ``Warning`` headers
  (``fieldValidation=Warn``), a 400 or 422 (``Strict``) or nothing (``Ignore``);
* ``null`` is dropped (omitempty), except where Go writes one (a non-pointer ``metav1.Time``, like
  a pod condition's ``lastProbeTime``); in a ``map[string]string`` or a list it is the zero value;
* ``metav1.Time`` fields are re-written in RFC 3339, UTC, whole seconds (``MarshalJSON``),
  ``metav1.MicroTime`` (``eventTime``, ``series.lastObservedTime``) with exactly six fractional
  digits, and the zero time is dropped; an unparseable time is a ``DecodeError`` with Go's
  ``time.Parse`` message;
* a JSON value of the wrong type is a ``DecodeError`` with ``encoding/json``'s message
  (``json: cannot unmarshal string into Go struct field NodeSpec.spec.unschedulable of type bool``);
  quantities accept numbers (written back as strings) and must parse, int-or-string fields take an
  integer or a string.

Upstream: ``staging/src/k8s.io/apimachinery/pkg/runtime/serializer/json/json.go`` (strict
decoding), ``staging/src/k8s.io/apimachinery/pkg/runtime/converter.go``
(``FromUnstructuredWithValidation``, used for strategic merge patches),
``staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/time.go`` and ``micro_time.go``.
Not modelled: zero values Go would add (``lastProbeTime: null``, ``resources: {}``) are not added
where the client left the field out, quantities are not canonicalised (``0.5`` stays ``"0.5"``, upstream writes
``500m``), and ``int32`` range limits are not enforced (every integer is checked as ``int64``).
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from dataclasses import dataclass
from typing import Any

from .golang import TimeParseError, format_time, parse_time

# --- schema nodes ------------------------------------------------------------------------------------

STR = "string"
INT = "int"
BOOL = "bool"
FLOAT = "float64"
TIME = "time"
MICROTIME = "microtime"
ANY = "any"
QUANTITY = "quantity"
INTSTR = "intstr"


class Obj:
    """A struct: its Go name (for error messages), its fields by JSON name, and the fields whose
    ``null`` survives (non-pointer times)."""

    __slots__ = ("fields", "name", "nullable")

    def __init__(self, name: str) -> None:
        self.name = name
        self.fields: dict[str, Node] = {}
        self.nullable: frozenset[str] = frozenset()


class ListOf:
    __slots__ = ("item",)

    def __init__(self, item: Node) -> None:
        self.item = item


class MapOf:
    __slots__ = ("value",)

    def __init__(self, value: Node) -> None:
        self.value = value


Node = Obj | ListOf | MapOf | str

# Model attributes whose Go type is metav1.MicroTime (the client types both as ``datetime``).
_MICROTIME = {
    ("CoreV1Event", "event_time"),
    ("EventsV1Event", "event_time"),
    ("CoreV1EventSeries", "last_observed_time"),
    ("EventsV1EventSeries", "last_observed_time"),
}
# metav1.Time fields that are not pointers: Go writes their zero value as ``null`` (omitempty does
# not apply to structs), so a ``null`` there is kept; a ``null`` pointer is omitted.
_NULLABLE_TIMES = {
    ("V1ObjectMeta", "creation_timestamp"),
    ("V1PodCondition", "last_probe_time"),
    ("V1PodCondition", "last_transition_time"),
    ("V1NodeCondition", "last_heartbeat_time"),
    ("V1NodeCondition", "last_transition_time"),
    ("V1ContainerStateRunning", "started_at"),
    ("V1ContainerStateTerminated", "started_at"),
    ("V1ContainerStateTerminated", "finished_at"),
    ("CoreV1Event", "first_timestamp"),
    ("CoreV1Event", "last_timestamp"),
    ("CoreV1Event", "event_time"),
    ("CoreV1EventSeries", "last_observed_time"),
    ("EventsV1Event", "event_time"),
    ("EventsV1Event", "deprecated_first_timestamp"),
    ("EventsV1Event", "deprecated_last_timestamp"),
    ("EventsV1EventSeries", "last_observed_time"),
    ("V1NamespaceCondition", "last_transition_time"),
    ("V1DeploymentCondition", "last_update_time"),
    ("V1DeploymentCondition", "last_transition_time"),
    ("V1ReplicaSetCondition", "last_transition_time"),
    ("V1DaemonSetCondition", "last_transition_time"),
    ("V1JobCondition", "last_probe_time"),
    ("V1JobCondition", "last_transition_time"),
    ("V1Condition", "last_transition_time"),
}
# JSON names of resource.Quantity fields and of ResourceList maps (the client types them as ``str``).
_QUANTITY_FIELDS = {"sizeLimit", "limits", "requests", "capacity", "allocatable", "overhead", "allocatedResources"}
_INT64_FIELDS = {
    "generation",
    "observedGeneration",
    "deletionGracePeriodSeconds",
    "activeDeadlineSeconds",
    "terminationGracePeriodSeconds",
    "tolerationSeconds",
    "runAsUser",
    "runAsGroup",
    "fsGroup",
    "supplementalGroups",
    "expirationSeconds",
}
_PREFIX = re.compile(r"^(?:Core|Events|Policy|Apps|Batch|Rbac|Coordination)?V\d+(?:(?:alpha|beta)\d+)?")

_compiled: dict[str, Obj] = {}


def _models() -> Any:
    """``kubernetes.client.models``, imported on first use (it takes seconds to import)."""
    from kubernetes.client import models

    return models


def _go_name(model: str) -> str:
    return _PREFIX.sub("", model) or model


def _compile_type(spec: str, owner: str, attr: str, json_name: str) -> Node:
    if spec.startswith(("List[", "list[")):
        return ListOf(_compile_type(spec[5:-1], owner, attr, json_name))
    if spec.startswith(("Dict[str, ", "dict(str, ")):
        return MapOf(_compile_type(spec[10:-1], owner, attr, json_name))
    if spec == "str":
        return QUANTITY if json_name in _QUANTITY_FIELDS else STR
    if spec == "int":
        return INT
    if spec == "bool":
        return BOOL
    if spec == "float":
        return FLOAT
    if spec == "datetime":
        return MICROTIME if (owner, attr) in _MICROTIME else TIME
    if spec == "object":
        return INTSTR if json_name in ("port", "targetPort", "maxSurge", "maxUnavailable", "minAvailable") else ANY
    if hasattr(_models(), spec):
        return model_schema(spec)
    return ANY


def model_schema(model: str) -> Obj:
    """The compiled schema of a generated client model (``V1Node``), cached."""
    found = _compiled.get(model)
    if found is not None:
        return found
    cls = getattr(_models(), model)
    node = Obj(_go_name(model))
    _compiled[model] = node  # before the fields: types may refer to themselves
    for attr, spec in cls.openapi_types.items():
        json_name = cls.attribute_map[attr]
        node.fields[json_name] = _compile_type(spec, model, attr, json_name)
    node.nullable = frozenset(cls.attribute_map[a] for m, a in _NULLABLE_TIMES if m == model)
    return node


# (group, version, kind) -> model, where the model's name is not ``V1`` + kind.
_MODELS = {("", "v1", "Event"): "CoreV1Event", ("events.k8s.io", "v1", "Event"): "EventsV1Event"}


def schema_for(group: str, version: str, kind: str) -> Obj | None:
    """The schema of a served kind, or None when the client has no model for it (no pruning)."""
    model = _MODELS.get((group, version, kind))
    if model is None:
        model = version[0].upper() + version[1:] + kind
    models = _models()
    if not hasattr(models, model) or not hasattr(getattr(models, model), "openapi_types"):
        return None
    return model_schema(model)


# --- JSON parsing with duplicate keys ------------------------------------------------------------------


class DupDict(dict[str, Any]):
    """A JSON object that had repeated keys (the last value wins, as in Go)."""

    duplicates: list[str]


# encoding/json's scanner (and sigs.k8s.io/json's, which the API server decodes with) refuses a
# document nested deeper than ``maxNestingDepth`` = 10000 with ``invalid character '[' exceeded max
# depth``. The simulator's decoding, patching and validation are recursive, so it stops sooner, at
# ``MAX_NESTING_DEPTH``, with the same error: stricter than the API server, never a 500.
GO_MAX_NESTING_DEPTH = 10000
MAX_NESTING_DEPTH = 100
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]")


def nesting_error(raw: bytes, limit: int = MAX_NESTING_DEPTH) -> str | None:
    """The scanner's error for the bracket that opens level ``limit + 1`` of ``raw``; None if none does."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return None
    depth = 0
    for c in _NOT_BRACKET.sub(b"", _JSON_STRING.sub(b"", raw)):
        if c in b"[{":
            depth += 1
            if depth > limit:
                return f"invalid character '{chr(c)}' exceeded max depth"
        else:
            depth -= 1
    return None


def loads(raw: bytes | str) -> Any:
    """``json.loads`` that marks objects with repeated keys (``DupDict``); a document nested too
    deeply is a ``ValueError`` with the Go scanner's message (``nesting_error``)."""
    deep = nesting_error(raw.encode() if isinstance(raw, str) else raw)
    if deep is not None:
        raise ValueError(deep)

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)
        if len(out) == len(pairs):
            return out
        dup = DupDict(out)
        seen: set[str] = set()
        dup.duplicates = []
        for key, _ in pairs:
            if key in seen and key not in dup.duplicates:
                dup.duplicates.append(key)
            seen.add(key)
        return dup

    return json.loads(raw, object_pairs_hook=hook)


def duplicate_fields(value: Any, path: str = "") -> list[str]:
    """``duplicate field "a.b"`` for every repeated key anywhere in ``value``, in document order."""
    out: list[str] = []
    if isinstance(value, dict):
        if isinstance(value, DupDict):
            out.extend(f'duplicate field "{_join(path, k)}"' for k in value.duplicates)
        for key, item in value.items():
            if isinstance(item, (dict, list)):
                out.extend(duplicate_fields(item, _join(path, key)))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, (dict, list)):
                out.extend(duplicate_fields(item, f"{path}[{i}]"))
    return out


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# --- decoding ------------------------------------------------------------------------------------------


class DecodeError(ValueError):
    """The value cannot be decoded into the typed object; the message is Go's."""


@dataclass
class Decoded:
    obj: Any
    strict: list[str]  # "unknown field ..." / "duplicate field ..." in the order Go reports them


_ABSENT: Any = object()
_ZERO_TIME = _dt.datetime(1, 1, 1, tzinfo=_dt.UTC)
_TIME_FORM = re.compile(r"(\d{4})-(\d\d)-(\d\d)T([01]\d|2[0-3]):[0-5]\d:[0-5]\dZ\Z")
_MICRO_FORM = re.compile(r"(\d{4})-(\d\d)-(\d\d)T([01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{6}Z\Z")


def _valid_date(match: re.Match[str]) -> bool:
    year, month, day = int(match[1]), int(match[2]), int(match[3])
    if not 1 <= month <= 12 or day < 1:
        return False
    if month == 2:
        return day <= (29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28)
    return day <= (30 if month in (4, 6, 9, 11) else 31)


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, list):
        return "array"
    return "object"


def _go_type(node: Node, json_name: str) -> str:
    if isinstance(node, Obj):
        return "v1." + node.name
    if isinstance(node, ListOf):
        return "[]" + _go_type(node.item, json_name)
    if isinstance(node, MapOf):
        return "map[string]" + _go_type(node.value, json_name)
    if node == INT:
        return "int64" if json_name in _INT64_FIELDS else "int32"
    return {STR: "string", BOOL: "bool", FLOAT: "float64", QUANTITY: "resource.Quantity", ANY: "interface {}"}.get(
        node, "string"
    )


class _Walk:
    __slots__ = ("sort", "strict", "track")

    def __init__(self, track: bool, sort: bool) -> None:
        self.track = track
        self.sort = sort
        self.strict: list[str] = []

    def type_error(
        self, value: Any, node: Node, struct: str, fields: str, json_name: str, what: str = ""
    ) -> DecodeError:
        kind = what or _json_kind(value)
        target = _go_type(node, json_name)
        if struct:
            return DecodeError(f"json: cannot unmarshal {kind} into Go struct field {struct}.{fields} of type {target}")
        return DecodeError(f"json: cannot unmarshal {kind} into Go value of type {target}")

    def value(self, node: Node, value: Any, path: str, struct: str, fields: str, json_name: str) -> Any:
        if value is None:
            return _ABSENT
        if isinstance(node, Obj):
            if not isinstance(value, dict):
                raise self.type_error(value, node, struct, fields, json_name)
            return self.obj(node, value, path, fields)
        if isinstance(node, ListOf):
            if not isinstance(value, list):
                raise self.type_error(value, node, struct, fields, json_name)
            out = []
            item = node.item
            for i, element in enumerate(value):
                got = self.value(item, element, f"{path}[{i}]", struct, fields, json_name)
                out.append(_zero(item) if got is _ABSENT else got)
            return out
        if isinstance(node, MapOf):
            if not isinstance(value, dict):
                raise self.type_error(value, node, struct, fields, json_name)
            if self.track and isinstance(value, DupDict):
                self.strict.extend(f'duplicate field "{_join(path, k)}"' for k in value.duplicates)
            entries: dict[str, Any] = {}
            for key, element in value.items():
                got = self.value(node.value, element, _join(path, key), struct, fields, json_name)
                entries[key] = _zero(node.value) if got is _ABSENT else got
            return entries
        return self.scalar(node, value, path, struct, fields, json_name)

    def scalar(self, node: str, value: Any, path: str, struct: str, fields: str, json_name: str) -> Any:
        if node == STR:
            if not isinstance(value, str):
                raise self.type_error(value, node, struct, fields, json_name)
            return value
        if node == BOOL:
            if not isinstance(value, bool):
                raise self.type_error(value, node, struct, fields, json_name)
            return value
        if node == INT:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.type_error(value, node, struct, fields, json_name)
            if isinstance(value, float) or not -(2**63) <= value < 2**63:
                raise self.type_error(value, node, struct, fields, json_name, f"number {value}")
            return value
        if node == FLOAT:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.type_error(value, node, struct, fields, json_name)
            return value
        if node in (TIME, MICROTIME):
            if not isinstance(value, str):
                raise DecodeError(f"json: cannot unmarshal {_json_kind(value)} into Go value of type string")
            canonical = (_MICRO_FORM if node == MICROTIME else _TIME_FORM).match(value)
            if canonical is not None and _valid_date(canonical) and value[:4] != "0001":
                return value  # already what MarshalJSON writes
            try:
                moment = parse_time(value, node == MICROTIME)
            except TimeParseError as exc:
                raise DecodeError(str(exc)) from None
            if moment == _ZERO_TIME:
                return _ABSENT  # the zero time marshals as null
            return format_time(moment, node == MICROTIME)
        if node == QUANTITY:
            if isinstance(value, str):
                return _quantity(value)
            if isinstance(value, int) and not isinstance(value, bool):
                return str(value)
            if isinstance(value, float):
                return str(int(value)) if value.is_integer() else _quantity(repr(value))
            raise DecodeError(_QUANTITY_FORMAT)
        if node == INTSTR:
            if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
                return value
            raise DecodeError(f"json: cannot unmarshal {_json_kind(value)} into Go value of type int32")
        if self.track and isinstance(value, (dict, list)):
            self.strict.extend(duplicate_fields(value, path))
        return value  # free-form

    def obj(self, node: Obj, value: dict[str, Any], path: str, fields: str) -> dict[str, Any]:
        known = node.fields
        track = self.track
        if track and isinstance(value, DupDict):
            self.strict.extend(f'duplicate field "{_join(path, k)}"' for k in value.duplicates)
        out: dict[str, Any] = {}
        keys: Any = sorted(value) if self.sort else value
        for key in keys:
            child = known.get(key)
            if child is None:
                if track:
                    self.strict.append(f'unknown field "{_join(path, key)}"')
                continue
            item = value[key]
            if item is None:
                if key in node.nullable:
                    out[key] = None
                continue
            kind = type(item)
            # Fast paths for the common leaves: a string, a bool, a map of strings.
            if (child is STR and kind is str) or (child is BOOL and kind is bool):
                out[key] = item
                continue
            if (
                kind is dict
                and type(child) is MapOf
                and child.value is STR
                and all(type(v) is str for v in item.values())
            ):
                out[key] = dict(item)
                continue
            got = self.value(child, item, _join(path, key), node.name, _join(fields, key), key)
            if got is not _ABSENT:
                out[key] = got
            elif key in node.nullable:
                out[key] = None  # a zero non-pointer time
        if self.sort:  # keep the object's own key order
            out = {k: out[k] for k in value if k in out}
        return out


_QUANTITY_FORMAT = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
_QUANTITY_SHAPE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eEinumkKMGTP]*[-+]?[0-9]*\Z")
_QUANTITY = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?\Z")


def _quantity(text: str) -> str:
    """``resource.ParseQuantity``'s checks (``ErrFormatWrong``, ``ErrSuffix``); not canonicalised."""
    if _QUANTITY.match(text):
        return text
    if not _QUANTITY_SHAPE.match(text):
        raise DecodeError(_QUANTITY_FORMAT)
    raise DecodeError("unable to parse quantity's suffix")


def _zero(node: Node) -> Any:
    if isinstance(node, (Obj, MapOf)):
        return {}
    if isinstance(node, ListOf):
        return []
    return {STR: "", INT: 0, BOOL: False, FLOAT: 0, QUANTITY: "0", INTSTR: 0}.get(node)


def decode(schema: Obj, obj: dict[str, Any], *, track: bool = True, sort: bool = False) -> Decoded:
    """Decode ``obj`` into ``schema``'s typed form (see the module docstring).

    ``track`` collects the strict-decoding errors (``fieldValidation`` Warn or Strict); ``sort``
    reports them in sorted-key order, as for a JSON or merge patch (whose patched document Go
    re-encodes with sorted keys). Raises ``DecodeError``.
    """
    walk = _Walk(track, sort)
    result = walk.obj(schema, obj, "", "")
    return Decoded(result, walk.strict)
