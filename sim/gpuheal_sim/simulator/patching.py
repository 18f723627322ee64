"""The three PATCH flavours of the API server: JSON merge, JSON patch and strategic merge.

* ``merge_patch`` is RFC 7386: maps merge recursively, lists are replaced, ``null`` deletes.
* ``json_patch`` is RFC 6902 (``add``/``remove``/``replace``/``move``/``copy``/``test``). Failures
  raise ``PatchFailed``; the API layer answers 422 like the real server.
* ``strategic_merge_patch`` is Kubernetes' own: lists with a ``patchMergeKey`` in the resource's
  schema merge element by element on that key (``status.conditions`` by ``type``), lists of
  primitives marked for merging are unioned, every other list is replaced (``spec.taints`` is
  atomic, so a patch carrying taints replaces them all). The ``$patch`` (``replace``/``delete``),
  ``$retainKeys``, ``$deleteFromPrimitiveList/…`` and ``$setElementOrder/…`` directives are honoured.
"""

from __future__ import annotations

from typing import Any

from .golang import sprint
from .jsonvalues import clone, json_equal
from .resources import PatchSchema


class PatchError(Exception):
    """The patch document itself is malformed (HTTP 400)."""


class PatchFailed(Exception):
    """The patch is well formed but cannot be applied to this object (HTTP 422)."""


class MergeKeyMissing(Exception):
    """A strategic merge patch's element of a list merged by key lacks the key. Upstream's
    ``mergepatch.ErrNoMergeKey`` (``map: %v does not contain declared merge key: %s``), which
    ``interpretStrategicMergePatchError`` (``handlers/patch.go``) passes on as it is: a 500 Status
    without a reason."""

    def __init__(self, element: dict[str, Any], merge_key: str) -> None:
        super().__init__(f"map: {sprint(element)} does not contain declared merge key: {merge_key}")


# --- RFC 7386 --------------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply a JSON merge patch; returns a new value and leaves ``target`` untouched."""
    if not isinstance(patch, dict):
        return clone(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --- RFC 6902 --------------------------------------------------------------------------------------


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str):
        raise PatchError("path must be a string")
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f'invalid JSON pointer "{path}"')
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _index(container: list[Any], segment: str, path: str, allow_end: bool) -> int:
    if segment == "-" and allow_end:
        return len(container)
    if not segment.isdigit() or (len(segment) > 1 and segment.startswith("0")):
        raise PatchFailed(f'invalid array index "{segment}" in "{path}"')
    idx = int(segment)
    limit = len(container) if allow_end else len(container) - 1
    if idx > limit:
        raise PatchFailed(f'index out of bounds: "{path}"')
    return idx


def _parent(doc: Any, parts: list[str], path: str, op: str) -> Any:
    cur = doc
    for token in parts[:-1]:
        if isinstance(cur, dict) and token in cur:
            cur = cur[token]
        elif isinstance(cur, list):
            cur = cur[_index(cur, token, path, False)]
        else:
            raise PatchFailed(f'{op} operation does not apply: doc is missing path: "{path}"')
    return cur


def _get(doc: Any, path: str, op: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return doc
    parent = _parent(doc, parts, path, op)
    token = parts[-1]
    if isinstance(parent, dict) and token in parent:
        return parent[token]
    if isinstance(parent, list):
        return parent[_index(parent, token, path, False)]
    raise PatchFailed(f'{op} operation does not apply: doc is missing path: "{path}"')


def _add(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    parent = _parent(doc, parts, path, "add")
    token = parts[-1]
    if isinstance(parent, dict):
        parent[token] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, token, path, True), value)
    else:
        raise PatchFailed(f'add operation does not apply: doc is missing path: "{path}"')
    return doc


def _remove(doc: Any, path: str, op: str = "remove") -> Any:
    parts = _pointer(path)
    if not parts:
        raise PatchFailed("unable to remove the whole document")
    parent = _parent(doc, parts, path, op)
    token = parts[-1]
    if isinstance(parent, dict) and token in parent:
        del parent[token]
    elif isinstance(parent, list):
        del parent[_index(parent, token, path, False)]
    else:
        raise PatchFailed(f'{op} operation does not apply: doc is missing path: "{path}"')
    return doc


def json_patch(doc: Any, ops: Any) -> Any:
    """Apply an RFC 6902 patch to a copy of ``doc`` and return the result."""
    if not isinstance(ops, list):
        raise PatchError("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    result = clone(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op:
            raise PatchError("Unexpected kind: missing op")
        kind = op["op"]
        path = op.get("path")
        if kind not in ("add", "remove", "replace", "move", "copy", "test"):
            raise PatchError(f"Unexpected kind: {kind}")
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f"{kind} operation missing value")
        if kind == "add":
            result = _add(result, str(path), clone(op["value"]))
        elif kind == "remove":
            result = _remove(result, str(path))
        elif kind == "replace":
            _get(result, str(path), "replace")
            parts = _pointer(path)
            if not parts:
                result = clone(op["value"])
            else:
                parent = _parent(result, parts, str(path), "replace")
                if isinstance(parent, list):
                    parent[_index(parent, parts[-1], str(path), False)] = clone(op["value"])
                else:
                    parent[parts[-1]] = clone(op["value"])
        elif kind in ("move", "copy"):
            src = op.get("from")
            if not isinstance(src, str):
                raise PatchError(f"{kind} operation missing from")
            value = clone(_get(result, src, kind))
            if kind == "move":
                if str(path).startswith(src + "/"):
                    raise PatchFailed(f'move operation does not apply: "{src}" is a prefix of "{path}"')
                result = _remove(result, src, "move")
            result = _add(result, str(path), value)
        else:  # test
            try:
                actual = _get(result, str(path), "test")
            except PatchFailed:
                actual = None
                if op["value"] is not None:
                    raise PatchFailed(f"testing value {path} failed: test failed") from None
            if not json_equal(actual, op["value"]):
                raise PatchFailed(f"testing value {path} failed: test failed")
    return result


