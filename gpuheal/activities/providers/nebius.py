"""The Nebius provider: reboots a compute instance by stopping and starting it with the Nebius SDK.

Nebius Managed Kubernetes names a node's instance in its providerID, ``nebius://computeinstance-e00…``
(as public tooling for Nebius clusters parses it; ``nebius:///…`` is accepted too).
The compute API (``nebius.compute.v1.InstanceService``) has no restart, so a reboot is Stop, waited on
to the end, then Start, waited on to the end. The instance's operations are read through the compute
service's ``OperationService`` (``List`` by resource ID), which is also how a retry learns whether the
reboot already reached Nebius.

The SDK is asyncio-native (gRPC aio), so it runs on the worker's own event loop, no thread; one SDK
per event loop, made on first use and kept. Its standard chain decides everything not overridden:

* credentials: the service account credentials file (the JSON ``nebius iam auth-public-key
  generate --output`` writes, mounted from a Kubernetes Secret) named by
  ``GPUHEAL_NEBIUS_CREDENTIALS_FILE``; the SDK exchanges a JWT signed with its key for an IAM token
  and renews it. The SDK reads no variable naming such a file, hence gpuheal's own. Without one,
  the SDK's default: an IAM token in ``NEBIUS_IAM_TOKEN``.
* where: the SDK resolves each service to ``<service>.<domain>`` with the domain
  ``api.nebius.cloud:443``; ``NEBIUS_ENDPOINT`` (the CLI's variable) replaces the domain, and
  ``GPUHEAL_NEBIUS_ENDPOINT`` sends every call (IAM token exchange, compute, operations) to one
  ``host:port`` instead (a private gateway, or the simulator).
* trust: the system's CA bundle; ``GPUHEAL_NEBIUS_CA_FILE`` replaces it (the SDK has no variable).

The SDK itself retries throttling and unavailability; calls here allow it only `attempts` tries
because Temporal retries the activity with its own backoff.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from gpuheal.activities.providers import ProviderError, RebootTarget, kit
from gpuheal.activities.providers.kit import Failure

if TYPE_CHECKING:
    from nebius.aio.operation import Operation
    from nebius.api.nebius.common.v1 import Operation as OperationMessage
    from nebius.api.nebius.compute.v1 import InstanceServiceClient
    from nebius.sdk import SDK

_SCHEME = "nebius://"
_EXPECTED = "nebius://computeinstance-<id>, e.g. nebius://computeinstance-e00a2rcz1xvbqgbvp5"
_PROVIDER_ID = re.compile(r"nebius:///?(?P<id>computeinstance-[a-z0-9]+)")
# What a service account needs to stop and start instances and read their operations. Nebius's
# general roles are auditor < viewer < editor < admin (no compute-specific ones); editor manages instances.
_ROLE = "editor"
_USER_AGENT = "gpuheal"
# An operation's `request` is the request that made it: this one names a Start.
_START_REQUEST = "nebius.compute.v1.StartInstanceRequest"
# Pages of an instance's operations read before giving up on telling whether a reboot reached Nebius.
_MAX_OPERATION_PAGES = 10
# Importing the SDK and its generated API takes a couple of seconds: done once, in a thread, on first use.
_SDK_MODULES = ("nebius.sdk", "nebius.api.nebius.compute.v1", "nebius.api.nebius.common.v1", "nebius.aio.operation")

_RETRYABLE = frozenset(
    {
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.ABORTED,  # a conflicting operation on the instance; it ends
        grpc.StatusCode.UNKNOWN,
    }
)
# Statuses that are Nebius answering that it did not perform the call (or, UNAUTHENTICATED, the token
# exchange failing before it). DEADLINE_EXCEEDED, UNAVAILABLE, CANCELLED, UNKNOWN, INTERNAL and
# DATA_LOSS can all end a call the service received and acted on.
_REFUSING = frozenset(
    {
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


@dataclass(frozen=True, slots=True)
class NebiusInstance:
    """The compute instance a node's providerID names."""

    id: str

    @classmethod
    def of(cls, target: RebootTarget) -> NebiusInstance:
        """The node's instance; a malformed providerID is a non-retryable error naming the node."""
        match = _PROVIDER_ID.fullmatch(target.provider_id)
        if match is None:
            raise kit.not_located(target, "a Nebius instance", _EXPECTED)
        return cls(match["id"])


