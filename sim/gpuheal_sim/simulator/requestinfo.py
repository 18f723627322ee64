"""What a request asks for, in the authorizer's terms: verb, API group, resource, subresource, name.

This follows ``staging/src/k8s.io/apiserver/pkg/endpoints/request/requestinfo.go``: a path is a
resource request only under ``/api/<version>/…`` or ``/apis/<group>/<version>/…``; anything shorter
(``/api``, ``/apis/policy/v1``, ``/version``, ``/healthz``) is a non-resource request whose verb is the
lower-cased HTTP method. For resources, POST is ``create``, GET/HEAD ``get`` (``list`` or ``watch``
without a name, by the ``watch`` parameter), PUT ``update``, PATCH ``patch``, DELETE ``delete``
(``deletecollection`` without a name). A list or watch with a ``metadata.name=<n>`` field selector is
about the object ``<n>`` (so a ``resourceNames`` rule can allow it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

_SPECIAL_VERBS = frozenset({"proxy", "watch"})
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
_VERBS = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


@dataclass(frozen=True)
class RequestInfo:
    """``request.RequestInfo``: the attributes the authorizer and the admission chain see."""

    is_resource_request: bool
    path: str
    verb: str
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""

    @property
    def combined_resource(self) -> str:
        """``nodes`` or ``nodes/status``: how RBAC rules name the resource."""
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def _valid_path_segment_name(name: str) -> bool:
    """``path.IsValidPathSegmentName``: not ``.``/``..`` and without ``/`` or ``%``."""
    return bool(name) and name not in (".", "..") and "/" not in name and "%" not in name


def _exact_name(field_selector: str) -> str | None:
    """The value of a ``metadata.name=`` (or ``==``) requirement, when the selector parses."""
    found: str | None = None
    for term in field_selector.split(","):
        term = term.strip()
        if not term:
            return None
        for op in ("!=", "==", "="):
            if op in term:
                key, _, value = term.partition(op)
                break
        else:
            return None  # not a valid field selector: no name (as the Go parser's error does)
        if key.strip() == "metadata.name" and op != "!=":
            found = value.strip()
    return found


def request_info(method: str, path: str, query: Mapping[str, str]) -> RequestInfo:
    """The request's attributes, as ``RequestInfoFactory.NewRequestInfo`` derives them."""
    non_resource = RequestInfo(False, path, method.lower())
    parts = [p for p in path.strip("/").split("/")] if path.strip("/") else []
    if len(parts) < 3 or parts[0] not in ("api", "apis"):
        return non_resource
    prefix, parts = parts[0], parts[1:]
    group = ""
    if prefix == "apis":
        if len(parts) < 3:
            return non_resource
        group, parts = parts[0], parts[1:]
    version, parts = parts[0], parts[1:]
    special = False
    if parts[0] in _SPECIAL_VERBS:
        if len(parts) < 2:
            return RequestInfo(True, path, "", group, version)
        verb, parts, special = parts[0], parts[1:], True
    else:
        verb = _VERBS.get(method.upper(), "")
    namespace = ""
    if parts[0] == "namespaces" and len(parts) > 1:
        namespace = parts[1]
        if len(parts) > 2 and parts[2] not in _NAMESPACE_SUBRESOURCES:
            parts = parts[2:]
    resource = parts[0]
    name = parts[1] if len(parts) >= 2 else ""
    subresource = parts[2] if len(parts) >= 3 and verb != "proxy" else ""
    if not name and verb == "get":
        watch = query.get("watch")
        verb = "list" if watch is None or watch.lower() in ("false", "0") else "watch"
    if not name and verb == "delete":
        verb = "deletecollection"
    if not special and not name and verb in ("list", "watch"):
        selected = _exact_name(query.get("fieldSelector") or "")
        if selected is not None and _valid_path_segment_name(selected):
            name = selected
    return RequestInfo(True, path, verb, group, version, namespace, resource, subresource, name)
