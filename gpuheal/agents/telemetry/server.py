"""The agent's telemetry socket: `TelemetryIntake` served on a unix socket of mode 0660.

The socket is prepared and bound as the agent's other sockets are (`gpuheal.agents.unix_socket`):
a stale one left by a crash is replaced, a live one refused, and the file never exists with a
looser mode. Requests whose bytes do not decode are INVALID_ARGUMENT (`gpuheal.agents.decoding`).
At most `MAX_CONCURRENT_CALLS` calls are served at once; gRPC answers more with
RESOURCE_EXHAUSTED, which a streamer retries.
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc

from gpuheal.agents.decoding import add_decoding_servicer
from gpuheal.agents.telemetry.intake import TelemetryIntakeService
from gpuheal.agents.unix_socket import binding_privately, prepare_socket_path, restrict_socket
from gpuheal.protos import telemetry_pb2 as pb

log = logging.getLogger(__name__)

MAX_CONCURRENT_CALLS = 64
# A reading is a few hundred bytes; this leaves room for long labels and nothing more.
MAX_MESSAGE_BYTES = 64 * 1024


class TelemetryServer:
    """Serves `service` on `socket_path`; `start`/`stop`, or `async with`."""

    def __init__(self, socket_path: Path, service: TelemetryIntakeService) -> None:
        self.socket_path = socket_path
        self.service = service
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the telemetry intake is already serving")
        path = self.socket_path
        prepare_socket_path(path)
        server = grpc.aio.server(
            options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.so_reuseport", 0)],
            maximum_concurrent_rpcs=MAX_CONCURRENT_CALLS,
        )
        add_decoding_servicer(server, pb.DESCRIPTOR.services_by_name["TelemetryIntake"], self.service)
        try:
            with binding_privately():
                server.add_insecure_port(f"unix:{path}")
            await server.start()
            restrict_socket(path)
        except BaseException:
            await server.stop(None)
            path.unlink(missing_ok=True)
            raise
        self.service.stopping.clear()
        self._server = server
        log.info("telemetry intake listening on %s", path)

    async def stop(self, grace: float | None = 2.0) -> None:
        """Release calls waiting on a full sink, let the others finish for `grace` s, wait for the hand-overs
        of faults still under way, remove the socket."""
        server, self._server = self._server, None
        if server is None:
            return
        self.service.stopping.set()
        await server.stop(grace)
        await self.service.settle()
        self.socket_path.unlink(missing_ok=True)

    async def __aenter__(self) -> TelemetryServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