@dataclass(frozen=True, slots=True)
class NebiusSettings:
    """Explicit overrides of the Nebius SDK's standard settings; None leaves the choice to the SDK."""

    # GPUHEAL_NEBIUS_ENDPOINT: one "host:port" that serves every Nebius API the provider calls.
    endpoint: str | None = None
    # NEBIUS_ENDPOINT: the domain services resolve under ("api.nebius.cloud:443" by default).
    domain: str | None = None
    # GPUHEAL_NEBIUS_CA_FILE: CA certificates (PEM) trusted instead of the system's bundle.
    ca_file: Path | None = None
    # Tries per call, the first included; the SDK retries throttling and unavailability itself.
    attempts: int = 2
    # Limit of one call, all its tries included.
    call_timeout: timedelta = timedelta(seconds=30)
    # How often an operation is polled, and how long one may take (a GPU instance stops in minutes).
    poll_interval: timedelta = timedelta(seconds=1)
    operation_timeout: timedelta = timedelta(minutes=15)
    # GPUHEAL_NEBIUS_CREDENTIALS_FILE: the service account credentials file (JSON, "subject-credentials").
    credentials_file: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> NebiusSettings:
        """Settings from gpuheal's variables, and the domain from ``NEBIUS_ENDPOINT`` (the CLI's variable)."""

        def path(name: str) -> Path | None:
            value = env.get(name, "").strip()
            return Path(value) if value else None

        return cls(
            endpoint=env.get("GPUHEAL_NEBIUS_ENDPOINT", "").strip() or None,
            domain=env.get("NEBIUS_ENDPOINT", "").strip() or None,
            credentials_file=path("GPUHEAL_NEBIUS_CREDENTIALS_FILE"),
            ca_file=path("GPUHEAL_NEBIUS_CA_FILE"),
        )


