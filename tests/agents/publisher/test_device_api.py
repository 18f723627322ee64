"""GPU health in the Device API, written through the gRPC client to the agent's Device API server."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from gpuheal.agents.device_api import DeviceApiServer, GpuCache, GpuServicer, ReadinessGate, WatchHub
from gpuheal.agents.publisher import HEALTH_CONDITION, GrpcDeviceApi, Publisher
from gpuheal.domain.actions import RecommendedAction
from gpuheal.protos import gpu_pb2, gpu_pb2_grpc
from tests.agents.publisher.conftest import FAST
from tests.agents.publisher.events import GPU_A, GPU_B, fatal_xid, healthy, non_fatal

NODE = "gpu-node-7"
Req = TypeVar("Req")
Resp = TypeVar("Resp")
# What `register` creates: the Device API's readiness gate opens only once both are there, so no
# reader (the publisher's lookup included) can see the node before its GPUs are registered.
REGISTERED_GPUS = 2


@pytest.fixture
def socket_dir(short_dir: Path) -> Path:
    return short_dir


async def register(stub: gpu_pb2_grpc.GpuServiceAsyncStub) -> None:
    """GPU A under its lower-cased UUID, with another provider's condition; GPU B under an index name.

    These are the server's REGISTERED_GPUS: the second CreateGpu opens its readiness gate.
    """
    a = gpu_pb2.Gpu(metadata=gpu_pb2.ObjectMeta(name=GPU_A.lower()), spec=gpu_pb2.GpuSpec(uuid=GPU_A))
    a.status.conditions.add(type="Ready", status="True", reason="Enumerated")
    b = gpu_pb2.Gpu(metadata=gpu_pb2.ObjectMeta(name="gpu-1"), spec=gpu_pb2.GpuSpec(uuid=GPU_B))
    for gpu in (a, b):
        await stub.CreateGpu(gpu_pb2.CreateGpuRequest(gpu=gpu), wait_for_ready=True)


async def conditions(stub: gpu_pb2_grpc.GpuServiceAsyncStub, name: str) -> tuple[dict[str, str], str, int]:
    gpu = (await stub.GetGpu(gpu_pb2.GetGpuRequest(name=name))).gpu
    return (
        {c.type: f"{c.status}/{c.reason}" for c in gpu.status.conditions},
        gpu.status.recommended_action,
        gpu.resource_version,
    )


@pytest.fixture
async def device_api(socket_dir: Path) -> AsyncIterator[gpu_pb2_grpc.GpuServiceAsyncStub]:
    async with DeviceApiServer(socket_dir / "device.sock", expected_gpus=REGISTERED_GPUS) as server:
        channel = grpc.aio.insecure_channel(f"unix://{server.socket_path}")
        stub = gpu_pb2_grpc.GpuServiceStub(channel)
        await register(stub)
        yield stub
        await channel.close()


async def test_fatal_and_healthy_events_set_the_gpus_health(
    device_api: gpu_pb2_grpc.GpuServiceAsyncStub, socket_dir: Path
) -> None:
    client = GrpcDeviceApi(f"unix://{socket_dir / 'device.sock'}")
    async with Publisher(socket_dir / "spool", device_api=client, settings=FAST) as publisher:
        await publisher.submit(fatal_xid(NODE, GPU_A))
        await publisher.submit(fatal_xid(NODE, GPU_B, xid=48, action=RecommendedAction.COMPONENT_RESET))
        a_conditions, a_action, _ = await conditions(device_api, GPU_A.lower())
        assert a_conditions == {"Ready": "True/Enumerated", HEALTH_CONDITION: "False/SysLogsXIDError"}
        assert a_action == "RESTART_BM"
        b_conditions, b_action, b_version = await conditions(device_api, "gpu-1")  # found by spec.uuid
        assert (b_conditions[HEALTH_CONDITION], b_action) == ("False/SysLogsXIDError", "COMPONENT_RESET")

        await publisher.submit(non_fatal(NODE, GPU_B))  # informational: the GPU is not written
        assert (await conditions(device_api, "gpu-1"))[2] == b_version

        await publisher.submit(healthy(NODE))  # names no GPU: every GPU heard of
        for name in (GPU_A.lower(), "gpu-1"):
            found, action, _ = await conditions(device_api, name)
            assert (found[HEALTH_CONDITION], action) == ("True/GpusHealthy", "NONE")
        assert (await conditions(device_api, GPU_A.lower()))[0]["Ready"] == "True/Enumerated"

        await publisher.submit(fatal_xid(NODE, "GPU-not-on-this-node"))  # logged and skipped
        assert publisher.pending() == {"device-api": 0}
    await client.close()


async def test_events_wait_for_a_device_api_that_is_not_up_yet(socket_dir: Path) -> None:
    path = socket_dir / "late.sock"
    client = GrpcDeviceApi(f"unix://{path}")
    async with Publisher(socket_dir / "spool", device_api=client, settings=FAST) as publisher:
        await publisher.submit(fatal_xid(NODE, GPU_A))
        await publisher.submit(healthy(NODE, GPU_A))
        await publisher.submit(fatal_xid(NODE, GPU_A, xid=48, action=RecommendedAction.COMPONENT_RESET))
        assert publisher.pending() == {"device-api": 3}

        # The Device API comes up; until the GPUs are registered its gate answers the publisher's
        # lookups UNAVAILABLE (retried), then the backlog loop delivers the three in order.
        async with DeviceApiServer(path, expected_gpus=REGISTERED_GPUS) as server:
            assert not server.ready
            channel = grpc.aio.insecure_channel(f"unix://{server.socket_path}")
            stub = gpu_pb2_grpc.GpuServiceStub(channel)
            await register(stub)
            assert server.ready
            await asyncio.wait_for(publisher.wait_delivered(), 10)
            found, action, _ = await conditions(stub, GPU_A.lower())
            assert (found[HEALTH_CONDITION], action) == ("False/SysLogsXIDError", "COMPONENT_RESET")
            await channel.close()
    await client.close()


class CountingCalls(grpc.aio.ServerInterceptor):
    """Counts the RPCs a server receives, by method name."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Req, Resp] | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Req, Resp] | None:
        self.calls[details.method.rsplit("/", 1)[-1]] += 1
        return await continuation(details)


