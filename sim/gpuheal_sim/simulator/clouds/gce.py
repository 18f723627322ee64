"""Compute Engine's REST API under ``/compute/v1/`` and an OAuth token endpoint.

What google-cloud-compute's REST transport sends, at the real paths:

* ``POST /compute/v1/projects/{p}/zones/{z}/instances/{name}/reset`` -> a zonal Operation
  (``operationType: "reset"``, ``status: "RUNNING"``); the simulated node starts its reboot then.
  A repeated ``requestId`` returns the first operation and reboots nothing, as Compute Engine does.
* ``DELETE /compute/v1/projects/{p}/zones/{z}/instances/{name}`` -> a zonal Operation
  (``operationType: "delete"``); the machine is terminated then and its node deleted soon after (a
  managed instance group would recreate it). An instance being deleted is ``resourceNotReady``
  (400), one that is gone ``notFound``.
* ``GET …/zones/{z}/operations/{op}`` and ``POST …/operations/{op}/wait`` -> the operation. Each
  of these polls advances it: RUNNING for the first ``RUNNING_POLLS`` polls, then DONE (and DONE
  anyway once ``DONE_AFTER_SECONDS`` have passed, as a real reset finishes whether or not anyone
  watches). ``wait`` holds its answer briefly, like the real long poll, instead of up to 2 minutes.
* ``GET …/zones/{z}/operations?filter=…`` -> the zone's operations, filtered on ``field = "value"``
  terms joined by ``AND`` (the subset of Compute Engine's list filter the providers use), paged
  by ``maxResults``/``pageToken``.
* ``GET …/zones/{z}/instances/{name}`` -> the instance (``status: "RUNNING"``: a reset VM stays
  RUNNING while its guest reboots).

Every API request needs ``Authorization: Bearer``: either a self-signed JWT signed by the
simulator's service-account key (what the GAPIC client sends with service-account credentials,
``always_use_jwt_access``) or an access token from ``POST /gcp/token`` (the JWT-bearer grant a
service account uses when it does not sign its own tokens). Errors are Google's JSON error bodies
(``{"error": {"code", "message", "errors": [{"reason", …}], "status"}}``). Injected faults answer
429 ``rateLimitExceeded``, 404 ``notFound`` or 403 ``forbidden`` naming the missing permission.

Simulator-only controls, on the same listener under ``/gcp/sim/v1`` (no credentials):
``POST /gcp/sim/v1/operation-failures`` ``{"count"?, "httpStatus"?, "code"?, "message"?}`` makes the
next ``count`` operations (resets, deletes) end DONE with that error (and do nothing); ``GET /gcp/sim/v1/operations``
lists every operation with its poll count, without polling it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from hashlib import sha256
from pathlib import Path

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from gpuheal_sim.simulator.jsonvalues import JsonDict

from .endpoint import CloudContext, CloudEndpoint
from .faults import CloudFault
from .keys import service_account_key

PROJECT = "gpuheal-sim"
ZONE = "us-central1-a"
SERVICE_ACCOUNT = f"gpuheal-worker@{PROJECT}.iam.gserviceaccount.com"
# Compute Engine writes resource links with this host whichever endpoint was called.
LINK_BASE = "https://www.googleapis.com/compute/v1"
RUNNING_POLLS = 2
DONE_AFTER_SECONDS = 30.0
WAIT_HOLD_SECONDS = 0.05
TOKEN_SECONDS = 3600
# What a self-signed JWT may name as its audience or scope for Compute Engine.
JWT_AUDIENCES = frozenset({"https://compute.googleapis.com/", "https://compute.googleapis.com"})
JWT_SCOPES = frozenset({"https://www.googleapis.com/auth/compute", "https://www.googleapis.com/auth/cloud-platform"})
# The audience google-auth puts in a JWT-bearer grant, whatever the file's token_uri says.
GRANT_AUDIENCES = frozenset({"https://oauth2.googleapis.com/token", "https://accounts.google.com/o/oauth2/token"})
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLOCK_LEEWAY = 60
# Insert times are written the way Compute Engine writes them: milliseconds and a local offset.
PACIFIC = timezone(timedelta(hours=-7))
BASE = "/compute/v1/projects/{project}/zones/{zone}"
PERMISSIONS = {
    "reset": "compute.instances.reset",
    "delete": "compute.instances.delete",
    "get": "compute.instances.get",
    "operations.get": "compute.zoneOperations.get",
    "operations.list": "compute.zoneOperations.list",
}
_FILTER_TERM = re.compile(
    r'^\s*\(?\s*([A-Za-z][A-Za-z0-9_.]*)\s*(!=|=)\s*(?:"((?:[^"\\]|\\.)*)"|([^\s()"]+))\s*\)?\s*$'
)
_FILTERABLE = {
    "name": "name",
    "operationType": "operationType",
    "status": "status",
    "targetLink": "targetLink",
    "targetId": "targetId",
    "user": "user",
}


class GoogleError(Exception):
    """An API error in Google's JSON shape."""

    def __init__(self, code: int, status: str, reason: str, message: str, *, domain: str = "global") -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.reason = reason
        self.domain = domain
        self.message = message

    def response(self) -> web.Response:
        body = {
            "error": {
                "code": self.code,
                "message": self.message,
                "errors": [{"message": self.message, "domain": self.domain, "reason": self.reason}],
                "status": self.status,
            }
        }
        return web.json_response(body, status=self.code)


