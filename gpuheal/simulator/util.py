"""Small helpers shared by the simulator modules: timestamps, uids, JSON and dotted paths.

Objects inside the simulator are plain JSON-shaped dicts, exactly what the API server would send.
They are treated as immutable once stored: every change builds a fresh copy (``clone``) and stores
that, so a snapshot handed to a watcher or a list response can never change underneath it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import random
import uuid
from typing import Any

JsonDict = dict[str, Any]

# Kubernetes' name-suffix alphabet: no vowels (no accidental words) and no look-alike digits.
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def utcnow() -> _dt.datetime:
    """The current time in UTC (timezone-aware)."""
    return _dt.datetime.now(_dt.UTC)


def rfc3339(moment: _dt.datetime | None = None) -> str:
    """Format a time the way the API server does: whole seconds, UTC, ``Z`` suffix."""
    moment = moment or utcnow()
    return moment.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_micro(moment: _dt.datetime | None = None) -> str:
    """Format a ``MicroTime`` (used by events.k8s.io ``eventTime``)."""
    moment = moment or utcnow()
    return moment.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339(text: str) -> _dt.datetime:
    """Parse an RFC 3339 timestamp as written by ``rfc3339``/``rfc3339_micro`` (or with an offset)."""
    return _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def new_uid() -> str:
    """A fresh object uid (a random UUID, as the API server assigns)."""
    return str(uuid.uuid4())


def random_suffix(rng: random.Random, length: int = 5) -> str:
    """A generated-name suffix like the API server's ``generateName`` (``trainer-7d9f-x2k4q``)."""
    return "".join(rng.choice(_SUFFIX_ALPHABET) for _ in range(length))


def stable_hash(text: str, length: int = 10) -> str:
    """A deterministic short hash in the suffix alphabet (used for pod-template-hash)."""

    digest = int.from_bytes(hashlib.sha256(text.encode()).digest()[:16], "big")
    chars = []
    for _ in range(length):
        digest, rem = divmod(digest, len(_SUFFIX_ALPHABET))
        chars.append(_SUFFIX_ALPHABET[rem])
    return "".join(chars)


def dumps(value: Any) -> bytes:
    """Compact JSON bytes, as the API server writes them."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def clone(value: Any) -> Any:
    """A deep copy of a JSON-shaped value (much faster than ``copy.deepcopy`` for these)."""
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clone(v) for v in value]
    return value


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: unlike ``==``, ``true`` never equals ``1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and bool(a == b)


def dig(obj: Any, *path: str) -> Any:
    """``obj[path[0]][path[1]]…``, or ``None`` where the path is missing."""
    cur = obj
    for key in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(key)
    return cur


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


def find_condition(conditions: Any, ctype: str) -> JsonDict | None:
    """The condition of type ``ctype`` in a conditions list, if present."""
    for cond in conditions or []:
        if isinstance(cond, dict) and cond.get("type") == ctype:
            return cond
    return None


def set_condition(
    conditions: list[JsonDict],
    ctype: str,
    status: str,
    reason: str,
    message: str,
    now: str,
    *,
    heartbeat: bool = False,
    probe: bool = False,
) -> bool:
    """Set a condition in place; ``lastTransitionTime`` moves only when the status changes.

    Returns True when anything changed. ``heartbeat`` adds/refreshes ``lastHeartbeatTime`` (node
    conditions), ``probe`` adds ``lastProbeTime: null`` (pod conditions).
    """
    cond = find_condition(conditions, ctype)
    if cond is None:
        cond = {"type": ctype, "status": status}
        if probe:
            cond["lastProbeTime"] = None
        if heartbeat:
            cond["lastHeartbeatTime"] = now
        cond["lastTransitionTime"] = now
        cond["reason"] = reason
        cond["message"] = message
        conditions.append(cond)
        return True
    changed = False
    if cond.get("status") != status:
        cond["status"] = status
        cond["lastTransitionTime"] = now
        changed = True
    if cond.get("reason") != reason or cond.get("message") != message:
        cond["reason"] = reason
        cond["message"] = message
        changed = True
    if heartbeat and changed:
        cond["lastHeartbeatTime"] = now
    return changed


def int_or_percent(value: Any, total: int, round_up: bool) -> int:
    """Resolve an IntOrString like ``2`` or ``"25%"`` against ``total`` (Kubernetes' rounding)."""
    if isinstance(value, bool):
        raise ValueError(f"invalid value {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.endswith("%"):
        pct = int(value[:-1])
        scaled = pct * total
        if round_up:
            return -(-scaled // 100)
        return scaled // 100
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise ValueError(f"invalid value {value!r}: an integer or a percentage is required")
