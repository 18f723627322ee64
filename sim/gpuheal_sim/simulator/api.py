"""The Kubernetes REST API over HTTP (aiohttp): paths, verbs, query parameters, watches, errors.

Paths follow the API server's layout (``/api/v1/...``, ``/apis/{group}/{version}/...``, with
``namespaces/{ns}/`` for namespaced resources and ``/{name}/{subresource}``). Responses are what
the real server writes: objects with ``kind``/``apiVersion``, typed lists with
``metadata.resourceVersion`` (and ``continue``), ``Status`` bodies on errors with the matching
HTTP code, ``Warning`` headers (``299 - "unknown field \\"spec.x\\""``) for what ``fieldValidation``
(default ``Warn``) and admission policies report, and chunked watch streams of
``{"type": ..., "object": ...}`` lines.

Every request is authenticated and authorized first (``access``): a bearer token the cluster issued
(401 otherwise; only ``/version`` and the health endpoints take anonymous requests), then RBAC on the
request's attributes (``requestinfo``; 403 with upstream's message), before the path is even resolved,
as kube-apiserver's filter chain does. Writes are then decoded into the API types (``fieldValidation``)
and pass the ValidatingAdmissionPolicies that match them, on the object as it would be stored
(computed with a dry run of the same write).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from . import errors, schema, tables, validation
from .access import AccessControl
from .admission import AdmissionRequest
from .auth import ADMIN, UserInfo
from .jsonvalues import JsonDict, clone, dumps
from .registry import DeleteOptions, ListResult, Registry
from .requestinfo import request_info
from .resources import BY_PATH, ResourceType, discovery_resources, group_versions, to_view
from .selectors import FieldSelector, LabelSelector, parse_field_selector, parse_label_selector
from .simulation import Simulation
from .store import Entry

log = logging.getLogger(__name__)

_JSON = "application/json"


@dataclass
class Target:
    """What a request path addresses."""

    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None


def _headers() -> dict[str, str]:
    return {
        "Content-Type": _JSON,
        "Cache-Control": "no-cache, private",
        "Audit-Id": str(uuid.uuid4()),
        "X-Kubernetes-Pf-Flowschema-Uid": "00000000-0000-0000-0000-000000000001",
        "X-Kubernetes-Pf-Prioritylevel-Uid": "00000000-0000-0000-0000-000000000002",
    }


def raw_response(body: bytes, status: int = 200, warnings: list[str] | None = None) -> web.Response:
    response = web.Response(body=body, status=status, headers=_headers())
    _add_warnings(response, warnings or [])
    return response


def json_response(body: Any, status: int = 200) -> web.Response:
    return raw_response(dumps(body), status)


def error_response(err: errors.ApiError) -> web.Response:
    resp = json_response(err.status(), err.code)
    if err.retry_after:
        resp.headers["Retry-After"] = str(err.retry_after)
    return resp


_WARNING_TOTAL_RUNES = 4 * 1024
_WARNING_ITEM_RUNES = 256


def warning_headers(texts: list[str]) -> list[str]:
    """``Warning`` header values as the API server's warning recorder writes them: code 299, agent
    ``-``, each text once, and when they add up to more than 4096 characters each cut to 256
    (``staging/src/k8s.io/apiserver/pkg/endpoints/filters/warning.go``, ``net.NewWarningHeader``)."""
    unique = [t for i, t in enumerate(texts) if t and t not in texts[:i]]
    if sum(len(t) for t in unique) > _WARNING_TOTAL_RUNES:
        kept: list[str] = []
        total = 0
        for text in unique:
            text = text[:_WARNING_ITEM_RUNES]
            if total >= _WARNING_TOTAL_RUNES:
                break
            kept.append(text)
            total += len(text)
        unique = kept
    return ['299 - "' + t.replace("\\", "\\\\").replace('"', '\\"') + '"' for t in unique if t.isprintable()]


def _add_warnings(resp: web.StreamResponse, warnings: list[str]) -> None:
    for value in warning_headers(warnings):
        resp.headers.add("Warning", value)


_OPTIONS_KIND = {"POST": "CreateOptions", "PUT": "UpdateOptions", "PATCH": "PatchOptions"}


def field_validation(request: web.Request) -> str:
    """The ``fieldValidation`` directive (default ``Warn``); an unknown one is 422 on the
    request's options (``ValidateFieldValidation``, ``handlers/create.go``, ``update.go``, ``patch.go``)."""
    value = request.query.get("fieldValidation", "")
    causes = validation.validate_field_validation(value)
    if causes:
        raise errors.invalid(_OPTIONS_KIND.get(request.method, "CreateOptions"), "", causes, "meta.k8s.io")
    return value or "Warn"


