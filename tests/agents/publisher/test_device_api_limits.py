"""The Device API lane against a Device API at its limits: the largest list, a status others filled, a list too large.

Each test runs with both clients (`connect`): over gRPC and in the server's process.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from gpuheal.agents.device_api import DeviceApiServer
from gpuheal.agents.device_api.limits import NAME_MAX_CHARS, worst_list_bytes
from gpuheal.agents.publisher import HEALTH_CONDITION, Publisher
from gpuheal.agents.publisher.device_api import InProcessDeviceApi, ListTooLarge, publish_gpu_health
from gpuheal.agents.publisher.ledger import MAX_MESSAGE_BYTES, OpenFaults
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.health import HealthEvent
from gpuheal.protos import gpu_pb2, gpu_pb2_grpc
from tests.agents.device_api.conftest import LIMITS, condition, largest_status
from tests.agents.publisher.conftest import FAST, Connect
from tests.agents.publisher.events import fatal_xid

NODE = "gpu-node-7"
# The longest action name gpuheal writes as a recommended action.
LONGEST_ACTION = max(RecommendedAction, key=lambda action: len(action.name))


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[DeviceApiServer]:
    async with DeviceApiServer(tmp_path / "device.sock") as started:
        started.mark_ready()
        yield started


@pytest.fixture
async def client(server: DeviceApiServer, connect: Connect) -> InProcessDeviceApi:
    # Async, so the gRPC variant's channel is made on the test's loop: a sync fixture runs
    # outside it, where grpc.aio finds a loop only if an earlier test left one behind.
    return connect(server)


def largest_gpu(index: int) -> gpu_pb2.Gpu:
    """A GPU as large as every limit lets it be: name, namespace, UUID and a full status."""
    gpu = gpu_pb2.Gpu(status=largest_status(index))
    gpu.metadata.name = f"{index:04d}".rjust(NAME_MAX_CHARS, "g")
    gpu.metadata.namespace = "n" * 63
    gpu.spec.uuid = f"GPU-{index:04d}".ljust(LIMITS.max_uuid_bytes, "f")
    return gpu


def worst_verdict_event(uuid: str) -> HealthEvent:
    """A fault whose verdict is as long as gpuheal writes: the longest reason, message and action."""
    return fatal_xid(NODE, uuid, check_name="C" * 2048, message="m" * (4 * MAX_MESSAGE_BYTES), action=LONGEST_ACTION)


async def test_the_largest_cache_lists_through_the_client_and_takes_gpuhealths_write(
    server: DeviceApiServer, client: InProcessDeviceApi
) -> None:
    for index in range(server.cache.max_gpus):
        server.cache.create(largest_gpu(index))
    listed = await client.list_gpus()
    assert len(listed) == 1024
    assert sum(gpu.ByteSize() for gpu in listed) > 32 * 1024 * 1024  # the worst case, not a small one

    target = largest_gpu(7)
    await publish_gpu_health(client, OpenFaults(), worst_verdict_event(target.spec.uuid))
    written = server.cache.get(target.metadata.name).status
    health = [c for c in written.conditions if c.type == HEALTH_CONDITION]
    assert [(c.status, c.reason[:4], written.recommended_action) for c in health] == [
        ("False", "CCCC", LONGEST_ACTION.name)
    ]
    assert len(health[0].reason.encode()) <= LIMITS.max_condition_reason_bytes  # cut to what the API takes


async def fill_as_another_provider(stub: gpu_pb2_grpc.GpuServiceAsyncStub, name: str) -> gpu_pb2.GpuStatus:
    """Write the fullest status the server takes: as many conditions as it allows, with messages as long as fit."""
    for count in (32, 31):
        shortest, longest = 0, LIMITS.max_condition_message_bytes
        taken: gpu_pb2.GpuStatus | None = None
        while shortest <= longest:
            length = (shortest + longest) // 2
            status = gpu_pb2.GpuStatus(
                conditions=[condition(f"vendor.example/Check{i}", message="x" * length) for i in range(count)]
            )
            try:
                await stub.UpdateGpuStatus(gpu_pb2.UpdateGpuStatusRequest(name=name, status=status))
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.INVALID_ARGUMENT:
                    raise
                longest = length - 1
            else:
                taken, shortest = status, length + 1
        if taken is not None:
            await stub.UpdateGpuStatus(gpu_pb2.UpdateGpuStatusRequest(name=name, status=taken))
            return taken
    raise AssertionError("the server takes no status of 31 conditions")


async def test_a_status_another_provider_filled_still_takes_the_health_condition(
    server: DeviceApiServer, client: InProcessDeviceApi, tmp_path: Path
) -> None:
    channel = grpc.aio.insecure_channel(server.target)
    stub = gpu_pb2_grpc.GpuServiceStub(channel)
    gpu = gpu_pb2.Gpu(metadata=gpu_pb2.ObjectMeta(name="gpu-0"), spec=gpu_pb2.GpuSpec(uuid="GPU-0"))
    await stub.CreateGpu(gpu_pb2.CreateGpuRequest(gpu=gpu))
    others = await fill_as_another_provider(stub, "gpu-0")

    async with Publisher(tmp_path / "spool", device_api=client, settings=FAST) as publisher:
        await publisher.submit(worst_verdict_event("GPU-0"))
        assert publisher.pending() == {"device-api": 0}
    written = (await stub.GetGpu(gpu_pb2.GetGpuRequest(name="gpu-0"))).gpu.status
    assert [c.type for c in written.conditions] == [c.type for c in others.conditions] + [HEALTH_CONDITION]
    assert (written.conditions[-1].status, written.recommended_action) == ("False", LONGEST_ACTION.name)
    await channel.close()


async def test_a_list_larger_than_the_client_takes_is_refused_for_good_not_retried(
    server: DeviceApiServer, connect: Connect, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for index in range(4):
        server.cache.create(largest_gpu(index))
    client = connect(server, max_list_bytes=64 * 1024)
    with caplog.at_level(logging.ERROR):
        async with Publisher(tmp_path / "spool", device_api=client, settings=FAST) as publisher:
            first = worst_verdict_event(largest_gpu(0).spec.uuid)
            await publisher.submit(first)
            assert publisher.pending() == {"device-api": 0}, "the lane does not keep an event it can never deliver"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        f"device-api refused event {first.id} for good; dropping it there"
    ]
    assert "the GPU list is larger than this client takes" in caplog.text


async def test_the_list_limit_refuses_a_list_one_byte_over_it_and_takes_one_at_it(
    connect: Connect, short_dir: Path
) -> None:
    """A limit under what the server's cache could answer is checked on every list, whichever client."""
    async with DeviceApiServer(short_dir / "four.sock", max_gpus=4) as small:
        small.mark_ready()
        for index in range(4):
            small.cache.create(largest_gpu(index))
        size = small.cache.list_response().ByteSize()
        assert size < worst_list_bytes(4, small.cache.limits)
        assert len(await connect(small, max_list_bytes=size).list_gpus()) == 4
        with pytest.raises(ListTooLarge):
            await connect(small, max_list_bytes=size - 1).list_gpus()