def _not_found(resource: str) -> GoogleError:
    return GoogleError(404, "NOT_FOUND", "notFound", f"The resource '{resource}' was not found")


@dataclass
class _Failure:
    http_status: int
    code: str
    message: str


@dataclass
class _Operation:
    project: str
    zone: str
    name: str
    id: str
    instance: str
    target_id: str
    insert_time: datetime
    request_id: str | None
    failure: _Failure | None
    operation_type: str = "reset"
    polls: int = 0
    done_at: datetime | None = None

    def advance(self, now: datetime) -> None:
        """One poll: the operation is DONE after `RUNNING_POLLS` polls (or once enough time passed)."""
        self.polls += 1
        self._settle(now)

    def _settle(self, now: datetime) -> None:
        if self.done_at is None and (
            self.polls > RUNNING_POLLS or now - self.insert_time >= timedelta(seconds=DONE_AFTER_SECONDS)
        ):
            self.done_at = now

    def as_json(self, now: datetime) -> JsonDict:
        self._settle(now)
        zone_link = f"{LINK_BASE}/projects/{self.project}/zones/{self.zone}"
        body: JsonDict = {
            "kind": "compute#operation",
            "id": self.id,
            "name": self.name,
            "zone": zone_link,
            "operationType": self.operation_type,
            "targetLink": f"{zone_link}/instances/{self.instance}",
            "targetId": self.target_id,
            "status": "DONE" if self.done_at is not None else "RUNNING",
            "user": SERVICE_ACCOUNT,
            "progress": 100 if self.done_at is not None else 0,
            "insertTime": _google_time(self.insert_time),
            "startTime": _google_time(self.insert_time),
            "selfLink": f"{zone_link}/operations/{self.name}",
        }
        if self.done_at is not None:
            body["endTime"] = _google_time(self.done_at)
            if self.failure is not None:
                body["error"] = {"errors": [{"code": self.failure.code, "message": self.failure.message}]}
                body["httpErrorStatusCode"] = self.failure.http_status
                body["httpErrorMessage"] = _http_reason(self.failure.http_status)
        return body


@dataclass
class _ServiceAccount:
    key_id: str
    public_key: rsa.RSAPublicKey
    path: Path