@pytest.fixture
async def counted(socket_dir: Path) -> AsyncIterator[tuple[CountingCalls, gpu_pb2_grpc.GpuServiceAsyncStub]]:
    """The Device API's own servicer on a gRPC server that counts what it is asked."""
    cache = GpuCache()
    gate = ReadinessGate(expected_gpus=0)
    counter = CountingCalls()
    server = grpc.aio.server(interceptors=[counter])
    gpu_pb2_grpc.add_GpuServiceServicer_to_server(GpuServicer(cache, WatchHub(), gate), server)
    server.add_insecure_port(f"unix:{socket_dir / 'device.sock'}")
    await server.start()
    channel = grpc.aio.insecure_channel(f"unix:{socket_dir / 'device.sock'}")
    stub = gpu_pb2_grpc.GpuServiceStub(channel)
    await register(stub)
    counter.calls.clear()
    yield counter, stub
    await channel.close()
    await server.stop(None)


async def test_an_event_naming_thousands_of_unknown_gpus_costs_one_lookup(
    counted: tuple[CountingCalls, gpu_pb2_grpc.GpuServiceAsyncStub], socket_dir: Path
) -> None:
    counter, stub = counted
    strangers = [f"GPU-{index:08d}-0000-4000-8000-000000000000" for index in range(12_000)]
    client = GrpcDeviceApi(f"unix://{socket_dir / 'device.sock'}")
    async with Publisher(socket_dir / "spool", device_api=client, settings=FAST) as publisher:
        await publisher.submit(healthy(NODE, *strangers))
        assert counter.calls == {"ListGpus": 1}, "the agent's own GPU list answers for every UUID at once"
        assert publisher.pending() == {"device-api": 0}

        # The strangers are not remembered: an event about every GPU writes the two the node has.
        counter.calls.clear()
        await publisher.submit(healthy(NODE))
        assert counter.calls == {"ListGpus": 1, "UpdateGpuStatus": REGISTERED_GPUS}

        # And a real fault afterwards goes straight through.
        await publisher.submit(fatal_xid(NODE, GPU_A))
        found, action, _ = await conditions(stub, GPU_A.lower())
        assert (found[HEALTH_CONDITION], action) == ("False/SysLogsXIDError", "RESTART_BM")
        assert publisher.pending() == {"device-api": 0}
    await client.close()
