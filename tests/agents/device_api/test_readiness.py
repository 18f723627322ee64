"""Consumers are refused (UNAVAILABLE) until providers have registered the node's GPUs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped,unused-ignore]

from gpuheal.agents.device_api import GPU_SERVICE_NAME
from gpuheal.protos import gpu_pb2
from tests.agents.device_api.conftest import Api, ApiFactory, create, rpc_error

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING


async def assert_consumers_refused(api: Api, progress: str) -> None:
    expected = f"providers have not registered this node's GPUs yet ({progress})"
    calls: list[Awaitable[object]] = [
        api.stub.GetGpu(gpu_pb2.GetGpuRequest(name="gpu-0")),
        api.stub.ListGpus(gpu_pb2.ListGpusRequest()),
        api.stub.WatchGpus(gpu_pb2.WatchGpusRequest()).read(),
    ]
    for call in calls:
        error = await rpc_error(call)
        assert (error.code(), error.details()) == (grpc.StatusCode.UNAVAILABLE, expected)


async def health_of(api: Api, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(api.channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service))
    return int(response.status)


async def test_expected_gpus_gate_opens_when_all_are_registered(make_api: ApiFactory) -> None:
    api = await make_api(expected_gpus=2)
    await assert_consumers_refused(api, "0 of 2 registered")
    assert await health_of(api, "") == NOT_SERVING
    assert await health_of(api, GPU_SERVICE_NAME) == NOT_SERVING

    await create(api, "gpu-0")  # writes are always allowed
    await assert_consumers_refused(api, "1 of 2 registered")
    assert not api.server.ready

    await create(api, "gpu-1")
    assert api.server.ready
    listed = await api.stub.ListGpus(gpu_pb2.ListGpusRequest())
    assert [g.metadata.name for g in listed.gpu_list.items] == ["gpu-0", "gpu-1"]
    got = await api.stub.GetGpu(gpu_pb2.GetGpuRequest(name="gpu-1"))
    assert got.gpu.spec.uuid == "GPU-gpu-1"

    async def serving() -> bool:
        return await health_of(api, GPU_SERVICE_NAME) == SERVING and await health_of(api, "") == SERVING

    deadline = asyncio.get_running_loop().time() + 5
    while not await serving():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)


async def test_the_gate_stays_open_when_a_gpu_goes_away(make_api: ApiFactory) -> None:
    api = await make_api(expected_gpus=1)
    await create(api, "gpu-0")
    await api.stub.DeleteGpu(gpu_pb2.DeleteGpuRequest(name="gpu-0"))
    listed = await api.stub.ListGpus(gpu_pb2.ListGpusRequest())
    assert list(listed.gpu_list.items) == []


async def test_mark_ready_opens_the_gate_and_health_watch_sees_the_change(make_api: ApiFactory) -> None:
    api = await make_api()  # no expected count: a provider says when registration is complete
    await create(api, "gpu-0")
    await assert_consumers_refused(api, "1 registered, waiting for a provider to mark registration complete")

    health = health_pb2_grpc.HealthStub(api.channel)
    updates = health.Watch(health_pb2.HealthCheckRequest(service=GPU_SERVICE_NAME))
    first = await asyncio.wait_for(updates.read(), timeout=5)
    assert first.status == NOT_SERVING

    api.server.mark_ready()
    second = await asyncio.wait_for(updates.read(), timeout=5)
    assert second.status == SERVING
    updates.cancel()
    got = await api.stub.GetGpu(gpu_pb2.GetGpuRequest(name="gpu-0"))
    assert got.gpu.metadata.name == "gpu-0"


async def test_a_node_without_gpus_is_ready_at_once(make_api: ApiFactory) -> None:
    api = await make_api(expected_gpus=0)
    assert api.server.ready
    listed = await api.stub.ListGpus(gpu_pb2.ListGpusRequest())
    assert listed.gpu_list.metadata.resource_version == "0"
    assert await health_of(api, GPU_SERVICE_NAME) == SERVING