@dataclass
class _Tokens:
    issued: dict[str, float] = field(default_factory=dict)

    def issue(self) -> str:
        token = "ya29.sim-" + secrets.token_urlsafe(32)
        now = time.time()
        self.issued = {t: exp for t, exp in self.issued.items() if exp > now}
        self.issued[token] = now + TOKEN_SECONDS
        return token

    def valid(self, token: str) -> bool:
        expiry = self.issued.get(token)
        return expiry is not None and expiry > time.time()


class GceEndpoint(CloudEndpoint):
    """Compute Engine for the fleet's instances in project ``gpuheal-sim``, zone ``us-central1-a``."""

    name = "gcp"
    project = PROJECT
    zone = ZONE

    def __init__(self, context: CloudContext) -> None:
        super().__init__(context)
        self._operations: dict[tuple[str, str], dict[str, _Operation]] = {}
        self._by_request_id: dict[tuple[str, str], _Operation] = {}
        self._failures: list[_Failure] = []
        self._tokens = _Tokens()
        self._account: _ServiceAccount | None = None
        self._account_lock = threading.Lock()

    def provider_id(self, node: str, index: int) -> str:
        return f"gce://{self.project}/{self.zone}/{node}"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(BASE + "/instances/{instance}/reset", self._reset)
        app.router.add_delete(BASE + "/instances/{instance}", self._delete)
        app.router.add_get(BASE + "/instances/{instance}", self._get_instance)
        app.router.add_get(BASE + "/operations", self._list_operations)
        app.router.add_get(BASE + "/operations/{operation}", self._get_operation)
        app.router.add_post(BASE + "/operations/{operation}/wait", self._wait_operation)
        app.router.add_post("/gcp/token", self._token)
        app.router.add_post("/gcp/sim/v1/operation-failures", self._add_failures)
        app.router.add_get("/gcp/sim/v1/operations", self._sim_operations)

    def client_environment(self) -> dict[str, str]:
        account = self.service_account()
        return {
            "GOOGLE_APPLICATION_CREDENTIALS": str(account.path),
            "GPUHEAL_GCE_ENDPOINT": self.context.url,
            "REQUESTS_CA_BUNDLE": str(self.context.certificates.ca_file),
        }

    # --- simulator controls ------------------------------------------------------------------------

    def fail_next_operations(
        self,
        count: int = 1,
        *,
        http_status: int = 500,
        code: str = "INTERNAL_ERROR",
        message: str = "Internal error. Please try again or contact Google Support.",
    ) -> None:
        """The next `count` resets are accepted, reboot nothing and end DONE with this error."""
        self._failures.extend(_Failure(http_status, code, message) for _ in range(count))

    def operations(self) -> list[JsonDict]:
        """Every operation, as the API shows it, with the number of times it was polled."""
        now = datetime.now(UTC)
        return [
            {**operation.as_json(now), "polls": operation.polls}
            for zone in self._operations.values()
            for operation in zone.values()
        ]

    def service_account(self) -> _ServiceAccount:
        """The service-account key file ADC reads, written on first use."""
        with self._account_lock:
            if self._account is None:
                self._account = _write_service_account(self.context.state_dir / "gcp", self.context.url)
            return self._account

    # --- API ---------------------------------------------------------------------------------------

    async def _reset(self, request: web.Request) -> web.Response:
        return await self._operate(request, "reset")

    async def _delete(self, request: web.Request) -> web.Response:
        return await self._operate(request, "delete")

    async def _operate(self, request: web.Request, action: str) -> web.Response:
        """Start a reset or a delete of the instance as a zonal operation (one per requestId)."""
        try:
            project, zone, instance = self._instance_request(request, action)
            request_id = request.query.get("requestId") or None
            if request_id is not None and (project, request_id) in self._by_request_id:
                return web.json_response(self._by_request_id[(project, request_id)].as_json(datetime.now(UTC)))
            node = self._node(project, zone, instance)
            if action == "delete" and self._deleting(node):
                resource = f"projects/{project}/zones/{zone}/instances/{instance}"
                raise GoogleError(
                    400, "FAILED_PRECONDITION", "resourceNotReady", f"The resource '{resource}' is not ready"
                )
            failure = self._failures.pop(0) if self._failures else None
            now = datetime.now(UTC)
            operation = _Operation(
                project=project,
                zone=zone,
                name=_operation_name(now),
                id=str(secrets.randbits(63)),
                instance=instance,
                target_id=_instance_id(project, zone, instance),
                insert_time=now,
                request_id=request_id,
                failure=failure,
                operation_type=action,
            )
            self._operations.setdefault((project, zone), {})[operation.name] = operation
            if request_id is not None:
                self._by_request_id[(project, request_id)] = operation
            if failure is None:
                (self.context.terminate if action == "delete" else self.context.reboot)(node)
            return web.json_response(operation.as_json(now))
        except GoogleError as error:
            return error.response()

    async def _get_instance(self, request: web.Request) -> web.Response:
        try:
            project, zone, instance = self._instance_request(request, "get")
            self._node(project, zone, instance)
        except GoogleError as error:
            return error.response()
        zone_link = f"{LINK_BASE}/projects/{project}/zones/{zone}"
        return web.json_response(
            {
                "kind": "compute#instance",
                "id": _instance_id(project, zone, instance),
                "name": instance,
                "zone": zone_link,
                "machineType": f"{zone_link}/machineTypes/a3-highgpu-8g",
                "status": "RUNNING",
                "selfLink": f"{zone_link}/instances/{instance}",
                "cpuPlatform": "Intel Sapphire Rapids",
                "guestAccelerators": [
                    {"acceleratorType": f"{zone_link}/acceleratorTypes/nvidia-h100-80gb", "acceleratorCount": 8}
                ],
            }
        )

    async def _get_operation(self, request: web.Request) -> web.Response:
        try:
            operation = self._operation_request(request)
        except GoogleError as error:
            return error.response()
        now = datetime.now(UTC)
        operation.advance(now)
        return web.json_response(operation.as_json(now))

    async def _wait_operation(self, request: web.Request) -> web.Response:
        try:
            operation = self._operation_request(request)
        except GoogleError as error:
            return error.response()
        if operation.done_at is None:
            await asyncio.sleep(WAIT_HOLD_SECONDS)
        now = datetime.now(UTC)
        operation.advance(now)
        return web.json_response(operation.as_json(now))

    async def _list_operations(self, request: web.Request) -> web.Response:
        try:
            project, zone = self._zone_request(request, "operations.list")
            terms = _parse_filter(request.query.get("filter", ""))
            max_results = _int_query(request, "maxResults", 500, 0, 500) or 500
            start = _int_query(request, "pageToken", 0, 0, None)
        except GoogleError as error:
            return error.response()
        now = datetime.now(UTC)
        items = [
            body
            for body in (operation.as_json(now) for operation in self._operations.get((project, zone), {}).values())
            if all((str(body.get(name, "")) == value) is equal for name, equal, value in terms)
        ]
        page = items[start : start + max_results]
        zone_link = f"{LINK_BASE}/projects/{project}/zones/{zone}"
        response: JsonDict = {
            "kind": "compute#operationList",
            "id": f"projects/{project}/zones/{zone}/operations",
            "items": page,
            "selfLink": f"{zone_link}/operations",
        }
        if start + max_results < len(items):
            response["nextPageToken"] = str(start + max_results)
        return web.json_response(response)

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        grant, assertion = form.get("grant_type"), form.get("assertion")
        if grant != JWT_BEARER or not isinstance(assertion, str):
            return web.json_response(
                {"error": "unsupported_grant_type", "error_description": "Invalid grant_type."}, status=400
            )
        claims = self._verified_claims(assertion)
        if claims is None or claims.get("aud") not in GRANT_AUDIENCES | {str(request.url)}:
            return web.json_response(
                {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}, status=400
            )
        return web.json_response(
            {"access_token": self._tokens.issue(), "expires_in": TOKEN_SECONDS - 1, "token_type": "Bearer"}
        )

    # --- simulator control routes ------------------------------------------------------------------

    async def _add_failures(self, request: web.Request) -> web.Response:
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            return web.json_response({"error": "body is not valid JSON"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        count, status = body.get("count", 1), body.get("httpStatus", 500)
        code, message = body.get("code", "INTERNAL_ERROR"), body.get("message", "Internal error.")
        if not (isinstance(count, int) and count >= 1 and isinstance(status, int) and 400 <= status < 600):
            return web.json_response({"error": "count must be >= 1 and httpStatus a 4xx or 5xx code"}, status=400)
        if not (isinstance(code, str) and isinstance(message, str)):
            return web.json_response({"error": "code and message must be strings"}, status=400)
        self.fail_next_operations(count, http_status=status, code=code, message=message)
        return web.json_response({"pending": len(self._failures)}, status=201)

    async def _sim_operations(self, request: web.Request) -> web.Response:
        return web.json_response({"operations": self.operations()})

    # --- helpers -----------------------------------------------------------------------------------

    def _instance_request(self, request: web.Request, action: str) -> tuple[str, str, str]:
        project, zone = self._zone_request(request, action)
        return project, zone, request.match_info["instance"]

    def _zone_request(self, request: web.Request, action: str) -> tuple[str, str]:
        """Authenticate, answer an injected fault, and name the project and zone asked about."""
        self._authenticate(request)
        project, zone = request.match_info["project"], request.match_info["zone"]
        instance = request.match_info.get("instance")
        resource = f"projects/{project}/zones/{zone}" + (f"/instances/{instance}" if instance else "")
        fault = self.take_fault()
        if fault is CloudFault.THROTTLE:
            raise GoogleError(
                429,
                "RESOURCE_EXHAUSTED",
                "rateLimitExceeded",
                "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute' of service "
                f"'compute.googleapis.com' for consumer 'project_number:{_project_number(project)}'.",
                domain="usageLimits",
            )
        if fault is CloudFault.NOT_FOUND:
            raise _not_found(resource)
        if fault is CloudFault.DENIED:
            raise GoogleError(
                403, "PERMISSION_DENIED", "forbidden", f"Required '{PERMISSIONS[action]}' permission for '{resource}'"
            )
        if project != self.project:
            raise _not_found(f"projects/{project}")
        if zone != self.zone:
            raise _not_found(f"projects/{project}/zones/{zone}")
        return project, zone

    def _operation_request(self, request: web.Request) -> _Operation:
        project, zone = self._zone_request(request, "operations.get")
        name = request.match_info["operation"]
        operation = self._operations.get((project, zone), {}).get(name)
        if operation is None:
            raise _not_found(f"projects/{project}/zones/{zone}/operations/{name}")
        return operation

    def _deleting(self, node: str) -> bool:
        """The node's machine was terminated (its delete is under way; the node goes soon)."""
        return self.context.sim.lifecycle.nodes[node].terminated_at is not None

    def _node(self, project: str, zone: str, instance: str) -> str:
        node = self.context.node_for(f"gce://{project}/{zone}/{instance}")
        if node is None:
            raise _not_found(f"projects/{project}/zones/{zone}/instances/{instance}")
        return node

    def _authenticate(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token:
            if self._tokens.valid(token):
                return
            claims = self._verified_claims(token)
            if claims is not None and _names_compute(claims):
                return
        raise GoogleError(
            401,
            "UNAUTHENTICATED",
            "authError",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
            "other valid authentication credential.",
        )

    def _verified_claims(self, token: str) -> JsonDict | None:
        """The claims of an RS256 JWT signed by the simulator's service account, still valid; else None."""
        account = self._account
        if account is None:
            return None
        try:
            header_part, claims_part, signature_part = token.split(".")
            header = json.loads(_unb64(header_part))
            claims = json.loads(_unb64(claims_part))
            if not isinstance(header, dict) or not isinstance(claims, dict) or header.get("alg") != "RS256":
                return None
            if header.get("kid") not in (None, account.key_id):
                return None
            account.public_key.verify(
                _unb64(signature_part),
                f"{header_part}.{claims_part}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (ValueError, binascii.Error, InvalidSignature):
            return None
        now = time.time()
        try:
            if float(claims["exp"]) < now - CLOCK_LEEWAY or float(claims["iat"]) > now + CLOCK_LEEWAY:
                return None
        except (KeyError, TypeError, ValueError):
            return None
        return claims if claims.get("iss") == SERVICE_ACCOUNT else None


def _names_compute(claims: JsonDict) -> bool:
    """Whether a self-signed JWT is meant for Compute Engine: by audience or by scope."""
    if claims.get("aud") in JWT_AUDIENCES:
        return True
    scope = claims.get("scope")
    return isinstance(scope, str) and bool(JWT_SCOPES & set(scope.split()))


def _parse_filter(text: str) -> list[tuple[str, bool, str]]:
    """``(field = "value") AND (field != "value")`` as (API field name, equal, value) terms."""
    if not text.strip():
        return []
    terms: list[tuple[str, bool, str]] = []
    for part in re.split(r"\s+AND\s+", text.strip()):
        match = _FILTER_TERM.match(part)
        if match is None or match.group(1) not in _FILTERABLE:
            raise GoogleError(
                400,
                "INVALID_ARGUMENT",
                "invalid",
                f"Invalid value for field 'filter': '{text}'. Invalid list filter expression.",
            )
        name, operator, quoted, bare = match.groups()
        value = quoted.replace('\\"', '"').replace("\\\\", "\\") if quoted is not None else bare
        terms.append((_FILTERABLE[name], operator == "=", value))
    return terms


def _int_query(request: web.Request, name: str, default: int, low: int, high: int | None) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if value < low or (high is not None and value > high):
        raise GoogleError(400, "INVALID_ARGUMENT", "invalid", f"Invalid value for field '{name}': '{raw}'.")
    return value


def _write_service_account(directory: Path, url: str) -> _ServiceAccount:
    """A service-account key file whose token_uri points at this simulator (owner-readable only)."""
    key = service_account_key("gcp")
    key_id = secrets.token_hex(20)
    info = {
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": key_id,
        "private_key": key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
        "client_email": SERVICE_ACCOUNT,
        "client_id": str(int.from_bytes(sha256(SERVICE_ACCOUNT.encode()).digest()[:8], "big")),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": f"{url}/gcp/token",
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{SERVICE_ACCOUNT}",
        "universe_domain": "googleapis.com",
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "service-account.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(info, handle, indent=2)
    return _ServiceAccount(key_id, key.public_key(), path)


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _google_time(moment: datetime) -> str:
    """RFC 3339 the way Compute Engine writes it: milliseconds and a local offset ("…T10:20:30.123-07:00")."""
    return moment.astimezone(PACIFIC).isoformat(timespec="milliseconds")


def _operation_name(now: datetime) -> str:
    return f"operation-{int(now.timestamp() * 1000)}-{secrets.token_hex(7)[:13]}-{secrets.token_hex(4)}-{secrets.token_hex(4)}"


def _instance_id(project: str, zone: str, instance: str) -> str:
    """A stable numeric instance id (uint64 as a string, as Compute Engine's JSON carries it)."""
    return str(int.from_bytes(sha256(f"{project}/{zone}/{instance}".encode()).digest()[:8], "big") >> 1)


def _project_number(project: str) -> int:
    return int.from_bytes(sha256(project.encode()).digest()[:5], "big")


def _http_reason(status: int) -> str:
    reasons = {400: "BAD REQUEST", 403: "FORBIDDEN", 404: "NOT FOUND", 409: "CONFLICT", 503: "SERVICE UNAVAILABLE"}
    return reasons.get(status, "INTERNAL SERVER ERROR" if status >= 500 else "ERROR")
