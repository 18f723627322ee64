"""GPU health conditions in the Device API (`nvidia.device.v1alpha1.GpuService`), as a gRPC client.

Each GPU carries one condition of type `Healthy`, with the check name as its reason, and the
strongest open recommended action in `status.recommended_action`. A write is a read-modify-write:
GetGpu for the current status and resource version, then UpdateGpuStatus with that version; a
concurrent writer makes the server answer ABORTED and the write is tried again on a fresh read.
Conditions of other types, written by other providers, are kept as they are.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Protocol

import grpc

from gpuheal.agents.publisher.errors import DependencyUnavailable
from gpuheal.agents.publisher.ledger import Verdict
from gpuheal.protos import gpu_pb2, gpu_pb2_grpc

log = logging.getLogger(__name__)

HEALTH_CONDITION = "Healthy"
# Readiness gate, restarts and overload: the Device API will answer later.
_RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)


class DeviceApiClient(Protocol):
    """Where per-GPU health goes."""

    async def set_gpu_health(self, gpu_uuid: str, verdict: Verdict) -> None: ...


async def find_gpu(stub: gpu_pb2_grpc.GpuServiceAsyncStub, gpu_uuid: str) -> gpu_pb2.Gpu | None:
    """The GPU whose `spec.uuid` is `gpu_uuid`: by name (the lower-cased UUID) first, else by listing."""
    try:
        found = (await stub.GetGpu(gpu_pb2.GetGpuRequest(name=gpu_uuid.lower()))).gpu
        if found.spec.uuid.lower() == gpu_uuid.lower():
            return found
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            raise
    listed = await stub.ListGpus(gpu_pb2.ListGpusRequest())
    return next((gpu for gpu in listed.gpu_list.items if gpu.spec.uuid.lower() == gpu_uuid.lower()), None)


def with_health(status: gpu_pb2.GpuStatus, verdict: Verdict, now: datetime) -> gpu_pb2.GpuStatus:
    """`status` with its `Healthy` condition and recommended action set to the verdict."""
    updated = gpu_pb2.GpuStatus(recommended_action=verdict.action.name)
    previous: gpu_pb2.Condition | None = None
    for condition in status.conditions:
        if condition.type == HEALTH_CONDITION:
            previous = condition
        else:
            updated.conditions.append(condition)
    condition = updated.conditions.add(
        type=HEALTH_CONDITION, status=verdict.status, reason=verdict.reason, message=verdict.message
    )
    if previous is not None and previous.status == verdict.status:
        condition.last_transition_time.CopyFrom(previous.last_transition_time)
    else:
        condition.last_transition_time.FromDatetime(now)
    return updated


class GrpcDeviceApi:
    """`DeviceApiClient` over gRPC, e.g. `GrpcDeviceApi("unix:///var/run/gpuheal/device-api.sock")`."""

    def __init__(self, target: str, *, attempts: int = 5, timeout: float = 5.0) -> None:
        # A local socket is cheap to redial: gRPC's default backoff (up to 2 minutes) would leave the
        # backlog waiting long after the Device API is back. A private subchannel pool keeps that
        # backoff state from being shared with other channels to the same socket.
        self._channel = grpc.aio.insecure_channel(
            target,
            options=[
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
                ("grpc.use_local_subchannel_pool", 1),
            ],
        )
        self._stub = gpu_pb2_grpc.GpuServiceStub(self._channel)
        self._attempts = attempts
        self._timeout = timeout

    async def set_gpu_health(self, gpu_uuid: str, verdict: Verdict) -> None:
        """Write the verdict on the GPU; a GPU the Device API does not know is logged and skipped."""
        for attempt in range(self._attempts):
            try:
                gpu = await find_gpu(self._stub, gpu_uuid)
                if gpu is None:
                    log.warning("the Device API has no GPU with uuid %s; its health is not recorded there", gpu_uuid)
                    return
                await self._stub.UpdateGpuStatus(
                    gpu_pb2.UpdateGpuStatusRequest(
                        name=gpu.metadata.name,
                        status=with_health(gpu.status, verdict, datetime.now(UTC)),
                        resource_version=gpu.resource_version or int(gpu.metadata.resource_version or 0),
                    ),
                    timeout=self._timeout,
                )
                return
            except grpc.aio.AioRpcError as error:
                code = error.code()
                if code in _RETRYABLE:
                    raise DependencyUnavailable(f"Device API: {code.name}: {error.details()}") from error
                if code == grpc.StatusCode.ABORTED:
                    if attempt + 1 < self._attempts:
                        continue  # another writer got there first: read again
                    raise DependencyUnavailable(f"Device API: {self._attempts} writes lost races") from error
                if code == grpc.StatusCode.NOT_FOUND:
                    log.warning("GPU %s disappeared from the Device API before its health was written", gpu_uuid)
                    return
                raise

    async def close(self) -> None:
        await self._channel.close()
