"""The publisher's Device API client over gRPC: the oracle the in-process client is held to.

`GrpcDeviceApi` is `InProcessDeviceApi` with its calls made over the server's socket, through the
real gRPC servicer, decoding and status codes; its retries and classification are the product's.
So a test that runs with both (`connect`) compares the agent's in-process client with what a gRPC
client of the same server meets.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from gpuheal.agents.device_api import DeviceApiServer
from gpuheal.agents.device_api.limits import MAX_LIST_BYTES
from gpuheal.agents.device_api.service import UNARY_METHODS, Request, Response
from gpuheal.agents.publisher import InProcessDeviceApi
from gpuheal.agents.publisher.device_api import ListTooLarge, Refused
from gpuheal.protos import gpu_pb2_grpc

# How gRPC words a response over the receive limit (RESOURCE_EXHAUSTED, as overload is).
_TOO_LARGE = "Received message larger than max"


class GrpcDeviceApi(InProcessDeviceApi):
    """`InProcessDeviceApi` whose calls go over gRPC to `server`'s socket; `close` it after use."""

    def __init__(
        self, server: DeviceApiServer, *, attempts: int = 5, max_list_bytes: int = MAX_LIST_BYTES, timeout: float = 5.0
    ) -> None:
        super().__init__(server, attempts=attempts, max_list_bytes=max_list_bytes)
        # Redial fast: a test brings its server up after the client's first calls. A private
        # subchannel pool keeps that backoff from other channels to the same socket.
        self._channel = grpc.aio.insecure_channel(
            server.target,
            options=[
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
                ("grpc.use_local_subchannel_pool", 1),
                ("grpc.max_receive_message_length", max_list_bytes),
            ],
        )
        self._stub = gpu_pb2_grpc.GpuServiceStub(self._channel)
        self._timeout = timeout

    async def _call(self, operation: Callable[[Request], Response], request: Request) -> Response:
        """The method `operation` runs, called over the channel: its response or its refusal."""
        method = getattr(self._stub, UNARY_METHODS[operation.__name__])
        try:
            response: Response = await method(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            details = error.details() or ""
            if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and _TOO_LARGE in details:
                raise ListTooLarge(f"Device API: the GPU list is larger than this client takes: {details}") from error
            raise Refused(error.code(), details) from error
        return response

    async def close(self) -> None:
        await self._channel.close()
