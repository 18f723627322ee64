"""One resource version for the whole cache, and optimistic concurrency that loses no update."""

from __future__ import annotations

import asyncio

import grpc

from gpuheal.protos import gpu_pb2
from tests.agents.device_api.conftest import Api, condition, create


async def list_version(api: Api) -> int:
    listed = await api.stub.ListGpus(gpu_pb2.ListGpusRequest())
    return int(listed.gpu_list.metadata.resource_version)


async def test_every_write_bumps_the_version_and_list_reports_it(api: Api) -> None:
    assert await list_version(api) == 0
    seen: list[int] = []
    for name in ("gpu-b", "gpu-a", "gpu-c"):
        gpu = await create(api, name)
        assert gpu.metadata.resource_version == str(gpu.resource_version)
        seen.append(gpu.resource_version)
        assert await list_version(api) == gpu.resource_version
    status = gpu_pb2.GpuStatus(conditions=[condition("Ready", "False")])
    updated = await api.stub.UpdateGpuStatus(gpu_pb2.UpdateGpuStatusRequest(name="gpu-a", status=status))
    seen.append(updated.gpu.resource_version)
    await api.stub.DeleteGpu(gpu_pb2.DeleteGpuRequest(name="gpu-c"))
    seen.append(await list_version(api))
    assert seen == [1, 2, 3, 4, 5]

    listed = (await api.stub.ListGpus(gpu_pb2.ListGpusRequest())).gpu_list
    assert [g.metadata.name for g in listed.items] == ["gpu-a", "gpu-b"]  # sorted by name
    assert {g.metadata.name: g.resource_version for g in listed.items} == {"gpu-a": 4, "gpu-b": 1}
    got = (await api.stub.GetGpu(gpu_pb2.GetGpuRequest(name="gpu-a"))).gpu
    assert got.status == status
    assert got.metadata.resource_version == "4"


async def test_an_update_that_changes_nothing_writes_nothing(api: Api) -> None:
    await create(api, "gpu-0")
    status = gpu_pb2.GpuStatus(conditions=[condition("Ready")])
    first = await api.stub.UpdateGpuStatus(gpu_pb2.UpdateGpuStatusRequest(name="gpu-0", status=status))
    again = await api.stub.UpdateGpuStatus(gpu_pb2.UpdateGpuStatusRequest(name="gpu-0", status=status))
    assert first.gpu.resource_version == again.gpu.resource_version == 2
    assert await list_version(api) == 2


async def test_concurrent_writers_with_the_same_version_exactly_one_wins(api: Api) -> None:
    await create(api, "gpu-0")
    everyone_read = asyncio.Event()
    readers = 0

    async def writer(index: int) -> grpc.aio.AioRpcError | None:
        nonlocal readers
        gpu = (await api.stub.GetGpu(gpu_pb2.GetGpuRequest(name="gpu-0"))).gpu
        readers += 1
        if readers == 20:
            everyone_read.set()
        await everyone_read.wait()  # all 20 hold the same version before anyone writes
        gpu.status.conditions.append(condition(f"Writer{index}"))
        request = gpu_pb2.UpdateGpuStatusRequest(name="gpu-0", status=gpu.status, resource_version=gpu.resource_version)
        try:
            await api.stub.UpdateGpuStatus(request)
        except grpc.aio.AioRpcError as error:
            return error
        return None

    outcomes = await asyncio.gather(*(writer(i) for i in range(20)))
    winners = [i for i, error in enumerate(outcomes) if error is None]
    assert len(winners) == 1
    refused = [(e.code(), e.details()) for e in outcomes if e is not None]
    assert refused == [(grpc.StatusCode.ABORTED, 'gpu "gpu-0": resource_version 1 is stale: current is 2')] * 19
    final = (await api.stub.GetGpu(gpu_pb2.GetGpuRequest(name="gpu-0"))).gpu
    assert final.resource_version == 2
    assert [c.type for c in final.status.conditions] == [f"Writer{winners[0]}"]


async def test_read_modify_write_with_retries_loses_no_update(api: Api) -> None:
    await create(api, "gpu-0")
    aborted = 0

    async def writer(index: int) -> None:
        nonlocal aborted
        while True:
            gpu = (await api.stub.GetGpu(gpu_pb2.GetGpuRequest(name="gpu-0"))).gpu
            await asyncio.sleep(0)  # let the other writers interleave between read and write
            gpu.status.conditions.append(condition(f"Writer{index}"))
            request = gpu_pb2.UpdateGpuStatusRequest(
                name="gpu-0", status=gpu.status, resource_version=gpu.resource_version
            )
            try:
                await api.stub.UpdateGpuStatus(request)
                return
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.ABORTED:
                    raise
                aborted += 1

    await asyncio.gather(*(writer(i) for i in range(20)))
    final = (await api.stub.GetGpu(gpu_pb2.GetGpuRequest(name="gpu-0"))).gpu
    assert sorted(c.type for c in final.status.conditions) == sorted(f"Writer{i}" for i in range(20))
    assert final.resource_version == 21  # the create and exactly one successful write per writer
    assert aborted > 0  # the writers did collide, and the conflicts were caught
