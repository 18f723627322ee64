"""A real Device API server on a unix socket, a recording event sink and a provider factory over FakeNvml."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from gpuheal.agents.device_api import DeviceApiServer
from gpuheal.agents.nvml import CONDITION_HEALTHY, NvmlProvider
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.health import HealthEvent
from gpuheal.protos import gpu_pb2, gpu_pb2_grpc
from gpuheal_sim.fake_nvml import FakeNvml

NODE = "gpu-node-7"
FIXED_NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass
class RecordingSink:
    """An EventSink that keeps every event it is given."""

    events: list[HealthEvent] = field(default_factory=list)

    async def submit(self, event: HealthEvent) -> None:
        self.events.append(event)

    def checks(self) -> list[tuple[str, bool]]:
        return [(e.check_name, e.is_healthy) for e in self.events]

    def summary(self) -> list[tuple[str, bool, bool, RecommendedAction, tuple[str, ...]]]:
        """Per event: check name, is_fatal, is_healthy, action and the GPU UUIDs it names."""
        return [(e.check_name, e.is_fatal, e.is_healthy, e.action, e.gpu_uuids) for e in self.events]


async def eventually(predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0) -> None:
    """Wait (bounded) for something the provider does in its own tasks."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if await result if inspect.isawaitable(result) else result:
            return
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def healthy(gpu: gpu_pb2.Gpu) -> gpu_pb2.Condition:
    """The GPU's Healthy condition; fails the test when there is none."""
    found = [c for c in gpu.status.conditions if c.type == CONDITION_HEALTHY]
    assert len(found) == 1, gpu.status
    return found[0]


@dataclass
class Rig:
    server: DeviceApiServer
    stub: gpu_pb2_grpc.GpuServiceAsyncStub
    nvml: FakeNvml
    sink: RecordingSink
    provider: NvmlProvider

    async def gpu(self, index: int) -> gpu_pb2.Gpu:
        """The GPU as a consumer reads it from the Device API (GetGpu over the socket)."""
        name = self.nvml.gpus[index].uuid.lower()
        return (await self.stub.GetGpu(gpu_pb2.GetGpuRequest(name=name))).gpu

    def uuid(self, index: int) -> tuple[str, ...]:
        """The GPU UUID entities an event about GPU `index` names."""
        return (self.nvml.gpus[index].uuid,)


@pytest.fixture
async def stub(server: DeviceApiServer) -> AsyncIterator[gpu_pb2_grpc.GpuServiceAsyncStub]:
    """A GpuService client on the server's socket, as any other writer or consumer would use."""
    async with grpc.aio.insecure_channel(server.target) as channel:
        yield gpu_pb2_grpc.GpuServiceStub(channel)


RigFactory = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[DeviceApiServer]:
    """A Device API whose readiness gate stays closed until a provider opens it."""
    async with DeviceApiServer(tmp_path / "device.sock") as started:
        yield started


@pytest.fixture
async def make_rig(server: DeviceApiServer, stub: gpu_pb2_grpc.GpuServiceAsyncStub) -> AsyncIterator[RigFactory]:
    """Start providers against `server` (keyword arguments go to NvmlProvider); stopped after the test.

    The poll loop's interval is an hour, so polls happen only when a test calls `poll_once()`; XID
    events go through the real waiter thread.
    """
    async with AsyncExitStack() as stack:

        async def make(nvml: FakeNvml | None = None, **options: Any) -> Rig:
            fake = nvml if nvml is not None else FakeNvml(NODE, count=4)
            sink = RecordingSink()
            options.setdefault("poll_interval", timedelta(hours=1))
            options.setdefault("event_wait", timedelta(seconds=0.05))
            options.setdefault("on_registered", lambda _count: server.mark_ready())
            options.setdefault("clock", lambda: FIXED_NOW)
            provider = NvmlProvider(fake, server.socket_path, sink, NODE, **options)
            await provider.start()
            stack.push_async_callback(provider.stop)
            return Rig(server, stub, fake, sink, provider)

        yield make
