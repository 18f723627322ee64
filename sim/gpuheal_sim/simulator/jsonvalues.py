"""JSON-shaped values, the simulator's object representation: encoding, copying, comparing, lookup.

Objects inside the simulator are plain JSON-shaped dicts, exactly what the API server would send.
They are treated as immutable once stored: every change builds a fresh copy (``clone``) and stores
that, so a snapshot handed to a watcher or a list response can never change underneath it.
"""

from __future__ import annotations

import json
from typing import Any

JsonDict = dict[str, Any]


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
