"""The NVML provider's Device API client: register GPUs over gRPC (CreateGpu), nothing more.

It speaks the upstream `GpuService` through the generated stub on a `grpc.aio` channel, normally to
the Device API's unix socket. Calls wait for the server to come up (`wait_for_ready`) within
`rpc_timeout`, so an agent whose Device API starts a moment later still registers.

The provider never writes a GPU's status after registering it: the agent's publisher is the one
writer of the `Healthy` condition, fed by the health events the provider reports.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import grpc

from gpuheal.agents.gpu_identity import gpu_name
from gpuheal.agents.nvml.interface import GpuInfo
from gpuheal.agents.nvml.verdict import CONDITION_HEALTHY, REASON_REGISTERED
from gpuheal.protos import gpu_pb2, gpu_pb2_grpc


class DeviceApiWriteError(Exception):
    """A Device API call failed in a way retrying right away will not fix."""


def device_api_target(address: str | Path) -> str:
    """A gRPC target for the Device API: a socket path becomes `unix:<absolute path>`; targets pass."""
    text = str(address)
    if isinstance(address, Path) or text.startswith(("/", ".")) or ":" not in text:
        return f"unix:{Path(text).absolute()}"
    return text


def registered_status(now: datetime) -> gpu_pb2.GpuStatus:
    """The status a GPU is created with: Healthy, since no one has reported anything about it yet."""
    status = gpu_pb2.GpuStatus()
    condition = status.conditions.add(
        type=CONDITION_HEALTHY, status="True", reason=REASON_REGISTERED, message="registered by the NVML provider"
    )
    condition.last_transition_time.FromDatetime(now)
    return status


class GpuRegistrar:
    """Registers GPUs with the Device API (CreateGpu); one channel for the provider's start-up."""

    def __init__(self, address: str | Path, *, rpc_timeout: timedelta = timedelta(seconds=10)) -> None:
        self._channel = grpc.aio.insecure_channel(device_api_target(address))
        self._stub = gpu_pb2_grpc.GpuServiceStub(self._channel)
        self._timeout = rpc_timeout

    async def close(self) -> None:
        await self._channel.close()

    async def register(self, info: GpuInfo, now: datetime) -> bool:
        """CreateGpu for this GPU; True when it was created, False when it was there already (a
        restart registering again: fine, and its status is left as it was)."""
        gpu = gpu_pb2.Gpu(
            metadata=gpu_pb2.ObjectMeta(name=gpu_name(info.uuid)),
            spec=gpu_pb2.GpuSpec(uuid=info.uuid),
            status=registered_status(now),
        )
        try:
            response = await self._stub.CreateGpu(
                gpu_pb2.CreateGpuRequest(gpu=gpu), timeout=self._timeout.total_seconds(), wait_for_ready=True
            )
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.ALREADY_EXISTS:
                return False
            raise DeviceApiWriteError(f"CreateGpu {gpu.metadata.name}: {err.code().name} {err.details()}") from err
        return bool(response.created)
