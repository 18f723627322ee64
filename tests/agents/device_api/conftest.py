"""A Device API server on a unix socket in tmp_path, and a client over a real gRPC channel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from gpuheal.agents.device_api import DeviceApiServer
from gpuheal.agents.device_api.limits import HEALTH_CONDITION, GpuLimits, health_reserve_bytes
from gpuheal.protos import gpu_pb2, gpu_pb2_grpc

LIMITS = GpuLimits()


@dataclass
class Api:
    """A started server and a GpuService stub connected to it through its socket."""

    server: DeviceApiServer
    channel: grpc.aio.Channel
    stub: gpu_pb2_grpc.GpuServiceAsyncStub


ApiFactory = Callable[..., Awaitable[Api]]


@pytest.fixture
async def make_api(tmp_path: Path) -> AsyncIterator[ApiFactory]:
    """Start servers (keyword arguments go to DeviceApiServer); all are stopped after the test."""
    async with AsyncExitStack() as stack:
        count = 0

        async def make(**options: Any) -> Api:
            nonlocal count
            count += 1
            server = DeviceApiServer(tmp_path / f"run{count}" / "device.sock", **options)
            await stack.enter_async_context(server)
            # The form the contract documents: unix:// plus the absolute path.
            channel = grpc.aio.insecure_channel("unix://" + str(server.socket_path))
            stack.push_async_callback(channel.close)
            return Api(server, channel, gpu_pb2_grpc.GpuServiceStub(channel))

        yield make


@pytest.fixture
async def api(make_api: ApiFactory) -> Api:
    """A server whose readiness gate is open from the start (a node told it has no GPUs yet)."""
    return await make_api(expected_gpus=0)


def make_gpu(name: str, uuid: str | None = None) -> gpu_pb2.Gpu:
    gpu = gpu_pb2.Gpu()
    gpu.metadata.name = name
    gpu.spec.uuid = uuid or f"GPU-{name}"
    return gpu


def condition(type_: str, status: str = "True", message: str = "") -> gpu_pb2.Condition:
    return gpu_pb2.Condition(type=type_, status=status, reason="Test", message=message)


def largest_status(index: int) -> gpu_pb2.GpuStatus:
    """A status as large as a write may be: other conditions up to their share, then the largest `Healthy` one."""
    others_budget = LIMITS.max_status_bytes - health_reserve_bytes(LIMITS)
    others = gpu_pb2.GpuStatus()
    while others.ByteSize() <= others_budget:
        others.conditions.append(condition(f"Bulk{len(others.conditions)}", message="x" * 4096))
    del others.conditions[-1]
    room = others_budget - others.ByteSize()
    others.conditions.append(condition("Filler", message="y" * max(room - 64, 0)))
    status = gpu_pb2.GpuStatus(conditions=others.conditions, recommended_action=f"{index:06d}".ljust(256, "a"))
    healthy = status.conditions.add(type=HEALTH_CONDITION, status="F" * 64, reason="r" * 1024, message="m" * 4096)
    healthy.last_transition_time.FromSeconds(253_402_300_799)
    healthy.last_transition_time.nanos = 999_999_999
    assert LIMITS.max_status_bytes - 64 < status.ByteSize() <= LIMITS.max_status_bytes
    return status


async def create(api: Api, name: str) -> gpu_pb2.Gpu:
    response = await api.stub.CreateGpu(gpu_pb2.CreateGpuRequest(gpu=make_gpu(name)))
    assert response.created
    return response.gpu


async def rpc_error(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    """The error a call ends with; fails the test if it succeeds."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (bounded) for something the server does in its own tasks."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)
