"""The NVML provider's Device API client: register GPUs and write their `Healthy` condition over gRPC.

It speaks the upstream `GpuService` through the generated stub on a `grpc.aio` channel, normally to
the Device API's unix socket. Calls wait for the server to come up (`wait_for_ready`) within
`rpc_timeout_s`, so an agent whose Device API starts a moment later still registers.

Writes are optimistic: the client remembers each GPU as the server last returned it and sends that
resource version with UpdateGpuStatus; on ABORTED (someone wrote in between) it reads the GPU afresh
with GetGpu and tries again. A GPU that vanished (NOT_FOUND) is registered again first.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

import grpc

from gpuheal.agents.nvml.interface import GpuInfo
from gpuheal.agents.nvml.status import merge_status, new_status
from gpuheal.agents.nvml.verdict import REASON_REGISTERED, Verdict
from gpuheal.domain.actions import RecommendedAction
from gpuheal.protos import gpu_pb2, gpu_pb2_grpc

log = logging.getLogger(__name__)

_REGISTERED = Verdict(True, REASON_REGISTERED, "registered by the NVML provider", RecommendedAction.NONE)


class DeviceApiWriteError(Exception):
    """A Device API call failed in a way retrying right away will not fix."""


def device_api_target(address: str | Path) -> str:
    """A gRPC target for the Device API: a socket path becomes `unix:<absolute path>`; targets pass."""
    text = str(address)
    if isinstance(address, Path) or text.startswith(("/", ".")) or ":" not in text:
        return f"unix:{Path(text).absolute()}"
    return text


def gpu_name(uuid: str) -> str:
    """The Device API name of a GPU: its UUID in lower case."""
    return uuid.lower()


class DeviceApiClient:
    """Registers GPUs and writes verdicts; one channel for the provider's lifetime."""

    def __init__(self, address: str | Path, *, rpc_timeout_s: float = 10.0, max_conflict_retries: int = 8) -> None:
        self._channel = grpc.aio.insecure_channel(device_api_target(address))
        self._stub = gpu_pb2_grpc.GpuServiceStub(self._channel)
        self._timeout = rpc_timeout_s
        self._max_retries = max_conflict_retries
        self._known: dict[str, gpu_pb2.Gpu] = {}

    async def close(self) -> None:
        await self._channel.close()

    async def register(self, info: GpuInfo, now: datetime) -> bool:
        """CreateGpu for this GPU; True when it was created, False when it was there already (a
        restart registering again: fine, and its status is left as it was)."""
        gpu = gpu_pb2.Gpu(
            metadata=gpu_pb2.ObjectMeta(name=gpu_name(info.uuid)),
            spec=gpu_pb2.GpuSpec(uuid=info.uuid),
            status=new_status(_REGISTERED, now),
        )
        try:
            response = await self._stub.CreateGpu(
                gpu_pb2.CreateGpuRequest(gpu=gpu), timeout=self._timeout, wait_for_ready=True
            )
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.ALREADY_EXISTS:
                self._known.pop(gpu.metadata.name, None)  # read it afresh before the first write
                return False
            raise DeviceApiWriteError(f"CreateGpu {gpu.metadata.name}: {err.code().name} {err.details()}") from err
        self._known[gpu.metadata.name] = response.gpu
        return response.created

    async def write(self, info: GpuInfo, verdict: Verdict, now: datetime) -> bool:
        """Make the GPU's `Healthy` condition carry `verdict`; True when a write happened."""
        name = gpu_name(info.uuid)
        for _ in range(self._max_retries):
            current = self._known.get(name) or await self._read(info, now)
            status = merge_status(current.status, verdict, now)
            if status is None:
                return False
            request = gpu_pb2.UpdateGpuStatusRequest(
                name=name, status=status, resource_version=current.resource_version
            )
            try:
                response = await self._stub.UpdateGpuStatus(request, timeout=self._timeout, wait_for_ready=True)
            except grpc.aio.AioRpcError as err:
                self._known.pop(name, None)
                if err.code() in (grpc.StatusCode.ABORTED, grpc.StatusCode.NOT_FOUND):
                    continue  # stale version, or deleted meanwhile: read (or register) afresh and retry
                raise DeviceApiWriteError(f"UpdateGpuStatus {name}: {err.code().name} {err.details()}") from err
            self._known[name] = response.gpu
            return True
        raise DeviceApiWriteError(f"UpdateGpuStatus {name}: still conflicting after {self._max_retries} attempts")

    async def _read(self, info: GpuInfo, now: datetime) -> gpu_pb2.Gpu:
        name = gpu_name(info.uuid)
        try:
            response = await self._stub.GetGpu(
                gpu_pb2.GetGpuRequest(name=name), timeout=self._timeout, wait_for_ready=True
            )
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise DeviceApiWriteError(f"GetGpu {name}: {err.code().name} {err.details()}") from err
            log.warning("GPU %s vanished from the Device API; registering it again", name)
            await self.register(info, now)
            known = self._known.get(name)
            if known is None:
                raise DeviceApiWriteError(f"GPU {name} could not be registered again") from err
            return known
        self._known[name] = response.gpu
        return response.gpu
