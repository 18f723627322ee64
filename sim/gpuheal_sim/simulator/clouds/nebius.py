"""Nebius's compute gRPC API on a port of its own, with the IAM token exchange its SDK authenticates through.

The Nebius SDK speaks gRPC, not HTTP, so this cloud is served apart from the shared HTTPS listener:
a ``grpc.aio`` server on 127.0.0.1, over TLS with the simulator's certificate (the SDK makes TLS
channels unless told otherwise). It answers the calls the SDK makes, on the real service and
method names, with the SDK's own message classes:

* ``nebius.iam.v1.TokenExchangeService/Exchange``: the SDK signs a JWT with the service account's
  key from its credentials file and trades it for an access token. The simulator writes such a
  file (``client_environment()``) and checks the JWT's signature, key id and subject.
* ``nebius.compute.v1.InstanceService/Get``, ``Stop`` and ``Start``; the compute API has no
  restart. Stop and Start return operations; Start reboots the simulated node (NotReady now,
  Ready with a new bootID after the fleet's ``reboot_seconds``). Stop only marks the instance
  stopped: the simulated node has no powered-off state, so it stays as it was until Start.
* ``nebius.common.v1.OperationService/Get`` and ``List``, which the SDK sends to the compute
  address: an operation reports done at its second poll (or once a second has passed), which is
  when the instance's state moves on.

Every compute and operation call must carry ``authorization: Bearer <token from Exchange>``
(UNAUTHENTICATED otherwise) and takes one injected fault first (the token exchange takes none):
throttle → RESOURCE_EXHAUSTED, not_found → NOT_FOUND, denied → PERMISSION_DENIED, each with a
``nebius.common.v1.ServiceError`` detail in the rich status, the form the SDK decodes. A repeated
``x-idempotency-key`` returns the operation it made the first time. Where Nebius's behaviour is not
documented the simulator picks the plain answer: Stop on a stopped instance and Start on a running
one finish at once without effect; Stop while starting or Start while stopping is
FAILED_PRECONDITION.

The nebius package ships no ``*_pb2_grpc`` servicer classes (its messages are its own
descriptor-driven classes), so the methods are registered with gRPC's generic handlers, and the
message classes, which take seconds to import, are loaded in a thread at the first call.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from time import monotonic
from typing import TYPE_CHECKING, Any, NoReturn, Protocol
from urllib.parse import urlsplit

import grpc
import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .endpoint import CloudContext, CloudEndpoint
from .faults import CloudFault
from .keys import service_account_key

if TYPE_CHECKING:
    from nebius.api.nebius.common.v1 import Operation, ServiceError

INSTANCE_SERVICE = "nebius.compute.v1.InstanceService"
OPERATION_SERVICE = "nebius.common.v1.OperationService"
TOKEN_SERVICE = "nebius.iam.v1.TokenExchangeService"  # noqa: S105 - a service name
# What the SDK puts in the JWT it signs for the exchange (nebius.base.service_account).
_JWT_AUDIENCE = "token-service.iam.new.nebiuscloud.net"
# An operation is done at its second poll, or once this long has passed without polls.
_OPERATION_POLLS = 2
_OPERATION_SECONDS = 1.0
_TOKEN_SECONDS = 3600

Context = grpc.aio.ServicerContext[Any, Any]


class _Serializable(Protocol):
    def SerializeToString(self, *, deterministic: bool = False) -> bytes: ...


class _Api:
    """The nebius package's message classes.

    Importing them takes a couple of seconds, so they are loaded in a thread at the endpoint's first
    call, not when the simulator is imported (every CLI command would pay for it).
    """

    def __init__(self) -> None:
        from nebius.api.google.protobuf import Any as AnyMessage
        from nebius.api.google.rpc import Status
        from nebius.api.nebius.common import v1 as common
        from nebius.api.nebius.compute import v1 as compute
        from nebius.api.nebius.iam import v1 as iam

        self.any = AnyMessage
        self.status = Status
        self.common = common
        self.compute = compute
        self.iam = iam
        self.states = compute.InstanceStatus.InstanceState


class _Kind(StrEnum):
    STOP = "Stop"
    START = "Start"


class _State(StrEnum):
    """InstanceStatus.InstanceState names the simulator moves an instance through."""

    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    STARTING = "STARTING"


def _nebius_id(kind: str, seed: str) -> str:
    """A Nebius-shaped ID: ``<kind>-e00`` and 15 lowercase alphanumerics derived from `seed`."""
    return f"{kind}-e00{hashlib.sha256(seed.encode()).hexdigest()[:15]}"


@dataclass
class _Operation:
    id: str
    kind: _Kind
    instance_id: str
    request: bytes
    created_by: str
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started: float = field(default_factory=monotonic)
    polls: int = 0
    finished_at: datetime | None = None


@dataclass
class _Instance:
    state: _State = _State.RUNNING


class NebiusEndpoint(CloudEndpoint):
    name = "nebius"

    def __init__(self, context: CloudContext) -> None:
        super().__init__(context)
        self._server: grpc.aio.Server | None = None
        self._port: int | None = None
        self._api_loading: asyncio.Future[_Api] | None = None
        self._instances: dict[str, _Instance] = {}
        self._operations: dict[str, _Operation] = {}
        self._by_idempotency_key: dict[str, str] = {}
        self._tokens: dict[str, str] = {}  # access token → service account
        self.service_account_id = _nebius_id("serviceaccount", "gpuheal-simulator")
        self.public_key_id = _nebius_id("publickey", "gpuheal-simulator")
        self.project_id = _nebius_id("project", "gpuheal-simulator")
        self._public_key: rsa.RSAPublicKey | None = None

    # --- identities and environment -----------------------------------------------------------------

    def provider_id(self, node: str, index: int) -> str:
        """``nebius://computeinstance-e00…``, as Nebius Managed Kubernetes writes it on its nodes."""
        return f"nebius://{_nebius_id('computeinstance', f'gpuheal-sim-{index}')}"

    def add_routes(self, app: web.Application) -> None:
        return None  # gRPC, on a port of its own (`start`)

    @property
    def address(self) -> str:
        """``host:port`` of the gRPC server, once started."""
        if self._port is None:
            raise RuntimeError("the Nebius endpoint has not been started")
        return f"{self._host}:{self._port}"

    @property
    def credentials_file(self) -> Path:
        """The service account credentials file (the JSON the Nebius console gives) the SDK reads."""
        return self.context.state_dir / "nebius" / "credentials.json"

    def client_environment(self) -> dict[str, str]:
        if self._port is None:
            return {}
        return {
            "GPUHEAL_NEBIUS_ENDPOINT": self.address,
            "GPUHEAL_NEBIUS_CREDENTIALS_FILE": str(self.credentials_file),
            "GPUHEAL_NEBIUS_CA_FILE": str(self.context.certificates.ca_file),
        }

    @property
    def _host(self) -> str:
        return urlsplit(self.context.url).hostname or "127.0.0.1"

    # --- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Write the service account's credentials file and serve the gRPC API over TLS on a free port."""
        await asyncio.to_thread(self._write_credentials)
        certificates = self.context.certificates
        server_credentials = grpc.ssl_server_credentials(
            [(certificates.key_file.read_bytes(), certificates.cert_file.read_bytes())]
        )
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    TOKEN_SERVICE, {"Exchange": self._unary(lambda api: api.iam.ExchangeTokenRequest, self._exchange)}
                ),
                grpc.method_handlers_generic_handler(
                    INSTANCE_SERVICE,
                    {
                        "Get": self._unary(lambda api: api.compute.GetInstanceRequest, self._get_instance),
                        "Stop": self._unary(lambda api: api.compute.StopInstanceRequest, self._stop),
                        "Start": self._unary(lambda api: api.compute.StartInstanceRequest, self._start),
                    },
                ),
                grpc.method_handlers_generic_handler(
                    OPERATION_SERVICE,
                    {
                        "Get": self._unary(lambda api: api.common.GetOperationRequest, self._get_operation),
                        "List": self._unary(lambda api: api.common.ListOperationsRequest, self._list_operations),
                    },
                ),
            )
        )
        self._port = server.add_secure_port(f"{self._host}:0", server_credentials)
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None
        if self._api_loading is not None:
            await asyncio.wait({self._api_loading})  # a thread cannot be cancelled; let the import end

    async def _api(self) -> _Api:
        """The message classes, imported in a thread at the first call (a simulation without Nebius calls never pays)."""
        if self._api_loading is None:
            self._api_loading = asyncio.ensure_future(asyncio.to_thread(_Api))
        return await asyncio.shield(self._api_loading)

    def _unary(
        self,
        request_type: Callable[[_Api], Any],
        method: Callable[[_Api, Any, Context], Awaitable[_Serializable]],
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """A unary-unary handler that decodes with the SDK's message class once those are loaded."""

        async def behaviour(raw: bytes, context: Context) -> _Serializable:
            api = await self._api()
            return await method(api, request_type(api).FromString(raw), context)

        return grpc.unary_unary_rpc_method_handler(behaviour, response_serializer=_serialize)

    def _write_credentials(self) -> None:
        # A 2048-bit RSA key, as `nebius iam auth-public-key generate` makes; the SDK signs only RS256.
        key = service_account_key("nebius")
        self._public_key = key.public_key()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        document = {
            "subject-credentials": {
                "type": "JWT",
                "alg": "RS256",
                "private-key": pem,
                "kid": self.public_key_id,
                "iss": self.service_account_id,
                "sub": self.service_account_id,
            }
        }
        path = self.credentials_file
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(document, handle)

    # --- IAM ----------------------------------------------------------------------------------------

    async def _exchange(self, api: _Api, request: Any, context: Context) -> _Serializable:
        """Trade a JWT signed with the service account's key for an access token."""
        if self._public_key is None:
            await _abort(api, context, grpc.StatusCode.UNAVAILABLE, "token service is not ready")
        try:
            header = jwt.get_unverified_header(request.subject_token)
            claims = jwt.decode(request.subject_token, self._public_key, algorithms=["RS256"], audience=_JWT_AUDIENCE)
        except jwt.PyJWTError as error:
            await _abort(api, context, grpc.StatusCode.UNAUTHENTICATED, f"invalid subject token: {error}")
        if header.get("kid") != self.public_key_id or claims.get("sub") != self.service_account_id:
            await _abort(api, context, grpc.StatusCode.UNAUTHENTICATED, "unknown service account key")
        token = "v1." + secrets.token_urlsafe(32)
        self._tokens[token] = self.service_account_id
        response: _Serializable = api.iam.CreateTokenResponse(
            access_token=token,
            issued_token_type="urn:ietf:params:oauth:token-type:access_token",  # noqa: S106 - a token type
            token_type="Bearer",  # noqa: S106 - a token type
            expires_in=_TOKEN_SECONDS,
        )
        return response

    async def _admit(self, api: _Api, context: Context, resource_id: str) -> str:
        """Authenticate the call and answer an injected fault, as every compute call does first.

        Returns the service account the call's bearer token was issued to.
        """
        value = dict(context.invocation_metadata() or ()).get("authorization", "")
        token = value.removeprefix("Bearer ") if isinstance(value, str) else ""
        caller = self._tokens.get(token)
        if caller is None:
            await _abort(api, context, grpc.StatusCode.UNAUTHENTICATED, "missing or unknown bearer token")
        fault = self.take_fault()
        common = api.common
        if fault is CloudFault.THROTTLE:
            await _abort(
                api,
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "too many requests",
                common.ServiceError(
                    service="compute", too_many_requests=common.TooManyRequests(violation="rate limit exceeded")
                ),
            )
        if fault is CloudFault.NOT_FOUND:
            await _not_found(api, context, resource_id)
        if fault is CloudFault.DENIED:
            await _abort(
                api,
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                f"permission denied for {caller}",
                common.ServiceError(
                    service="compute", permission_denied=common.PermissionDenied(resource_id=resource_id)
                ),
            )
        return caller

    # --- compute ------------------------------------------------------------------------------------

    async def _node(self, api: _Api, context: Context, instance_id: str) -> str:
        node = self.context.node_for(f"nebius://{instance_id}")
        if node is None:
            await _not_found(api, context, instance_id)
        return node

    def _instance(self, instance_id: str) -> _Instance:
        return self._instances.setdefault(instance_id, _Instance())

    async def _get_instance(self, api: _Api, request: Any, context: Context) -> _Serializable:
        await self._admit(api, context, request.id)
        node = await self._node(api, context, request.id)
        self._settle()
        compute = api.compute
        instance: _Serializable = compute.Instance(
            metadata=api.common.ResourceMetadata(id=request.id, parent_id=self.project_id, name=node),
            status=compute.InstanceStatus(state=api.states[self._instance(request.id).state.value]),
        )
        return instance

    async def _stop(self, api: _Api, request: Any, context: Context) -> _Serializable:
        return await self._change(api, request, _Kind.STOP, context)

    async def _start(self, api: _Api, request: Any, context: Context) -> _Serializable:
        return await self._change(api, request, _Kind.START, context)

    async def _change(self, api: _Api, request: Any, kind: _Kind, context: Context) -> _Serializable:
        """Stop or start the instance: an operation that finishes when it is next due (`_settle`)."""
        instance_id: str = request.id
        caller = await self._admit(api, context, instance_id)
        node = await self._node(api, context, instance_id)
        key = dict(context.invocation_metadata() or ()).get("x-idempotency-key")
        if isinstance(key, str) and key in self._by_idempotency_key:
            return self._message(api, self._operations[self._by_idempotency_key[key]])
        self._settle()
        instance = self._instance(instance_id)
        busy = _State.STARTING if kind is _Kind.STOP else _State.STOPPING
        if instance.state is busy:
            await _abort(
                api,
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"instance {instance_id} is {busy.value}; wait for its operation to finish",
            )
        op = _Operation(
            _nebius_id("computeoperation", secrets.token_hex(8)),
            kind,
            instance_id,
            request.SerializeToString(deterministic=True),
            caller,
        )
        self._operations[op.id] = op
        if isinstance(key, str):
            self._by_idempotency_key[key] = op.id
        if instance.state is (_State.STOPPED if kind is _Kind.STOP else _State.RUNNING):
            self._finish(op)  # nothing to do: done at once
        elif kind is _Kind.STOP:
            instance.state = _State.STOPPING
        else:
            instance.state = _State.STARTING
            self.context.reboot(node)
            answer = self._message(api, op)
            await self.context.hold_reply()
            return answer
        return self._message(api, op)

    # --- operations ---------------------------------------------------------------------------------

    async def _get_operation(self, api: _Api, request: Any, context: Context) -> _Serializable:
        await self._admit(api, context, request.id)
        op = self._operations.get(request.id)
        if op is None:
            await _not_found(api, context, request.id)
        op.polls += 1
        self._settle()
        return self._message(api, op)

    async def _list_operations(self, api: _Api, request: Any, context: Context) -> _Serializable:
        await self._admit(api, context, request.resource_id)
        self._settle()
        # Newest first; a simulated instance's few operations fit one page.
        ops = [op for op in reversed(self._operations.values()) if op.instance_id == request.resource_id]
        response: _Serializable = api.common.ListOperationsResponse(operations=[self._message(api, op) for op in ops])
        return response

    def _settle(self) -> None:
        """Finish every operation that is due (polled enough, or old enough) and move its instance on."""
        for op in self._operations.values():
            if op.finished_at is None and (
                op.polls >= _OPERATION_POLLS or monotonic() - op.started >= _OPERATION_SECONDS
            ):
                self._finish(op)

    def _finish(self, op: _Operation) -> None:
        op.finished_at = datetime.now(UTC)
        instance = self._instance(op.instance_id)
        if op.kind is _Kind.STOP and instance.state is _State.STOPPING:
            instance.state = _State.STOPPED
        elif op.kind is _Kind.START and instance.state is _State.STARTING:
            instance.state = _State.RUNNING

    def _message(self, api: _Api, op: _Operation) -> Operation:
        request_type = "StopInstanceRequest" if op.kind is _Kind.STOP else "StartInstanceRequest"
        message: Operation = api.common.Operation(
            id=op.id,
            description=f"{op.kind.value} instance {op.instance_id}",
            created_at=op.created_at,
            created_by=op.created_by,
            finished_at=op.finished_at,
            # The request that made the operation, as the real API returns it: how a client tells a Stop from a Start.
            request=api.any(type_url=f"type.googleapis.com/nebius.compute.v1.{request_type}", value=op.request),
            resource_id=op.instance_id,
            status=api.status(code=grpc.StatusCode.OK.value[0]) if op.finished_at is not None else None,
        )
        return message


def _serialize(message: _Serializable) -> bytes:
    return message.SerializeToString()


async def _not_found(api: _Api, context: Context, resource_id: str) -> NoReturn:
    common = api.common
    await _abort(
        api,
        context,
        grpc.StatusCode.NOT_FOUND,
        f"resource {resource_id} not found",
        common.ServiceError(service="compute", resource_not_found=common.ResourceNotFound(resource_id=resource_id)),
    )


async def _abort(
    api: _Api, context: Context, code: grpc.StatusCode, message: str, detail: ServiceError | None = None
) -> NoReturn:
    """End the call with `code`, the ServiceError detail in the rich status (``grpc-status-details-bin``) as Nebius does."""
    trailing: tuple[tuple[str, str | bytes], ...] = ()
    if detail is not None:
        status = api.status(
            code=code.value[0],
            message=message,
            details=[
                api.any(
                    type_url="type.googleapis.com/nebius.common.v1.ServiceError",
                    value=detail.SerializeToString(deterministic=True),
                )
            ],
        )
        trailing = (("grpc-status-details-bin", status.SerializeToString()),)
    await context.abort(code, message, trailing_metadata=trailing)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover
