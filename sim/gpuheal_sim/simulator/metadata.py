"""Reading an object's ``metadata``: the dict itself, its labels and its controller ownerReference."""

from __future__ import annotations

from .jsonvalues import JsonDict, dig


def meta(obj: JsonDict) -> JsonDict:
    """The object's ``metadata`` dict (created if absent)."""
    m = obj.get("metadata")
    if not isinstance(m, dict):
        m = {}
        obj["metadata"] = m
    return m


def labels_of(obj: JsonDict) -> dict[str, str]:
    labels = dig(obj, "metadata", "labels")
    return labels if isinstance(labels, dict) else {}


def controller_ref(obj: JsonDict) -> JsonDict | None:
    """The ownerReference with ``controller: true``, if any."""
    for ref in dig(obj, "metadata", "ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            return ref
    return None
