"""Label and field selectors, parsed from query strings or from ``LabelSelector`` objects.

Label selectors support the full string syntax: ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``,
``k notin (a,b)``, ``k`` (exists) and ``!k`` (does not exist), comma-joined. Field selectors
support ``=``, ``==`` and ``!=`` on the labels each resource declares; an unknown label is a
400 error with the server's message, ``field label not supported: …``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ApiError, bad_request
from .jsonvalues import JsonDict
from .metadata import labels_of
from .resources import ResourceType

_KEY_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]{0,252}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Requirement:
    """One label requirement: ``op`` is one of ``=``, ``!=``, ``in``, ``notin``, ``exists``, ``!``."""

    key: str
    op: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and labels[self.key] in self.values
        # "!=" and "notin" also match objects without the label, as in Kubernetes.
        return not present or labels[self.key] not in self.values


@dataclass(frozen=True)
class LabelSelector:
    """A conjunction of requirements. An empty selector matches everything; ``nothing`` matches none."""

    requirements: tuple[Requirement, ...] = ()
    nothing: bool = False

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.nothing:
            return False
        return all(r.matches(labels) for r in self.requirements)

    def matches_object(self, obj: JsonDict) -> bool:
        return self.matches(labels_of(obj))

    @property
    def empty(self) -> bool:
        return not self.requirements and not self.nothing


EVERYTHING = LabelSelector()


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside ``( … )``."""
    parts: list[str] = []
    depth = 0
    cur: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _check_key(key: str, raw: str) -> str:
    if not _KEY_RE.match(key):
        raise bad_request(f"unable to parse requirement: invalid label key {key!r} in {raw!r}")
    return key


_SET_RE = re.compile(r"^\s*(\S+)\s+(in|notin)\s*\((.*)\)\s*$")


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse a ``labelSelector`` query value; raises a 400 ``ApiError`` when malformed."""
    if text is None or not text.strip():
        return EVERYTHING
    reqs: list[Requirement] = []
    for raw in _split_top_level(text):
        part = raw.strip()
        if not part:
            raise bad_request(f"unable to parse requirement: found '', expected: identifier in {text!r}")
        m = _SET_RE.match(part)
        if m:
            key, op, inner = m.group(1), m.group(2), m.group(3)
            values = frozenset(v.strip() for v in inner.split(",") if v.strip())
            reqs.append(Requirement(_check_key(key, part), op, values))
            continue
        for op in ("!=", "==", "="):
            if op in part:
                key, _, value = part.partition(op)
                value = value.strip()
                if any(c in value for c in "=!() ,"):
                    raise bad_request(f"unable to parse requirement: invalid label value {value!r}")
                reqs.append(Requirement(_check_key(key.strip(), part), "!=" if op == "!=" else "=", frozenset({value})))
                break
        else:
            if part.startswith("!"):
                reqs.append(Requirement(_check_key(part[1:].strip(), part), "!"))
            else:
                reqs.append(Requirement(_check_key(part, part), "exists"))
    return LabelSelector(tuple(reqs))


def selector_from_object(sel: Any) -> LabelSelector:
    """Convert a ``LabelSelector`` object (``matchLabels`` + ``matchExpressions``).

    A null selector matches nothing and an empty one everything, as for PodDisruptionBudgets.
    """
    if sel is None:
        return LabelSelector(nothing=True)
    if not isinstance(sel, dict):
        raise bad_request("selector must be an object")
    reqs: list[Requirement] = []
    for key, value in (sel.get("matchLabels") or {}).items():
        reqs.append(Requirement(str(key), "=", frozenset({str(value)})))
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in sel.get("matchExpressions") or []:
        op = ops.get(str(expr.get("operator")))
        if op is None:
            raise bad_request(f"{expr.get('operator')!r} is not a valid label selector operator")
        reqs.append(Requirement(str(expr.get("key")), op, frozenset(str(v) for v in expr.get("values") or [])))
    return LabelSelector(tuple(reqs))


@dataclass(frozen=True)
class FieldRequirement:
    label: str
    getter: Callable[[JsonDict], str]
    negate: bool
    value: str

    def matches(self, obj: JsonDict) -> bool:
        return (self.getter(obj) == self.value) != self.negate


@dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, obj: JsonDict) -> bool:
        return all(r.matches(obj) for r in self.requirements)

    def exact(self, label: str) -> str | None:
        """The value of an ``label=value`` requirement, for index lookups."""
        for r in self.requirements:
            if r.label == label and not r.negate:
                return r.value
        return None


def parse_field_selector(rt: ResourceType, text: str | None) -> FieldSelector:
    """Parse a ``fieldSelector`` for resource ``rt``; unknown labels are a 400 error."""
    if text is None or not text.strip():
        return FieldSelector()
    reqs: list[FieldRequirement] = []
    for raw in text.split(","):
        part = raw.strip()
        for op in ("!=", "==", "="):
            if op in part:
                label, _, value = part.partition(op)
                label = label.strip()
                getter = rt.fields.get(label)
                if getter is None:
                    raise bad_request(f"field label not supported: {label}")
                reqs.append(FieldRequirement(label, getter, op == "!=", value.strip()))
                break
        else:
            raise ApiError(400, "BadRequest", f"invalid selector: '{text}'; can't understand '{part}'")
    return FieldSelector(tuple(reqs))


def node_selector_matches(term: JsonDict, node: JsonDict) -> bool:
    """One ``nodeSelectorTerm`` (matchExpressions on labels, matchFields on metadata.name)."""
    labels = labels_of(node)
    for expr in term.get("matchExpressions") or []:
        if not _node_expr(expr, labels.get(str(expr.get("key"))), str(expr.get("key")) in labels):
            return False
    name = str((node.get("metadata") or {}).get("name", ""))
    for expr in term.get("matchFields") or []:
        if expr.get("key") != "metadata.name" or not _node_expr(expr, name, True):
            return False
    return True


def _node_expr(expr: JsonDict, value: str | None, present: bool) -> bool:
    op = expr.get("operator")
    values = [str(v) for v in expr.get("values") or []]
    if op == "In":
        return present and value in values
    if op == "NotIn":
        return not present or value not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and present and values:
        try:
            lhs, rhs = int(str(value)), int(values[0])
        except ValueError:
            return False
        return lhs > rhs if op == "Gt" else lhs < rhs
    return False
