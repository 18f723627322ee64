"""The PlatformConnector gRPC service: health events from other monitors, in NVSentinel's wire format.

Clients generated from NVSentinel's `platformconnector` proto work unchanged: the package
(`datamodels`), service, method and messages are the contract's. The server listens on its own unix
socket (mode 0660) and, only when a port is configured, on TCP bound to 127.0.0.1 by default,
because the API has no authentication. The standard gRPC health service and server reflection are
served beside it.

A request is validated as a whole before any event goes to the sink, so a rejected request changes
nothing; one whose bytes do not decode is INVALID_ARGUMENT too (`gpuheal.agents.decoding`).
Accepted events are converted and submitted one at a time, in request order (a request's events
are never all converted at once); the call answers once the sink has taken every one of them (the
publisher returns once an event is delivered or spooled on disk). When the sink cannot take one,
the call answers UNAVAILABLE naming the first event to resend; a full sink (`SinkFull`, as the
publisher raises when its memory hold is full) is expected under load and logged in one line,
anything else with its traceback.

Each event is counted (`counted`, for the agent's metrics) by its kind and what became of it:
accepted, rejected with its request, or refused by the sink (the sender resends it).

At most `max_concurrent_requests` calls are served at once (each holds its decoded request while
its events wait for the sink); gRPC answers more with RESOURCE_EXHAUSTED, and the sender retries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from google.protobuf import empty_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_health.v1._async import HealthServicer  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import reflection  # type: ignore[import-untyped]

from gpuheal.agents.decoding import add_decoding_servicer
from gpuheal.agents.intake.convert import to_domain
from gpuheal.agents.intake.validate import IntakeLimits, Rejected, validate
from gpuheal.agents.metrics import event_kind
from gpuheal.agents.sink import EventSink, SinkFull
from gpuheal.agents.unix_socket import binding_privately, prepare_socket_path, restrict_socket
from gpuheal.protos import health_event_pb2 as pb
from gpuheal.protos import health_event_pb2_grpc as pb_grpc
from gpuheal.protos.sockets import HEALTH_EVENTS_SOCKET, SOCKET_DIR

log = logging.getLogger(__name__)

DEFAULT_SOCKET = SOCKET_DIR / HEALTH_EVENTS_SOCKET
SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["PlatformConnector"].full_name
# Told of each event sent, by its kind (gpuheal.agents.metrics.event_kind) and result.
Counted = Callable[[str, str], None]


@dataclass(frozen=True, slots=True)
class IntakeSettings:
    """Where the intake listens and how much one request may carry."""

    socket_path: Path = DEFAULT_SOCKET
    # TCP stays off unless a port is given (0 picks a free one); the host defaults to loopback only.
    tcp_port: int | None = None
    tcp_host: str = "127.0.0.1"
    limits: IntakeLimits = field(default_factory=IntakeLimits)
    # Calls served at once (health checks included). A 4 MiB request of 1,000 events with 64
    # entities, error codes and metadata entries each grew the process by about 18 MiB once decoded
    # (resident memory, protobuf's upb 7.36), and it is held until the sink has taken its last
    # event: 8 hold about 150 MiB.
    max_concurrent_requests: int = 8


class PlatformConnectorService(pb_grpc.PlatformConnectorServicer):
    """`HealthEventOccurredV1`: validate the whole batch, then convert and submit its events one by one."""

    def __init__(self, sink: EventSink, limits: IntakeLimits, counted: Counted | None = None) -> None:
        self._sink = sink
        self._limits = limits
        self._counted = counted
        # Events the sink has taken since the service was made.
        self.taken = 0

    async def HealthEventOccurredV1(  # the contract names it
        self, request: pb.HealthEvents, context: grpc.aio.ServicerContext[pb.HealthEvents, empty_pb2.Empty]
    ) -> empty_pb2.Empty:
        try:
            validate(request, self._limits)
        except Rejected as rejected:
            self._count(request.events, "rejected")
            await context.abort(rejected.code, rejected.detail)
        for index, wire in enumerate(request.events):
            event = to_domain(wire, self._limits)
            try:
                await self._sink.submit(event)
            except Exception as error:
                self._count(request.events[index:], "refused")
                if isinstance(error, SinkFull):
                    log.warning(
                        "event %s (%s) not accepted, the sender is told to resend it: %s", index, event.id, error
                    )
                else:
                    log.exception("the sink failed on event %s (%s)", index, event.id)
                # The events before this one were taken; saying so lets the sender resend the rest.
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE, f"events[{index}] and later were not accepted; resend them"
                )
            self.taken += 1
            self._count([wire], "accepted")
        return empty_pb2.Empty()

    def _count(self, events: Sequence[pb.HealthEvent], result: str) -> None:
        if self._counted is not None:
            for wire in events:
                self._counted(event_kind(is_fatal=wire.isFatal, is_healthy=wire.isHealthy), result)


class IntakeServer:
    """The intake's gRPC server. Use `async with IntakeServer(sink, settings):` or `start`/`stop`."""

    def __init__(self, sink: EventSink, settings: IntakeSettings | None = None, counted: Counted | None = None) -> None:
        self.settings = settings or IntakeSettings()
        self._service = PlatformConnectorService(sink, self.settings.limits, counted)
        self._server: grpc.aio.Server | None = None
        self._health: Any = None
        self.tcp_port: int | None = None

    @property
    def events_taken(self) -> int:
        """Events the sink has taken from this server's callers, over every start."""
        return self._service.taken

    @property
    def socket_target(self) -> str:
        """The gRPC target a client dials for the unix socket."""
        return f"unix:{self.settings.socket_path}"

    async def start(self) -> None:
        """Bind the socket (and TCP when configured), register the services and start serving."""
        if self._server is not None:
            raise RuntimeError("the intake is already serving")
        path = self.settings.socket_path
        prepare_socket_path(path)
        limits = self.settings.limits
        server = grpc.aio.server(
            options=[
                # Oversized requests are refused by gRPC itself with RESOURCE_EXHAUSTED, before decoding.
                ("grpc.max_receive_message_length", limits.max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=self.settings.max_concurrent_requests,
        )
        self._health = HealthServicer()  # a fresh one: a stopped one stays NOT_SERVING for good
        add_decoding_servicer(server, pb.DESCRIPTOR.services_by_name["PlatformConnector"], self._service)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            server,
        )
        try:
            with binding_privately():
                server.add_insecure_port(f"unix:{path}")
            if self.settings.tcp_port is not None:
                self.tcp_port = server.add_insecure_port(f"{self.settings.tcp_host}:{self.settings.tcp_port}")
            await server.start()
            restrict_socket(path)
        except BaseException:
            await server.stop(None)
            path.unlink(missing_ok=True)
            raise
        for service in ("", SERVICE_NAME):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self._server = server
        log.info("health event intake listening on %s", path)

    async def stop(self, grace: float | None = 2.0) -> None:
        """Report NOT_SERVING, let calls in flight finish for `grace` seconds, then remove the socket."""
        server, self._server = self._server, None
        if server is None:
            return
        await self._health.enter_graceful_shutdown()
        await server.stop(grace)
        self.settings.socket_path.unlink(missing_ok=True)

    async def __aenter__(self) -> IntakeServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