class NebiusProvider(kit.CloudProvider[NebiusInstance]):
    """Reboots Nebius compute instances: Stop, then Start, each operation followed to its end."""

    name = "nebius"
    scheme = _SCHEME
    # StopInstanceRequest offers no choice between a graceful and a hard stop.

    def __init__(self, settings: NebiusSettings | None = None) -> None:
        self._settings = settings or NebiusSettings()
        self._sdks: dict[asyncio.AbstractEventLoop, SDK] = {}

    def locate(self, target: RebootTarget) -> NebiusInstance:
        return NebiusInstance.of(target)

    async def restart(self, target: RebootTarget, instance: NebiusInstance) -> str:
        """Stop the instance and start it again, waiting for each operation to finish.

        An instance already stopped or stopping (a retry after the worker died between Stop and
        Start, or after a Stop outlived `operation_timeout`) is not stopped again: the reboot goes
        on from where it was.

        A ProviderError is `refused` when no Start can have been performed, so that the retry calls
        `reboot` again: every failure before the Start is sent (a Stop alone reboots nothing, and
        the retry goes on from the instance's state without stopping it twice; without the mark a
        retry relies on `requested_since`, and where that cannot tell, the instance would stay
        stopped), and a Start that Nebius answered with a refusal. A Start sent without an answer
        (DEADLINE_EXCEEDED, UNAVAILABLE) or accepted and then failed is not refused: it may have
        started the instance, and a retry calling `reboot` would then stop and start it again.
        """
        from nebius.api.nebius.compute.v1 import StartInstanceRequest, StopInstanceRequest

        client = await self._client()
        state = await self._state(client, target, instance)
        if state == "STOPPING":
            settings = self._settings
            # An earlier attempt's Stop still running.
            state = await kit.follow_operation(
                state,
                lambda _: self._state(client, target, instance),
                lambda state: state != "STOPPING",
                timeout=settings.operation_timeout,
                interval=settings.poll_interval,
                overdue=lambda _: (
                    f"Nebius instance {instance.id} (node {target.node}) is still STOPPING after "
                    f"{settings.operation_timeout.total_seconds():.0f}s"
                ),
            )
        stopped = "was already stopped"
        if state != "STOPPED":
            stopping = client.stop(StopInstanceRequest(id=instance.id), **self._request_options())
            stop: Operation[Any] = await self._call(stopping, target, instance, "stop")
            await self._wait(stop, target, instance, "stop")
            stopped = f"stopped by operation {stop.id}"
        # One try: the SDK would retry a Start that timed out, and a throttled retry would then hide
        # that the first one may have started the instance.
        starting = client.start(StartInstanceRequest(id=instance.id), **self._request_options(attempts=1))
        start: Operation[Any] = await self._call(starting, target, instance, "start")
        kit.reached()
        await self._wait(start, target, instance, "start")
        return f"Nebius instance {instance.id} {stopped} and started again by operation {start.id}"

    async def requested_since(self, target: RebootTarget, since: datetime) -> bool | None:
        """Whether a Start of the instance was asked for at or after `since`, from its operations.

        A Stop alone answers False: the reboot did not reach its end, and `reboot` finishes it
        without stopping again. None when the endpoint does not list operations, or lists more
        than are read without reaching `since`.
        """
        from nebius.aio.service_error import RequestError
        from nebius.api.nebius.common.v1 import ListOperationsRequest

        instance = self.locate(target)
        operations = (await self._client()).operation_service()
        token = ""
        for _ in range(_MAX_OPERATION_PAGES):
            request = ListOperationsRequest(resource_id=instance.id, page_size=100, page_token=token)
            try:
                page = await self._call(
                    operations.list(request, **self._request_options()), target, instance, "list operations of"
                )
            except ProviderError as error:
                cause = error.__cause__
                if isinstance(cause, RequestError) and cause.status.code is grpc.StatusCode.UNIMPLEMENTED:
                    return None  # nothing tells whether Nebius was asked
                raise
            if any(_is_start_since(op, since) for op in page.operations):
                return True
            token = page.next_page_token
            if not token:
                return False
        return None

    async def describe(self, target: RebootTarget) -> str:
        instance = self.locate(target)
        state = await self._state(await self._client(), target, instance)
        return f"Nebius instance {instance.id}: {state}"

    async def close(self) -> None:
        """Close the SDKs: their channels and token renewal."""
        sdks, self._sdks = list(self._sdks.values()), {}
        for sdk in sdks:
            await sdk.close()

    # --- the SDK ------------------------------------------------------------------------------------

    async def _client(self) -> InstanceServiceClient:
        """A compute client on the running loop's SDK, made on first use (the SDK binds its channels to a loop)."""
        loop = asyncio.get_running_loop()
        if loop not in self._sdks:
            await asyncio.to_thread(_import_sdk)
            if loop not in self._sdks:  # another call may have made it meanwhile
                self._sdks = {known: sdk for known, sdk in self._sdks.items() if not known.is_closed()}
                self._sdks[loop] = self._make_sdk(loop)
        from nebius.api.nebius.compute.v1 import InstanceServiceClient

        return InstanceServiceClient(self._sdks[loop])

    def _make_sdk(self, loop: asyncio.AbstractEventLoop) -> SDK:
        from nebius.aio.token.static import NoTokenInEnvError
        from nebius.base.error import SDKError
        from nebius.base.resolver import Constant
        from nebius.sdk import SDK

        settings = self._settings
        options: dict[str, Any] = {}
        if settings.endpoint is not None:
            options["resolver"] = Constant(settings.endpoint)
        if settings.domain is not None:
            options["domain"] = settings.domain
        if settings.credentials_file is not None:
            options["credentials_file_name"] = settings.credentials_file
        try:
            if settings.ca_file is not None:
                options["tls_credentials"] = grpc.ssl_channel_credentials(
                    root_certificates=settings.ca_file.read_bytes()
                )
            return SDK(user_agent_prefix=_USER_AGENT, event_loop=loop, **options)
        except NoTokenInEnvError as error:
            raise kit.fail(
                "no Nebius credentials: mount a service account credentials file and set "
                "GPUHEAL_NEBIUS_CREDENTIALS_FILE to its path, or set NEBIUS_IAM_TOKEN",
                retryable=False,
            ) from error
        except (OSError, ValueError, KeyError, SDKError) as error:
            raise kit.fail(
                f"cannot set up the Nebius SDK ({type(error).__name__}: {error}); check "
                f"GPUHEAL_NEBIUS_CREDENTIALS_FILE ({settings.credentials_file}) and GPUHEAL_NEBIUS_CA_FILE "
                f"({settings.ca_file})",
                retryable=False,
            ) from error

    def _request_options(self, attempts: int | None = None) -> dict[str, Any]:
        """Options of one SDK call: `attempts` tries (the settings' by default) within the call's limit."""
        from nebius.aio.token.options import OPTION_REPORT_ERROR

        settings = self._settings
        tries = attempts or settings.attempts
        call_timeout = settings.call_timeout.total_seconds()
        return {
            "timeout": call_timeout,
            "per_retry_timeout": call_timeout / tries,
            "retries": tries,
            # The IAM token exchange counts against the call's time (the SDK's default allows it 15
            # minutes), and its failure (a revoked key, IAM unreachable) is this call's error instead of
            # being retried in the background until then.
            "auth_timeout": call_timeout,
            "auth_options": {OPTION_REPORT_ERROR: "1"},
        }

    async def _call(self, request: Any, target: RebootTarget, instance: NebiusInstance, action: str) -> Any:
        """Await one SDK request, turning its failure into a ProviderError."""
        return await kit.awaited(request, lambda error: self._classify(error, target, instance, action))

    async def _state(self, client: InstanceServiceClient, target: RebootTarget, instance: NebiusInstance) -> str:
        """The instance's state name: "RUNNING", "STOPPED", …"""
        from nebius.api.nebius.compute.v1 import GetInstanceRequest

        request = client.get(GetInstanceRequest(id=instance.id), **self._request_options())
        found = await self._call(request, target, instance, "get")
        return str(found.status.state.name)

    async def _wait(
        self, operation: Operation[Any], target: RebootTarget, instance: NebiusInstance, action: str
    ) -> None:
        """Follow the operation until it is done; a failed operation is an error with its status."""
        settings = self._settings
        waiting = operation.wait(
            interval=settings.poll_interval.total_seconds(),
            timeout=settings.operation_timeout.total_seconds(),
            poll_iteration_timeout=settings.call_timeout.total_seconds(),
            poll_retries=settings.attempts,
            auth_options=self._request_options()["auth_options"],
        )
        await kit.awaited(waiting, lambda error: self._classify(error, target, instance, action, operation))

    def _classify(
        self,
        error: Exception,
        target: RebootTarget,
        instance: NebiusInstance,
        action: str,
        operation: Operation[Any] | None = None,
    ) -> Failure | None:
        """An SDK failure (of a call, or of following `operation`) as a Failure; None for any other error.

        Only a Start reboots anything, so only its failures may have been acted on, and only those
        Nebius did not answer with a refusal (see `_REFUSING`).
        """
        from nebius.aio.service_error import RequestError, is_retriable_error
        from nebius.base.error import SDKError

        unsent = action != "start" or (isinstance(error, RequestError) and error.status.code in _REFUSING)
        if isinstance(error, TimeoutError):
            if operation is not None:
                message = (
                    f"Nebius {action} operation {operation.id} on instance {instance.id} (node {target.node}) "
                    f"did not finish within {self._settings.operation_timeout.total_seconds():.0f}s; it may still be running"
                )
            else:
                message = (
                    f"Nebius {action} instance {instance.id} (node {target.node}) timed out"
                    f" ({str(error) or f'no answer from {self._where()}'})"
                )
            return Failure(message, retryable=True, unsent=unsent)
        if operation is not None:
            action = f"{action} (operation {operation.id})"
        if not isinstance(error, SDKError):
            return None
        code = error.status.code if isinstance(error, RequestError) else None
        detail = str(error.status) if isinstance(error, RequestError) else f"{type(error).__name__}: {error}"
        if code is grpc.StatusCode.NOT_FOUND:
            message = (
                f"Nebius instance {instance.id} not found ({detail}); check node {target.node}'s providerID "
                f"{target.provider_id!r}: the instance may have been deleted or belong to another tenant"
            )
        elif code is grpc.StatusCode.PERMISSION_DENIED:
            message = (
                f"Nebius denied {action} instance {instance.id} (node {target.node}) to {self._identity()} "
                f"({detail}); grant it the {_ROLE} role on the instance's project (add it to a group whose "
                f"access permit assigns {_ROLE})"
            )
        elif code is grpc.StatusCode.UNAUTHENTICATED:
            message = (
                f"Nebius rejected the credentials of {self._identity()} ({detail}) while trying to {action} "
                f"instance {instance.id}; check that the credentials file is current and its public key still "
                "exists on the service account"
            )
        else:
            # Outside an RPC status (the SDK's own errors), network trouble is worth another try.
            retryable = code in _RETRYABLE if code is not None else is_retriable_error(error, deadline_retriable=True)
            message = f"Nebius could not {action} instance {instance.id} (node {target.node}): {detail}"
            return Failure(message, retryable=retryable, unsent=unsent)
        return Failure(message, retryable=False, unsent=unsent)

    def _where(self) -> str:
        settings = self._settings
        return settings.endpoint or f"<service>.{settings.domain or 'api.nebius.cloud:443'}"

    def _identity(self) -> str:
        """Who the SDK acts as: the service account in the credentials file, or the token's owner."""
        path = self._settings.credentials_file
        if path is None:
            return "the identity of NEBIUS_IAM_TOKEN"
        try:
            account = json.loads(path.read_text())["subject-credentials"]["sub"]
        except (OSError, ValueError, KeyError, TypeError):
            return f"the service account in {path}"
        return f"service account {account} (credentials file {path})"


def _import_sdk() -> None:
    for module in _SDK_MODULES:
        importlib.import_module(module)


def _is_start_since(operation: OperationMessage, since: datetime) -> bool:
    created = operation.created_at
    return operation.request.type_url.rsplit("/", 1)[-1] == _START_REQUEST and created is not None and created >= since
