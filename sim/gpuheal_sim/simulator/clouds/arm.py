"""Azure Resource Manager's compute API and a managed-identity token endpoint.

What azure-mgmt-compute sends for a restart is answered at ARM's own paths (matched without regard
to case, as ARM does): ``POST …/virtualMachines/{vm}/restart`` and, for a scale set's instance,
``POST …/virtualMachineScaleSets/{ss}/virtualMachines/{id}/restart`` answer 202 with the
``Azure-AsyncOperation`` and ``Location`` headers of a long-running operation. The operation reports
``InProgress`` for its first polls and ``Succeeded`` after, so a client that does not follow it to
the end is caught. ``GET …/instanceView`` gives the machine's statuses. Errors come in ARM's body,
``{"error": {"code", "message"}}``.

Every ARM request needs ``Authorization: Bearer <token>`` with a token from the managed-identity
endpoint at ``/azure/msi/token``, which speaks App Service's protocol (``GET`` with
``X-IDENTITY-HEADER``, ``api-version`` and ``resource``), the one azure-identity uses when
``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER`` are set. So the SDK's own ``DefaultAzureCredential``
chain authenticates here without any test-only credential.

Standalone VMs are named after their node; odd-numbered nodes are instances of the scale set
``gpu-pool``, with the node's index as instance id, so both shapes of providerID are served.
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from gpuheal_sim.simulator.jsonvalues import dig

from .endpoint import CloudContext, CloudEndpoint
from .faults import CloudFault

SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
RESOURCE_GROUP = "gpuheal-sim"
SCALE_SET = "gpu-pool"
LOCATION = "eastus"
IDENTITY_PATH = "/azure/msi/token"
# ARM's throttling hint, kept short so the SDK's retries do not hold a test or a demo for long.
THROTTLE_RETRY_AFTER = 1

_MACHINE = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)/providers/microsoft\.compute/"
    r"(?:virtualmachinescalesets/(?P<ss>[^/]+)/virtualmachines/(?P<instance>[^/]+)|virtualmachines/(?P<vm>[^/]+))"
    r"/(?P<action>restart|instanceview)$",
    re.IGNORECASE,
)
_OPERATION = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/providers/microsoft\.compute/locations/(?P<loc>[^/]+)/operations/(?P<op>[^/]+)$",
    re.IGNORECASE,
)


def _now() -> str:
    # ARM writes times with an explicit offset ("2024-05-01T12:00:00.123456+00:00").
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True, slots=True)
class _Machine:
    """A machine as an ARM path names it."""

    subscription: str
    resource_group: str
    vm: str | None = None
    scale_set: str | None = None
    instance: str | None = None

    @property
    def provider_id(self) -> str:
        base = f"azure:///subscriptions/{self.subscription}/resourceGroups/{self.resource_group}/providers/Microsoft.Compute"
        if self.scale_set is not None:
            return f"{base}/virtualMachineScaleSets/{self.scale_set}/virtualMachines/{self.instance}"
        return f"{base}/virtualMachines/{self.vm}"

    @property
    def resource_type(self) -> str:
        if self.scale_set is not None:
            return "Microsoft.Compute/virtualMachineScaleSets/virtualMachines"
        return "Microsoft.Compute/virtualMachines"

    @property
    def scope(self) -> str:
        return self.provider_id.removeprefix("azure://")


@dataclass
class _Operation:
    """A restart's long-running operation."""

    id: str
    node: str
    started: str
    polls: int = 0
    ended: str | None = None


