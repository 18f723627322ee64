"""`nvidia.device.v1alpha1.GpuService`: its operations, and the gRPC handlers that serve them.

`GpuService` is what a call runs once it is decoded: reads pass the readiness gate first (writes
never wait for it), then the cache and the hub decide, and a refusal is a DeviceApiError carrying
the status code the contract gives it. The gRPC handlers (`GpuServicer`) and callers in the
server's own process (`DeviceApiServer.call`) both run these operations, so a request gets the same
answer, the same refusal and the same watch events whichever way it came.

A caller in the server's process names the operation itself (e.g. `service.list_gpus`): each of
GpuService's unary methods is run by the operation of the same name in snake case
(`UNARY_METHODS`); WatchGpus, a stream, is gRPC's alone.

Each handler is a thin translation: a refusal goes back as a gRPC status with its code and
message, e.g. NOT_FOUND `gpu "gpu-3" not found` or ABORTED `gpu "gpu-3": resource_version 7 is
stale: current is 9`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import empty_pb2

from gpuheal.agents.device_api.cache import GpuCache
from gpuheal.agents.device_api.errors import DeviceApiError
from gpuheal.agents.device_api.readiness import ReadinessGate
from gpuheal.agents.device_api.watch import Subscription, WatchHub
from gpuheal.protos import gpu_pb2, gpu_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]
# An operation's request and response: GpuService's messages, e.g. ListGpusRequest and ListGpusResponse.
Request = TypeVar("Request")
Response = TypeVar("Response")
# GpuService's unary methods by the name of the operation that runs each, e.g. "list_gpus": "ListGpus".
UNARY_METHODS = {
    re.sub(r"(?<!^)(?=[A-Z])", "_", method.name).lower(): method.name
    for method in gpu_pb2.DESCRIPTOR.services_by_name["GpuService"].methods
    if not (method.client_streaming or method.server_streaming)
}


class GpuService:
    """The GpuService operations over the cache, the watch hub and the readiness gate.

    Each takes the method's request and returns its response (a watch: its subscription), or
    raises DeviceApiError. None awaits, so each runs as one step of the event loop, as the cache
    requires.
    """

    def __init__(self, cache: GpuCache, hub: WatchHub, gate: ReadinessGate) -> None:
        self._cache = cache
        self._hub = hub
        self._gate = gate

    # -- consumers -----------------------------------------------------------------------------

    def get_gpu(self, request: gpu_pb2.GetGpuRequest) -> gpu_pb2.GetGpuResponse:
        self._gate.check()
        return gpu_pb2.GetGpuResponse(gpu=self._cache.get(request.name))

    def list_gpus(self, _request: gpu_pb2.ListGpusRequest) -> gpu_pb2.ListGpusResponse:
        """The list, shared and built once per cache version: read-only."""
        self._gate.check()
        return self._cache.list_response()

    def watch_gpus(self, request: gpu_pb2.WatchGpusRequest) -> Subscription:
        """A watch from the request's resource version; `end_watch` it when its stream ends."""
        self._gate.check()
        return self._hub.open(self._cache, request.opts.resource_version)

    def end_watch(self, subscription: Subscription) -> None:
        self._hub.close(subscription)

    # -- providers -----------------------------------------------------------------------------

    def create_gpu(self, request: gpu_pb2.CreateGpuRequest) -> gpu_pb2.CreateGpuResponse:
        gpu, created = self._cache.create(request.gpu)
        return gpu_pb2.CreateGpuResponse(gpu=gpu, created=created)

    def update_gpu(self, request: gpu_pb2.UpdateGpuRequest) -> gpu_pb2.UpdateGpuResponse:
        return gpu_pb2.UpdateGpuResponse(gpu=self._cache.update(request.gpu))

    def update_gpu_status(self, request: gpu_pb2.UpdateGpuStatusRequest) -> gpu_pb2.UpdateGpuStatusResponse:
        gpu = self._cache.update_status(request.name, request.status, request.resource_version)
        return gpu_pb2.UpdateGpuStatusResponse(gpu=gpu)

    def delete_gpu(self, request: gpu_pb2.DeleteGpuRequest) -> empty_pb2.Empty:
        self._cache.delete(request.name)
        return empty_pb2.Empty()


async def _answer(context: Context, operation: Callable[[Request], Response], request: Request) -> Response:
    """The operation's response, or the call ended with its refusal's status code and message."""
    try:
        return operation(request)
    except DeviceApiError as error:
        await context.abort(error.code, error.message)


class GpuServicer(gpu_pb2_grpc.GpuServiceServicer):
    """The GpuService handlers; one instance serves every connection of a server."""

    def __init__(self, service: GpuService) -> None:
        self._service = service

    async def GetGpu(self, request: gpu_pb2.GetGpuRequest, context: Context) -> gpu_pb2.GetGpuResponse:
        return await _answer(context, self._service.get_gpu, request)

    async def ListGpus(self, request: gpu_pb2.ListGpusRequest, context: Context) -> gpu_pb2.ListGpusResponse:
        return await _answer(context, self._service.list_gpus, request)  # gRPC only serializes it

    async def WatchGpus(
        self, request: gpu_pb2.WatchGpusRequest, context: Context
    ) -> AsyncIterator[gpu_pb2.WatchGpusResponse]:
        """Stream the watch: its starting events, then live ones, until it is dropped or closed.

        A watch that is dropped while its client is not reading stops receiving events at once
        (the writer and other watchers never wait for it), but its status can only follow the data
        already in flight: HTTP/2 sends trailers after the flow-controlled messages, so the client
        sees RESOURCE_EXHAUSTED once it reads what it had been sent. Until then the stream holds
        at most the one event being written, not its queue.
        """
        sub = await _answer(context, self._service.watch_gpus, request)
        try:
            while True:
                yield await sub.next()  # raises once the watch is dropped or closed
        except DeviceApiError as error:
            await context.abort(error.code, error.message)
        finally:
            self._service.end_watch(sub)

    async def CreateGpu(self, request: gpu_pb2.CreateGpuRequest, context: Context) -> gpu_pb2.CreateGpuResponse:
        return await _answer(context, self._service.create_gpu, request)

    async def UpdateGpu(self, request: gpu_pb2.UpdateGpuRequest, context: Context) -> gpu_pb2.UpdateGpuResponse:
        return await _answer(context, self._service.update_gpu, request)

    async def UpdateGpuStatus(
        self, request: gpu_pb2.UpdateGpuStatusRequest, context: Context
    ) -> gpu_pb2.UpdateGpuStatusResponse:
        return await _answer(context, self._service.update_gpu_status, request)

    async def DeleteGpu(self, request: gpu_pb2.DeleteGpuRequest, context: Context) -> empty_pb2.Empty:
        return await _answer(context, self._service.delete_gpu, request)
