"""Redfish BMCs: one ComputerSystem per node under ``/redfish/v1/``.

A real BMC serves one server; here one Redfish service serves every simulated node as the system
``/redfish/v1/Systems/<node>``, and a bare-metal node names its system in the
``gpuheal.io/redfish-system`` annotation (bare metal has no cloud providerID). What is served is
what a Redfish client such as sushy reads and posts: the service root (open, as the standard
requires), the SessionService with sessions (``X-Auth-Token``), the Systems collection, each
ComputerSystem with ``PowerState``, ``Status`` and the ``#ComputerSystem.Reset`` action with its
``ResetType@Redfish.AllowableValues``, and the reset itself, which reboots the node.

Everything but the service root needs HTTP basic authentication or a session token; the
credentials are written to files under the state directory, laid out as the Kubernetes Secret the
provider reads is mounted. Errors carry Redfish's error body (``{"error": {"code":
"Base.1.16.<MessageKey>", "message", "@Message.ExtendedInfo"}}``): injected throttling answers 503
``ServiceTemporarilyUnavailable`` with ``Retry-After``, not_found 404 ``ResourceMissingAtURI``,
denied 403 ``InsufficientPrivilege``; wrong or missing credentials 401 ``NoValidSession``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from gpuheal.domain import marks
from gpuheal_sim.simulator.nodes import MachineTruth, UnknownNode

from .endpoint import CloudContext, CloudEndpoint
from .faults import CloudFault

SYSTEM_ANNOTATION = marks.REDFISH_SYSTEM_ANNOTATION
ROOT = "/redfish/v1"
SYSTEMS = f"{ROOT}/Systems"
SESSIONS = f"{ROOT}/SessionService/Sessions"
USERNAME = "gpuheal-bmc"

# What a typical server BMC offers for ComputerSystem.Reset.
DEFAULT_RESET_TYPES = ("On", "ForceOff", "GracefulShutdown", "GracefulRestart", "ForceRestart", "Nmi", "PowerCycle")

_BASE = "Base.1.16"
_JSON_HEADERS = {"OData-Version": "4.0"}


@dataclass(frozen=True, slots=True)
class ResetRecord:
    """A ComputerSystem.Reset the service accepted."""

    node: str
    reset_type: str
    at: str


class RedfishEndpoint(CloudEndpoint):
    name = "redfish"

    def __init__(self, context: CloudContext) -> None:
        super().__init__(context)
        self.password = secrets.token_urlsafe(18)
        # The reset types every system offers; a test may narrow them (a BMC without GracefulRestart).
        self.reset_types: tuple[str, ...] = DEFAULT_RESET_TYPES
        # Every reset accepted, in order, so tests can see which reset type arrived.
        self.resets: list[ResetRecord] = []
        self._sessions: dict[str, str] = {}  # X-Auth-Token -> session id
        self.credentials_dir = context.state_dir / "redfish" / "credentials"
        _write_secret_dir(self.credentials_dir, {"username": USERNAME, "password": self.password})

    def provider_id(self, node: str, index: int) -> str:
        # Bare metal has no cloud provider to give the node a providerID; its BMC is in an annotation.
        return ""

    def node_annotations(self, node: str) -> dict[str, str]:
        return {SYSTEM_ANNOTATION: self.system_url(node)}

    def system_url(self, node: str) -> str:
        return f"{self.context.url}{SYSTEMS}/{node}"

    def client_environment(self) -> dict[str, str]:
        return {
            "GPUHEAL_REDFISH_CREDENTIALS_DIR": str(self.credentials_dir),
            "GPUHEAL_REDFISH_CA_BUNDLE": str(self.context.certificates.ca_file),
        }

    def add_routes(self, app: web.Application) -> None:
        for path in ("/redfish", "/redfish/"):
            app.router.add_get(path, self._versions)
        for path in (ROOT, f"{ROOT}/"):
            app.router.add_get(path, self._service_root)
        app.router.add_get(f"{ROOT}/SessionService", self._session_service)
        app.router.add_get(SESSIONS, self._session_collection)
        app.router.add_post(SESSIONS, self._create_session)
        app.router.add_get(SESSIONS + "/{id}", self._session)
        app.router.add_delete(SESSIONS + "/{id}", self._delete_session)
        for path in (SYSTEMS, f"{SYSTEMS}/"):
            app.router.add_get(path, self._systems)
        for path in (SYSTEMS + "/{node}", SYSTEMS + "/{node}/"):
            app.router.add_get(path, self._system)
        app.router.add_post(SYSTEMS + "/{node}/Actions/ComputerSystem.Reset", self._reset)

    # --- handlers -----------------------------------------------------------------------------------

    async def _versions(self, request: web.Request) -> web.Response:
        return self._checked(request, lambda: _json({"v1": f"{ROOT}/"}), open_=True)

    async def _service_root(self, request: web.Request) -> web.Response:
        body = {
            "@odata.type": "#ServiceRoot.v1_15_0.ServiceRoot",
            "@odata.id": f"{ROOT}/",
            "Id": "RootService",
            "Name": "gpuheal simulated Redfish service",
            "RedfishVersion": "1.17.0",
            "UUID": "6d1a7b4e-4f1c-4a55-9a7e-2f0c5b9d3e10",
            "Systems": {"@odata.id": SYSTEMS},
            "SessionService": {"@odata.id": f"{ROOT}/SessionService"},
            "Links": {"Sessions": {"@odata.id": SESSIONS}},
        }
        return self._checked(request, lambda: _json(body), open_=True)

    async def _session_service(self, request: web.Request) -> web.Response:
        body = {
            "@odata.type": "#SessionService.v1_1_8.SessionService",
            "@odata.id": f"{ROOT}/SessionService",
            "Id": "SessionService",
            "Name": "Session Service",
            "ServiceEnabled": True,
            "SessionTimeout": 1800,
            "Sessions": {"@odata.id": SESSIONS},
        }
        return self._checked(request, lambda: _json(body))

    async def _session_collection(self, request: web.Request) -> web.Response:
        def answer() -> web.Response:
            members = [{"@odata.id": f"{SESSIONS}/{sid}"} for sid in sorted(self._sessions.values())]
            return _json(
                {
                    "@odata.type": "#SessionCollection.SessionCollection",
                    "@odata.id": SESSIONS,
                    "Name": "Session Collection",
                    "Members": members,
                    "Members@odata.count": len(members),
                }
            )

        return self._checked(request, answer)

    async def _create_session(self, request: web.Request) -> web.Response:
        fault = self.take_fault()
        if fault is not None:
            return _fault_response(fault, request.path)
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "MalformedJSON", "The request body submitted was malformed JSON.")
        if not isinstance(body, dict) or not self._valid(body.get("UserName"), body.get("Password")):
            return _unauthorized()
        token, sid = secrets.token_hex(16), secrets.token_hex(8)
        self._sessions[token] = sid
        location = f"{SESSIONS}/{sid}"
        return _json(
            _session_body(sid, str(body["UserName"])),
            status=201,
            headers={"X-Auth-Token": token, "Location": location},
        )

    async def _session(self, request: web.Request) -> web.Response:
        sid = request.match_info["id"]

        def answer() -> web.Response:
            if sid not in self._sessions.values():
                return _missing(request.path)
            return _json(_session_body(sid, USERNAME))

        return self._checked(request, answer)

    async def _delete_session(self, request: web.Request) -> web.Response:
        sid = request.match_info["id"]

        def answer() -> web.Response:
            token = next((token for token, known in self._sessions.items() if known == sid), None)
            if token is None:
                return _missing(request.path)
            del self._sessions[token]
            return web.Response(status=204, headers=_JSON_HEADERS)

        return self._checked(request, answer)

    async def _systems(self, request: web.Request) -> web.Response:
        def answer() -> web.Response:
            members = [{"@odata.id": f"{SYSTEMS}/{node}"} for node in sorted(self.context.sim.lifecycle.nodes)]
            return _json(
                {
                    "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
                    "@odata.id": SYSTEMS,
                    "Name": "Computer System Collection",
                    "Members": members,
                    "Members@odata.count": len(members),
                }
            )

        return self._checked(request, answer)

    async def _system(self, request: web.Request) -> web.Response:
        node = request.match_info["node"]

        def answer() -> web.Response:
            state = self._state(node)
            return _missing(request.path) if state is None else _json(self._system_body(node, state))

        return self._checked(request, answer)

    async def _reset(self, request: web.Request) -> web.Response:
        node = request.match_info["node"]
        fault = self.take_fault()
        if fault is not None:
            return _fault_response(fault, request.path)
        if not self._authenticated(request):
            return _unauthorized()
        if self._state(node) is None:
            return _missing(request.path)
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "MalformedJSON", "The request body submitted was malformed JSON.")
        reset_type = body.get("ResetType") if isinstance(body, dict) else None
        if reset_type is None:
            return _error(
                400,
                "ActionParameterMissing",
                "The action ComputerSystem.Reset requires the parameter ResetType to be present in the request body.",
            )
        if reset_type not in self.reset_types:
            return _error(
                400,
                "ActionParameterValueNotInList",
                f"The value '{reset_type}' for the parameter ResetType in the action ComputerSystem.Reset "
                "is not in the list of acceptable values.",
            )
        # Every accepted reset type that brings the system back (On for a powered-off system too)
        # reboots the node; the simulator has no separate powered-off state to leave it in.
        receipt = self.context.reboot(node)
        self.resets.append(ResetRecord(node, str(reset_type), str(receipt.get("requestedAt", ""))))
        await self.context.hold_reply()
        return web.Response(status=204, headers=_JSON_HEADERS)

    # --- helpers ------------------------------------------------------------------------------------

    def _checked(
        self, request: web.Request, answer: Callable[[], web.Response], *, open_: bool = False
    ) -> web.Response:
        """Answer after the injected fault, if any, and the authentication check (unless open)."""
        fault = self.take_fault()
        if fault is not None:
            return _fault_response(fault, request.path)
        if not open_ and not self._authenticated(request):
            return _unauthorized()
        return answer()

    def _authenticated(self, request: web.Request) -> bool:
        token = request.headers.get("X-Auth-Token")
        if token is not None:
            return token in self._sessions
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            username, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return self._valid(username, password)

    def _valid(self, username: object, password: object) -> bool:
        return (
            isinstance(username, str)
            and isinstance(password, str)
            and hmac.compare_digest(username.encode(), USERNAME.encode())
            and hmac.compare_digest(password.encode(), self.password.encode())
        )

    def _state(self, node: str) -> MachineTruth | None:
        try:
            return self.context.sim.lifecycle.state(node)
        except UnknownNode:
            return None

    def _system_body(self, node: str, state: MachineTruth) -> dict[str, Any]:
        path = f"{SYSTEMS}/{node}"
        healthy = state.gpus.condition()[0] == "True"
        body: dict[str, Any] = {
            "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem",
            "@odata.id": path,
            "Id": node,
            "Name": node,
            "HostName": node,
            "SystemType": "Physical",
            "Manufacturer": "gpuheal simulator",
            "Model": "simulated GPU server",
            "PowerState": "On",
            # A rebooting system is still powered; its host is starting again.
            "Status": {
                "State": "Starting" if state.rebooting else "Enabled",
                "Health": "OK" if healthy else "Warning",
                "HealthRollup": "OK" if healthy else "Warning",
            },
            "Actions": {
                "#ComputerSystem.Reset": {
                    "target": f"{path}/Actions/ComputerSystem.Reset",
                    "ResetType@Redfish.AllowableValues": list(self.reset_types),
                }
            },
        }
        if state.last_reboot_request_at is not None:
            body["LastResetTime"] = state.last_reboot_request_at
        return body


def _json(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers={**_JSON_HEADERS, **(headers or {})})


def _error(
    status: int, key: str, message: str, resolution: str = "", headers: dict[str, str] | None = None
) -> web.Response:
    """A Redfish error response: the Base registry's message id, its text and extended info."""
    code = f"{_BASE}.{key}"
    info: dict[str, Any] = {
        "@odata.type": "#Message.v1_1_2.Message",
        "MessageId": code,
        "Message": message,
        "MessageSeverity": "Critical",
        "Severity": "Critical",
    }
    if resolution:
        info["Resolution"] = resolution
    return _json({"error": {"code": code, "message": message, "@Message.ExtendedInfo": [info]}}, status, headers)