class ArmEndpoint(CloudEndpoint):
    name = "azure"

    # How many polls of an operation answer InProgress before it succeeds.
    in_progress_polls = 2

    def __init__(self, context: CloudContext) -> None:
        super().__init__(context)
        self.identity_header = secrets.token_urlsafe(16)
        self.access_token = secrets.token_urlsafe(32)
        self.principal_id = str(uuid.uuid4())
        self.operations: dict[str, _Operation] = {}
        # The latest restart of each node, for its instance view.
        self._latest: dict[str, _Operation] = {}
        self._created = _now()

    # --- identities --------------------------------------------------------------------------------

    def provider_id(self, node: str, index: int) -> str:
        base = f"azure:///subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.Compute"
        if index % 2:
            return f"{base}/virtualMachineScaleSets/{SCALE_SET}/virtualMachines/{index}"
        return f"{base}/virtualMachines/{node}"

    def client_environment(self) -> dict[str, str]:
        return {
            # App Service's managed identity: what azure-identity's ManagedIdentityCredential (inside
            # DefaultAzureCredential) picks when both are set.
            "IDENTITY_ENDPOINT": f"{self.context.url}{IDENTITY_PATH}",
            "IDENTITY_HEADER": self.identity_header,
            "GPUHEAL_AZURE_ENDPOINT": self.context.url,
            # Operations here finish after a poll or two; no need to wait the production interval.
            "GPUHEAL_AZURE_POLL_INTERVAL": "0.2",
            "REQUESTS_CA_BUNDLE": str(self.context.certificates.ca_file),
        }

    # --- routes ------------------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(IDENTITY_PATH, self._token)
        app.router.add_route("*", "/subscriptions/{tail:.*}", self._arm)

    async def _token(self, request: web.Request) -> web.Response:
        """App Service's managed-identity token endpoint (api-version 2019-08-01)."""
        if not secrets.compare_digest(request.headers.get("X-IDENTITY-HEADER", ""), self.identity_header):
            return web.json_response(
                {"statusCode": 401, "message": "Unauthorized request: the X-IDENTITY-HEADER is missing or wrong."},
                status=401,
            )
        resource = request.query.get("resource")
        if not resource or not request.query.get("api-version"):
            return web.json_response(
                {"statusCode": 400, "message": "The 'resource' and 'api-version' query parameters are required."},
                status=400,
            )
        return web.json_response(
            {
                "access_token": self.access_token,
                "expires_on": str(int(time.time()) + 24 * 3600),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": self.principal_id,
            }
        )

    async def _arm(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if not self._authorized(request):
            return _error(
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing or the token is not valid.",
                headers={
                    "WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/common", '
                    'error="invalid_token", error_description="The access token is missing or invalid."'
                },
            )
        if not request.query.get("api-version"):
            return _error(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        machine = _MACHINE.match(path)
        operation = _OPERATION.match(path)
        if machine is None and operation is None:
            return _error(404, "InvalidResourceType", f"The resource type could not be found for {path}.")
        fault = self.take_fault()
        if operation is not None:
            if request.method != "GET":
                return _error(405, "MethodNotAllowed", f"{request.method} is not supported on operations.")
            return self._operation(request, operation["op"], fault)
        assert machine is not None
        found = _Machine(
            machine["sub"], machine["rg"], vm=machine["vm"], scale_set=machine["ss"], instance=machine["instance"]
        )
        action = machine["action"].lower()
        if (action, request.method) not in {("restart", "POST"), ("instanceview", "GET")}:
            return _error(405, "MethodNotAllowed", f"{request.method} is not supported on {action}.")
        if fault is not None:
            return self._fault(fault, found, action)
        node = self._node(found.provider_id)
        if node is None:
            return self._not_found(found)
        if action == "restart":
            accepted = self._restart(request, found, node)
            await self.context.hold_reply()
            return accepted
        return web.json_response(self._instance_view(found, node))

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and secrets.compare_digest(token.strip(), self.access_token)

    def _node(self, provider_id: str) -> str | None:
        """The node the machine is, matched without regard to case (ARM's names are case-insensitive)."""
        node = self.context.node_for(provider_id)
        if node is not None:
            return node
        wanted = provider_id.casefold()
        for entry in self.context.sim.store.objects("nodes"):
            if str(dig(entry.obj, "spec", "providerID")).casefold() == wanted:
                return entry.name if entry.name in self.context.sim.lifecycle.nodes else None
        return None

    # --- restart and its operation -----------------------------------------------------------------

    def _restart(self, request: web.Request, machine: _Machine, node: str) -> web.Response:
        self.context.reboot(node)
        operation = _Operation(id=str(uuid.uuid4()), node=node, started=_now())
        self.operations[operation.id] = operation
        self._latest[node] = operation
        base = (
            f"{self.context.url}/subscriptions/{machine.subscription}/providers/Microsoft.Compute/locations/"
            f"{LOCATION}/operations/{operation.id}"
        )
        api_version = request.query["api-version"]
        # ARM signs its polling URLs with an opaque "p" parameter; a random one plays its part.
        signature = secrets.token_urlsafe(12)
        return web.Response(
            status=202,
            headers={
                "Azure-AsyncOperation": f"{base}?p={signature}&api-version={api_version}",
                "Location": f"{base}?p={signature}&monitor=true&api-version={api_version}",
                **_request_ids(),
            },
        )

    def _operation(self, request: web.Request, operation_id: str, fault: CloudFault | None) -> web.Response:
        if fault is CloudFault.THROTTLE:
            return _throttled()
        if fault is CloudFault.DENIED:
            return _error(
                403,
                "AuthorizationFailed",
                f"The client '{self.principal_id}' does not have authorization to perform action "
                "'Microsoft.Compute/locations/operations/read'.",
            )
        operation = self.operations.get(operation_id)
        if operation is None or fault is CloudFault.NOT_FOUND:
            return _error(404, "NotFound", f"The operation {operation_id} was not found.")
        operation.polls += 1
        if operation.polls > self.in_progress_polls and operation.ended is None:
            operation.ended = _now()
        if request.query.get("monitor", "").lower() == "true":
            # The Location URL: 202 while running, 200 with no content once done.
            return web.Response(status=202 if operation.ended is None else 200, headers=_request_ids())
        body: dict[str, Any] = {"name": operation.id, "startTime": operation.started, "status": "InProgress"}
        if operation.ended is not None:
            body.update(status="Succeeded", endTime=operation.ended)
        return web.json_response(body, headers=_request_ids())

    def _instance_view(self, machine: _Machine, node: str) -> dict[str, Any]:
        """The statuses ARM reports: provisioning of the latest operation and the power state."""
        latest = self._latest.get(node)
        if latest is not None and latest.ended is None:
            statuses = [
                {"code": "ProvisioningState/updating", "level": "Info", "displayStatus": "Updating"},
                {"code": "PowerState/starting", "level": "Info", "displayStatus": "VM starting"},
            ]
        else:
            statuses = [
                {
                    "code": "ProvisioningState/succeeded",
                    "level": "Info",
                    "displayStatus": "Provisioning succeeded",
                    "time": latest.ended if latest is not None and latest.ended else self._created,
                },
                {"code": "PowerState/running", "level": "Info", "displayStatus": "VM running"},
            ]
        view: dict[str, Any] = {"computerName": node, "osName": "ubuntu", "osVersion": "22.04", "statuses": statuses}
        if machine.scale_set is not None:
            view.update(platformUpdateDomain=0, platformFaultDomain=0)
        else:
            view["hyperVGeneration"] = "V2"
        return view

    # --- errors ------------------------------------------------------------------------------------

    def _fault(self, fault: CloudFault, machine: _Machine, action: str) -> web.Response:
        if fault is CloudFault.THROTTLE:
            return _throttled()
        if fault is CloudFault.NOT_FOUND:
            return self._not_found(machine)
        verb = "restart/action" if action == "restart" else "instanceView/read"
        return _error(
            403,
            "AuthorizationFailed",
            f"The client '{self.principal_id}' with object id '{self.principal_id}' does not have authorization to "
            f"perform action '{machine.resource_type}/{verb}' over scope '{machine.scope}' or the scope is invalid. "
            "If access was recently granted, please refresh your credentials.",
        )

    def _not_found(self, machine: _Machine) -> web.Response:
        if machine.scale_set is not None and any(
            str(dig(entry.obj, "spec", "providerID"))
            .casefold()
            .startswith(machine.provider_id.casefold().rsplit("/virtualmachines/", 1)[0] + "/")
            for entry in self.context.sim.store.objects("nodes")
        ):
            # The scale set exists but has no such instance: Compute's own, terser answer.
            return _error(404, "NotFound", "The entity was not found in this Azure location.")
        name = machine.scale_set if machine.scale_set is not None else machine.vm
        kind = "virtualMachineScaleSets" if machine.scale_set is not None else "virtualMachines"
        return _error(
            404,
            "ResourceNotFound",
            f"The Resource 'Microsoft.Compute/{kind}/{name}' under resource group '{machine.resource_group}' was not "
            "found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
        )


def _request_ids() -> dict[str, str]:
    request_id = str(uuid.uuid4())
    return {"x-ms-request-id": request_id, "x-ms-correlation-request-id": request_id}


def _throttled() -> web.Response:
    return _error(
        429,
        "TooManyRequests",
        "The request is being throttled as the limit has been reached for operation group "
        "'Microsoft.Compute/VMOperations'. Retry after the time in the Retry-After header.",
        headers={"Retry-After": str(THROTTLE_RETRY_AFTER)},
    )


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers={**_request_ids(), **(headers or {})}
    )