def parse_path(path: str) -> Target | JsonDict:
    """Resolve an API path to a ``Target``, or to a discovery document; 404 when not served."""
    parts = [p for p in path.strip("/").split("/") if p]
    versions = group_versions()
    if parts[0] == "api":
        if len(parts) == 1:
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
            }
        if parts[1] != "v1":
            raise errors.resource_not_found()
        group, version, rest = "", "v1", parts[2:]
    else:
        if len(parts) == 1:
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [_group(g, vs) for g, vs in sorted(versions.items()) if g],
            }
        group = parts[1]
        if group not in versions or not group:
            raise errors.resource_not_found()
        if len(parts) == 2:
            return dict(_group(group, versions[group]), kind="APIGroup", apiVersion="v1")
        version, rest = parts[2], parts[3:]
        if version not in versions[group]:
            raise errors.resource_not_found()
    if not rest:
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": discovery_resources(group, version),
        }
    namespace: str | None = None
    if rest[0] == "namespaces" and len(rest) >= 3 and not (len(rest) == 3 and rest[2] in ("status", "finalize")):
        namespace, rest = rest[1], rest[2:]
    if len(rest) > 3:
        raise errors.resource_not_found()
    rt = BY_PATH.get((group, version, rest[0]))
    if rt is None:
        raise errors.resource_not_found()
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if (namespace is not None and not rt.namespaced) or (sub is not None and sub not in rt.subresources):
        raise errors.resource_not_found()
    if rt.namespaced and namespace is None and name is not None:
        raise errors.resource_not_found()
    return Target(rt, namespace, name, sub)


def _group(group: str, versions: list[str]) -> JsonDict:
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": entries, "preferredVersion": entries[0]}


# The API server's MaxRequestBodyBytes (staging/src/k8s.io/apiserver/pkg/server/config.go); the
# application's client_max_size, so a bigger body is never read whole.
MAX_REQUEST_BODY_BYTES = 3 * 1024 * 1024