def _missing(path: str) -> web.Response:
    return _error(
        404,
        "ResourceMissingAtURI",
        f"The resource at the URI '{path}' was not found.",
        "Place a valid resource at the URI or correct the URI and resubmit the request.",
    )


def _unauthorized() -> web.Response:
    return _error(
        401,
        "NoValidSession",
        "There is no valid session established with the implementation.",
        "Establish a session before attempting any operations.",
        headers={"WWW-Authenticate": 'Basic realm="Redfish"'},
    )


def _fault_response(fault: CloudFault, path: str) -> web.Response:
    if fault is CloudFault.THROTTLE:
        return _error(
            503,
            "ServiceTemporarilyUnavailable",
            "The service is temporarily unavailable.  Retry in 1 seconds.",
            "Wait for the indicated retry duration and retry the operation.",
            headers={"Retry-After": "1"},
        )
    if fault is CloudFault.NOT_FOUND:
        return _missing(path)
    return _error(
        403,
        "InsufficientPrivilege",
        "There are insufficient privileges for the account or credentials associated with the current session "
        "to perform the requested operation.",
        "Either abandon the operation or change the associated access rights and resubmit the request if the "
        "operation failed.",
    )


def _session_body(sid: str, username: str) -> dict[str, Any]:
    return {
        "@odata.type": "#Session.v1_7_0.Session",
        "@odata.id": f"{SESSIONS}/{sid}",
        "Id": sid,
        "Name": "User Session",
        "UserName": username,
    }


def _write_secret_dir(directory: Path, files: dict[str, str]) -> None:
    """Write files readable by the owner only, as a Secret volume with defaultMode 0400 would be."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name, value in files.items():
        fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(value)