# --- strategic merge patch -------------------------------------------------------------------------

_DELETE = object()
_DIRECTIVE = "$patch"
_RETAIN = "$retainKeys"
_DELETE_PRIMITIVES = "$deleteFromPrimitiveList/"
_ORDER = "$setElementOrder/"


def strategic_merge_patch(original: Any, patch: Any, schema: PatchSchema) -> Any:
    """Apply a strategic merge patch to ``original`` (not modified) using ``schema``'s merge keys."""
    if not isinstance(patch, dict):
        raise PatchError("strategic merge patch must be a JSON object")
    merged = _merge_map(original if isinstance(original, dict) else {}, patch, (), schema)
    return {} if merged is _DELETE else merged


def _strip(value: Any) -> Any:
    """A patch value used as-is: directives and nulls inside it are dropped."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if v is not None and not k.startswith("$") and k != _DIRECTIVE}
    if isinstance(value, list):
        return [_strip(v) for v in value if not (isinstance(v, dict) and _DIRECTIVE in v)]
    return value


def _merge_map(orig: dict[str, Any], patch: dict[str, Any], path: tuple[str, ...], schema: PatchSchema) -> Any:
    directive = patch.get(_DIRECTIVE)
    if directive == "delete":
        return _DELETE
    if directive == "replace":
        return _strip({k: v for k, v in patch.items() if k != _DIRECTIVE})
    if directive is not None:
        raise PatchError(f"Unknown patch type: {directive}")
    result = dict(orig)
    orders: dict[str, list[Any]] = {}
    for key, pval in patch.items():
        if key in (_DIRECTIVE, _RETAIN):
            continue
        if key.startswith(_ORDER):
            if isinstance(pval, list):
                orders[key[len(_ORDER) :]] = pval
            continue
        if key.startswith(_DELETE_PRIMITIVES):
            field = key[len(_DELETE_PRIMITIVES) :]
            current = result.get(field)
            if isinstance(current, list) and isinstance(pval, list):
                result[field] = [v for v in current if not any(json_equal(v, d) for d in pval)]
            continue
        child = (*path, key)
        if pval is None:
            result.pop(key, None)
        elif isinstance(pval, dict):
            current = result.get(key)
            merged = _merge_map(current if isinstance(current, dict) else {}, pval, child, schema)
            if merged is _DELETE:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(pval, list):
            result[key] = _merge_list(result.get(key), pval, child, schema)
        else:
            result[key] = pval
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            result[field] = _apply_order(result[field], order, schema.get((*path, field)))
    retain = patch.get(_RETAIN)
    if isinstance(retain, list):
        keep = {str(k) for k in retain}
        result = {k: v for k, v in result.items() if k in keep}
    return result


def _merge_list(orig: Any, patch: list[Any], path: tuple[str, ...], schema: PatchSchema) -> list[Any]:
    if any(isinstance(e, dict) and e.get(_DIRECTIVE) == "replace" for e in patch):
        return [_strip(e) for e in patch if not (isinstance(e, dict) and _DIRECTIVE in e)]
    merge_key = schema.get(path)
    if merge_key is None or not isinstance(orig, list):
        return [_strip(e) for e in patch if not (isinstance(e, dict) and e.get(_DIRECTIVE) == "delete")]
    if merge_key == "":
        out = list(orig)
        for value in patch:
            if not any(json_equal(value, v) for v in out):
                out.append(clone(value))
        return out
    # strategicpatch/patch.go: the elements with a $patch directive first
    # (mergeSliceWithSpecialElements), then the others (mergeSliceWithoutSpecialElements).
    for special in (True, False):
        for elem in patch:
            if isinstance(elem, dict) and (_DIRECTIVE in elem) == special and merge_key not in elem:
                raise MergeKeyMissing(elem, merge_key)
    out = list(orig)
    for elem in patch:
        if not isinstance(elem, dict):
            raise PatchError(f"merging a list by key {merge_key!r} needs objects, got {elem!r}")
        key_value = elem.get(merge_key)
        idx = next(
            (i for i, e in enumerate(out) if isinstance(e, dict) and json_equal(e.get(merge_key), key_value)),
            None,
        )
        if elem.get(_DIRECTIVE) == "delete":
            if idx is not None:
                del out[idx]
            continue
        if idx is None:
            out.append(_strip(elem))
        else:
            merged = _merge_map(out[idx], elem, path, schema)
            if merged is _DELETE:
                del out[idx]
            else:
                out[idx] = merged
    return out


def _apply_order(items: list[Any], order: list[Any], merge_key: str | None) -> list[Any]:
    """Reorder ``items`` so those named in ``order`` come first, in that order."""

    def ident(item: Any) -> Any:
        if merge_key and isinstance(item, dict):
            return item.get(merge_key)
        return item

    wanted = [ident(o) for o in order]
    ranked: list[tuple[int, int, Any]] = []
    for pos, item in enumerate(items):
        key = ident(item)
        rank = next((i for i, w in enumerate(wanted) if json_equal(w, key)), len(wanted))
        ranked.append((rank, pos, item))
    ranked.sort(key=lambda t: (t[0], t[1]))
    return [item for _, _, item in ranked]