async def _body(request: web.Request) -> Any:
    """The request's JSON body (None when empty). Over ``MAX_REQUEST_BODY_BYTES`` it is 413, as
    ``limitedReadBody`` (``handlers/rest.go``) answers with ``NewRequestEntityTooLargeError``."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise errors.ApiError(
            413, "RequestEntityTooLarge", f"Request entity too large: limit is {MAX_REQUEST_BODY_BYTES}"
        ) from None
    if not raw.strip():
        return None
    try:
        return schema.loads(raw)  # marks repeated keys, for fieldValidation
    except ValueError as exc:
        raise errors.bad_request(f"error decoding request body: {exc}") from None


def _flag(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes")


class KubernetesApi:
    """aiohttp handlers serving the simulated cluster's Kubernetes API."""

    def __init__(self, sim: Simulation, token: str) -> None:
        self.sim = sim
        self.registry: Registry = sim.registry
        self.token = token
        self.access: AccessControl = sim.access
        self.access.authenticator.add_token(token, ADMIN)

    def add_routes(self, app: web.Application) -> None:
        for prefix in ("/api", "/apis"):
            app.router.add_route("*", prefix, self.handle)
            app.router.add_route("*", prefix + "/{tail:.*}", self.handle)
        app.router.add_get("/version", self.version)
        for path in ("/healthz", "/livez", "/readyz"):
            app.router.add_get(path, self.health)

    def _authenticate_and_authorize(self, request: web.Request) -> UserInfo:
        user = self.access.authenticate(request.headers.get("Authorization"), request.path)
        self.access.authorize(user, request_info(request.method, request.path, request.query))
        return user

    async def version(self, request: web.Request) -> web.Response:
        try:
            self._authenticate_and_authorize(request)
        except errors.ApiError as err:
            return error_response(err)
        v = self.sim.config.kubernetes_version.lstrip("v")
        major, minor = ([*v.split("."), "0"])[:2]
        return json_response(
            {
                "major": major,
                "minor": minor,
                "gitVersion": self.sim.config.kubernetes_version,
                "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean",
                "buildDate": "2025-04-23T00:00:00Z",
                "goVersion": "go1.24.2",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        )

    async def health(self, request: web.Request) -> web.Response:
        try:
            self._authenticate_and_authorize(request)
        except errors.ApiError as err:
            return error_response(err)
        return web.Response(text="ok", content_type="text/plain")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        warnings: list[str] = []  # Warning headers, on success and on failure alike
        try:
            user = self._authenticate_and_authorize(request)
            target = parse_path(request.path)
            if not isinstance(target, Target):
                if request.method != "GET":
                    raise errors.method_not_allowed()
                return json_response(target)
            return await self._dispatch(request, target, user, warnings)
        except errors.ApiError as err:
            resp = error_response(err)
            _add_warnings(resp, warnings)
            return resp
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:  # a bug in the simulator must still look like an API error
            log.exception("simulator API failure on %s %s", request.method, request.path)
            return error_response(errors.internal(str(exc)))

    async def _dispatch(
        self, request: web.Request, t: Target, user: UserInfo, warnings: list[str]
    ) -> web.StreamResponse:
        q = request.query
        method = request.method
        ns = t.namespace or ""
        dry_run = q.get("dryRun") == "All"
        reg = self.registry
        handlers: dict[str, Callable[[], Awaitable[web.StreamResponse]]] = {}
        if t.name is None:
            handlers["GET"] = lambda: self._list_or_watch(request, t)
            handlers["POST"] = lambda: self._create(request, t, dry_run, user, warnings)
            handlers["DELETE"] = lambda: self._delete_collection(request, t, dry_run, user)
        elif t.subresource == "eviction":
            handlers["POST"] = lambda: self._evict(request, t, dry_run, user)
        else:
            assert t.name is not None
            name = t.name
            handlers["GET"] = lambda: self._get(request, t.rt, reg.get(t.rt, ns, name))
            handlers["PUT"] = lambda: self._replace(request, t, dry_run, user, warnings)
            handlers["PATCH"] = lambda: self._patch(request, t, dry_run, user, warnings)
            if t.subresource is None:
                handlers["DELETE"] = lambda: self._delete(request, t, dry_run, user)
        handler = handlers.get(method)
        if handler is None:
            raise errors.method_not_allowed()
        return await handler()

    # --- single objects ----------------------------------------------------------------------------

    @staticmethod
    def _encode(rt: ResourceType, entry: Entry) -> bytes:
        if rt.storage is None:
            return entry.full()
        return dumps(to_view(rt, entry.obj))

    async def _respond_entry(
        self, rt: ResourceType, entry: Entry, status: int = 200, warnings: list[str] | None = None
    ) -> web.Response:
        return raw_response(self._encode(rt, entry), status, warnings)

    # --- validating admission ----------------------------------------------------------------------

    def _admission_applies(self, t: Target, operation: str, name: str) -> bool:
        rt = t.rt
        return self.access.admission.may_apply(
            operation, rt.group, rt.version, rt.plural, t.subresource or "", t.namespace or "", name
        )

    def _admit(
        self,
        user: UserInfo,
        t: Target,
        operation: str,
        name: str,
        new: JsonDict | None,
        old: JsonDict | None,
        dry_run: bool,
    ) -> list[str]:
        rt = t.rt
        kind, kind_group, kind_version = rt.kind, None, None
        if t.subresource == "eviction":
            kind, kind_group, kind_version = "Eviction", "policy", "v1"
        return self.access.admit(
            AdmissionRequest(
                user,
                operation,
                rt.group,
                rt.version,
                rt.plural,
                t.subresource or "",
                kind,
                t.namespace or "",
                name,
                new,
                old,
                dry_run,
                kind_group,
                kind_version,
            )
        )

    def _view(self, rt: ResourceType, entry: Entry) -> JsonDict:
        view: JsonDict = clone(to_view(rt, entry.obj))
        return view

    async def _get(self, request: web.Request, rt: ResourceType, entry: Entry) -> web.Response:
        if tables.wants_table(request.headers.get("Accept", "")):
            return json_response(
                tables.table(rt.key, [to_view(rt, entry.obj)], str(entry.rv), request.query.get("includeObject"))
            )
        return await self._respond_entry(rt, entry)

    # --- writes --------------------------------------------------------------------------------------

    async def _create(
        self, request: web.Request, t: Target, dry_run: bool, user: UserInfo, warnings: list[str]
    ) -> web.Response:
        mode = field_validation(request)
        body = await _body(request)
        ns = t.namespace or ""
        meta = body.get("metadata") if isinstance(body, dict) else None
        name = str(meta.get("name") or "") if isinstance(meta, dict) else ""
        if self._admission_applies(t, "CREATE", name):
            probe = self.registry.create(t.rt, ns, clone(body), True, field_validation=mode)
            warnings += self._admit(user, t, "CREATE", probe.name, self._view(t.rt, probe), None, dry_run)
            if isinstance(meta, dict) and not name:
                meta["name"] = probe.name  # the name admission saw (generateName) is the one stored
        entry = self.registry.create(t.rt, ns, body, dry_run, field_validation=mode, warnings=warnings)
        return await self._respond_entry(t.rt, entry, 201, warnings)

    async def _replace(
        self, request: web.Request, t: Target, dry_run: bool, user: UserInfo, warnings: list[str]
    ) -> web.Response:
        assert t.name is not None
        mode = field_validation(request)
        body = await _body(request)
        ns = t.namespace or ""
        if self._admission_applies(t, "UPDATE", t.name):
            current = self.registry.get(t.rt, ns, t.name)
            probe = self.registry.replace(t.rt, ns, t.name, clone(body), t.subresource, True, field_validation=mode)
            warnings += self._admit(
                user, t, "UPDATE", t.name, self._view(t.rt, probe), self._view(t.rt, current), dry_run
            )
        entry = self.registry.replace(
            t.rt, ns, t.name, body, t.subresource, dry_run, field_validation=mode, warnings=warnings
        )
        return await self._respond_entry(t.rt, entry, warnings=warnings)

    async def _patch(
        self, request: web.Request, t: Target, dry_run: bool, user: UserInfo, warnings: list[str]
    ) -> web.Response:
        assert t.name is not None
        mode = field_validation(request)
        body = await _body(request)
        if body is None:
            raise errors.bad_request("the body of the request was empty")
        ns = t.namespace or ""
        content_type = request.content_type
        if self._admission_applies(t, "UPDATE", t.name):
            current = self.registry.get(t.rt, ns, t.name)
            probe = self.registry.patch(
                t.rt, ns, t.name, content_type, clone(body), t.subresource, True, field_validation=mode
            )
            warnings += self._admit(
                user, t, "UPDATE", t.name, self._view(t.rt, probe), self._view(t.rt, current), dry_run
            )
        entry = self.registry.patch(
            t.rt, ns, t.name, content_type, body, t.subresource, dry_run, field_validation=mode, warnings=warnings
        )
        return await self._respond_entry(t.rt, entry, warnings=warnings)

    async def _delete(self, request: web.Request, t: Target, dry_run: bool, user: UserInfo) -> web.Response:
        assert t.name is not None
        opts = DeleteOptions.parse(
            await _body(request),
            request.query.get("gracePeriodSeconds"),
            request.query.get("propagationPolicy"),
            dry_run,
        )
        warnings: list[str] = []
        if self._admission_applies(t, "DELETE", t.name):
            current = self.registry.get(t.rt, t.namespace or "", t.name)
            warnings = self._admit(user, t, "DELETE", t.name, None, self._view(t.rt, current), dry_run)
        entry, as_object = self.registry.delete(t.rt, t.namespace or "", t.name, opts)
        if as_object:
            return await self._respond_entry(t.rt, entry, warnings=warnings)
        details: JsonDict = {"name": entry.name}
        if t.rt.group:
            details["group"] = t.rt.group
        details["kind"] = t.rt.plural
        details["uid"] = entry.uid
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}
        return raw_response(dumps(body), 200, warnings)

    async def _evict(self, request: web.Request, t: Target, dry_run: bool, user: UserInfo) -> web.Response:
        assert t.name is not None
        body = await _body(request)
        warnings: list[str] = []
        if isinstance(body, dict) and self._admission_applies(t, "CREATE", t.name):
            eviction = {"apiVersion": "policy/v1", "kind": "Eviction", **clone(body)}
            eviction.setdefault("metadata", {}).setdefault("name", t.name)
            eviction["metadata"].setdefault("namespace", t.namespace or "")
            warnings = self._admit(user, t, "CREATE", t.name, eviction, None, dry_run)
        status = self.registry.evict(t.namespace or "", t.name, body, dry_run)
        return raw_response(dumps(status), 201, warnings)

    # --- collections -------------------------------------------------------------------------------

    def _selectors(self, request: web.Request, rt: ResourceType) -> tuple[LabelSelector, FieldSelector]:
        q = request.query
        return parse_label_selector(q.get("labelSelector")), parse_field_selector(rt, q.get("fieldSelector"))

    async def _list_or_watch(self, request: web.Request, t: Target) -> web.StreamResponse:
        if _flag(request.query.get("watch")):
            return await self._watch(request, t)
        labels, fields = self._selectors(request, t.rt)
        q = request.query
        limit = None
        if q.get("limit"):
            try:
                limit = int(q["limit"])
            except ValueError:
                raise errors.bad_request(f"invalid limit: {q['limit']!r}") from None
        result = self.registry.list(t.rt, t.namespace, labels, fields, limit, q.get("continue") or None)
        if tables.wants_table(request.headers.get("Accept", "")):
            listed = tables.table(
                t.rt.key,
                [to_view(t.rt, e.obj) for e in result.items],
                str(result.resource_version),
                q.get("includeObject"),
            )
            if result.continue_token:
                listed["metadata"]["continue"] = result.continue_token
            return json_response(listed)
        return raw_response(self._encode_list(t.rt, result))

    @staticmethod
    def _encode_list(rt: ResourceType, result: ListResult) -> bytes:
        meta: JsonDict = {"resourceVersion": str(result.resource_version)}
        if result.continue_token:
            meta["continue"] = result.continue_token
            meta["remainingItemCount"] = result.remaining
        if rt.storage is None:
            items = b",".join(e.body() for e in result.items)
        else:
            items = b",".join(
                dumps({k: v for k, v in to_view(rt, e.obj).items() if k not in ("kind", "apiVersion")})
                for e in result.items
            )
        head = dumps({"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta})
        return head[:-1] + b',"items":[' + items + b"]}"

    async def _delete_collection(self, request: web.Request, t: Target, dry_run: bool, user: UserInfo) -> web.Response:
        labels, fields = self._selectors(request, t.rt)
        opts = DeleteOptions.parse(
            await _body(request),
            request.query.get("gracePeriodSeconds"),
            request.query.get("propagationPolicy"),
            dry_run,
        )
        result = self.registry.list(t.rt, t.namespace, labels, fields)
        for entry in result.items:
            if self._admission_applies(t, "DELETE", entry.name):
                self._admit(user, t, "DELETE", entry.name, None, self._view(t.rt, entry), dry_run)
            try:
                self.registry.delete(t.rt, entry.namespace, entry.name, opts)
            except errors.ApiError as err:
                if err.code != 404:
                    raise
        return json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})

    async def _watch(self, request: web.Request, t: Target) -> web.StreamResponse:
        q = request.query
        labels, fields = self._selectors(request, t.rt)
        rv_text = q.get("resourceVersion") or ""
        since: int | None = None
        initial = True
        if rv_text not in ("", "0"):
            try:
                since = int(rv_text)
            except ValueError:
                raise errors.bad_request(f"invalid resource version: {rv_text!r}") from None
            initial = False
        send_initial = _flag(q.get("sendInitialEvents"))
        if send_initial:
            initial = True
        bookmarks = _flag(q.get("allowWatchBookmarks"))
        config = self.sim.config
        try:
            timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else config.watch_timeout_seconds
        except ValueError:
            raise errors.bad_request(f"invalid timeoutSeconds: {q['timeoutSeconds']!r}") from None
        store = self.sim.store
        resp = web.StreamResponse(status=200, headers=_headers())
        resp.enable_chunked_encoding()
        try:
            watcher = store.watch(t.rt, t.namespace, labels, fields, since, initial)
        except errors.ApiError as err:
            await resp.prepare(request)
            await resp.write(b'{"type":"ERROR","object":' + dumps(err.status()) + b"}\n")
            await resp.write_eof()
            return resp
        try:
            if send_initial and bookmarks:
                watcher.push(self._bookmark(t.rt, store.rv, initial_end=True))
            await resp.prepare(request)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            next_bookmark = loop.time() + config.bookmark_seconds
            while True:
                if watcher.queue:
                    chunk = b"".join(watcher.queue)
                    watcher.queue.clear()
                    await resp.write(chunk)
                    continue
                if watcher.closed:
                    break
                now = loop.time()
                if now >= deadline:
                    break
                if bookmarks and now >= next_bookmark:
                    await resp.write(self._bookmark(t.rt, store.rv))
                    next_bookmark = now + config.bookmark_seconds
                    continue
                wait = deadline - now
                if bookmarks:
                    wait = min(wait, next_bookmark - now)
                await watcher.wait(wait)
            await resp.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            store.unwatch(watcher)
        return resp

    @staticmethod
    def _bookmark(rt: ResourceType, rv: int, initial_end: bool = False) -> bytes:
        metadata: JsonDict = {"resourceVersion": str(rv)}
        if initial_end:
            metadata["annotations"] = {"k8s.io/initial-events-end": "true"}
        obj = {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": metadata}
        return b'{"type":"BOOKMARK","object":' + dumps(obj) + b"}\n"
