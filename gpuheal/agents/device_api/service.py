"""`nvidia.device.v1alpha1.GpuService` over the cache, the watch hub and the readiness gate.

Each RPC is a thin translation: the cache and the hub decide, and a refusal (DeviceApiError) goes
back as a gRPC status with its code and message, e.g. NOT_FOUND `gpu "gpu-3" not found` or ABORTED
`gpu "gpu-3": resource_version 7 is stale: current is 9`. Reads pass the readiness gate first;
writes never wait for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, NoReturn

import grpc
from google.protobuf import empty_pb2

from gpuheal.agents.device_api.cache import GpuCache
from gpuheal.agents.device_api.errors import DeviceApiError
from gpuheal.agents.device_api.readiness import ReadinessGate
from gpuheal.agents.device_api.watch import WatchHub
from gpuheal.protos import gpu_pb2, gpu_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


async def _refuse(context: Context, error: DeviceApiError) -> NoReturn:
    await context.abort(error.code, error.message)


class GpuServicer(gpu_pb2_grpc.GpuServiceServicer):
    """The GpuService handlers; one instance serves every connection of a server."""

    def __init__(self, cache: GpuCache, hub: WatchHub, gate: ReadinessGate) -> None:
        self._cache = cache
        self._hub = hub
        self._gate = gate

    # -- consumers -----------------------------------------------------------------------------

    async def GetGpu(self, request: gpu_pb2.GetGpuRequest, context: Context) -> gpu_pb2.GetGpuResponse:
        try:
            self._gate.check()
            return gpu_pb2.GetGpuResponse(gpu=self._cache.get(request.name))
        except DeviceApiError as error:
            await _refuse(context, error)

    async def ListGpus(self, request: gpu_pb2.ListGpusRequest, context: Context) -> gpu_pb2.ListGpusResponse:
        try:
            self._gate.check()
        except DeviceApiError as error:
            await _refuse(context, error)
        # Shared and built once per cache version; gRPC only serializes it.
        return self._cache.list_response()

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
        try:
            self._gate.check()
            sub = self._hub.open(self._cache, request.opts.resource_version)
        except DeviceApiError as error:
            await _refuse(context, error)
        try:
            while True:
                yield await sub.next()  # raises once the watch is dropped or closed
        except DeviceApiError as error:
            await _refuse(context, error)
        finally:
            self._hub.close(sub)

    # -- providers -----------------------------------------------------------------------------

    async def CreateGpu(self, request: gpu_pb2.CreateGpuRequest, context: Context) -> gpu_pb2.CreateGpuResponse:
        try:
            gpu, created = self._cache.create(request.gpu)
        except DeviceApiError as error:
            await _refuse(context, error)
        return gpu_pb2.CreateGpuResponse(gpu=gpu, created=created)

    async def UpdateGpu(self, request: gpu_pb2.UpdateGpuRequest, context: Context) -> gpu_pb2.UpdateGpuResponse:
        try:
            gpu = self._cache.update(request.gpu)
        except DeviceApiError as error:
            await _refuse(context, error)
        return gpu_pb2.UpdateGpuResponse(gpu=gpu)

    async def UpdateGpuStatus(
        self, request: gpu_pb2.UpdateGpuStatusRequest, context: Context
    ) -> gpu_pb2.UpdateGpuStatusResponse:
        try:
            gpu = self._cache.update_status(request.name, request.status, request.resource_version)
        except DeviceApiError as error:
            await _refuse(context, error)
        return gpu_pb2.UpdateGpuStatusResponse(gpu=gpu)

    async def DeleteGpu(self, request: gpu_pb2.DeleteGpuRequest, context: Context) -> empty_pb2.Empty:
        try:
            self._cache.delete(request.name)
        except DeviceApiError as error:
            await _refuse(context, error)
        return empty_pb2.Empty()
