"""Memory bounded in bytes: what a write may carry, and what the watch history and queues keep of it."""

from __future__ import annotations

import grpc
import pytest

from gpuheal.agents.device_api import ExpiredError, GpuCache, InvalidArgumentError, WatchHub, WatchState
from gpuheal.agents.device_api.limits import GpuLimits
from gpuheal.protos import gpu_pb2
from tests.agents.device_api.conftest import Api, ApiFactory, condition, create, largest_status, make_gpu, rpc_error


async def update_status(api: Api, status: gpu_pb2.GpuStatus, name: str = "gpu-0") -> gpu_pb2.Gpu:
    return (await api.stub.UpdateGpuStatus(gpu_pb2.UpdateGpuStatusRequest(name=name, status=status))).gpu


async def test_a_write_of_megabytes_is_refused_before_it_is_read(api: Api) -> None:
    await create(api, "gpu-0")
    status = gpu_pb2.GpuStatus(conditions=[condition("Huge", message="x" * (3900 * 1024))])
    error = await rpc_error(update_status(api, status))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert api.server.cache.resource_version == 1  # nothing written


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (
            gpu_pb2.GpuStatus(conditions=[condition(f"C{i}") for i in range(33)]),
            'gpu "gpu-0": status has 33 conditions; at most 32 are accepted',
        ),
        (
            gpu_pb2.GpuStatus(conditions=[condition("Healthy", message="m" * 4097)]),
            'gpu "gpu-0": status.conditions[0].message is 4097 bytes; at most 4096 are accepted',
        ),
        (
            gpu_pb2.GpuStatus(conditions=[condition("Ok"), gpu_pb2.Condition(type="Healthy", reason="r" * 1025)]),
            'gpu "gpu-0": status.conditions[1].reason is 1025 bytes; at most 1024 are accepted',
        ),
        (
            gpu_pb2.GpuStatus(conditions=[condition("T" * 317)]),
            'gpu "gpu-0": status.conditions[0].type is 317 bytes; at most 316 are accepted',
        ),
        (
            gpu_pb2.GpuStatus(conditions=[condition(f"C{i}", message="m" * 4000) for i in range(9)]),
            'gpu "gpu-0": status is 36198 bytes; at most 32768 are accepted',
        ),
    ],
)
async def test_a_status_over_a_limit_is_refused_naming_it(api: Api, status: gpu_pb2.GpuStatus, expected: str) -> None:
    await create(api, "gpu-0")
    for call in (
        update_status(api, status),
        api.stub.UpdateGpu(
            gpu_pb2.UpdateGpuRequest(
                gpu=gpu_pb2.Gpu(metadata=make_gpu("gpu-0").metadata, spec=make_gpu("gpu-0").spec, status=status)
            )
        ),
        api.stub.CreateGpu(
            gpu_pb2.CreateGpuRequest(
                gpu=gpu_pb2.Gpu(metadata=make_gpu("gpu-0").metadata, spec=make_gpu("gpu-0").spec, status=status)
            )
        ),
    ):
        error = await rpc_error(call)
        assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, expected)
    assert api.server.cache.resource_version == 1


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (
            gpu_pb2.GpuStatus(conditions=[condition(f"vendor.example/Check{i}") for i in range(32)]),
            'gpu "gpu-0": status has 32 conditions of types other than Healthy; at most 31 are accepted '
            "(one place is kept for Healthy)",
        ),
        (
            gpu_pb2.GpuStatus(conditions=[condition(f"C{i}", message="m" * 3900) for i in range(7)]),
            'gpu "gpu-0": status conditions of types other than Healthy are 27454 bytes; at most 27290 are accepted '
            "(the rest is kept for Healthy)",
        ),
    ],
)
async def test_other_conditions_leave_room_for_gpuhealths_own(
    api: Api, status: gpu_pb2.GpuStatus, expected: str
) -> None:
    await create(api, "gpu-0")
    error = await rpc_error(update_status(api, status))
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, expected)
    del status.conditions[0]
    status.conditions.append(condition("Healthy", status="False", message="m" * 1024))
    taken = await update_status(api, status)  # one fewer fits, with gpuheal's own beside them
    assert [c.type for c in taken.status.conditions] == [c.type for c in status.conditions]


def test_limits_without_room_for_the_health_condition_are_refused() -> None:
    with pytest.raises(
        ValueError,
        match=r"^a status of at most 32 conditions and 4096 bytes has no room for the largest Healthy condition",
    ):
        GpuLimits(max_status_bytes=4096)


async def test_the_watch_history_stays_within_its_byte_budget(make_api: ApiFactory) -> None:
    budget = 1024 * 1024
    api = await make_api(expected_gpus=0, watch_history_bytes=budget)
    await create(api, "gpu-0")
    for index in range(100):  # 3.2 MiB written, three times the budget
        await update_status(api, largest_status(index))
        assert api.server.hub.history_bytes <= budget

    # The accounting is the events kept: replaying from the oldest of them returns exactly those bytes.
    hub, cache = api.server.hub, api.server.cache
    oldest = cache.resource_version
    while oldest > 1 and _replayable(api, oldest - 2):
        oldest -= 1
    assert oldest > 2, "the history was trimmed"
    replayed = hub.open(cache, str(oldest - 1))
    events = [await replayed.next() for _ in range(replayed.pending)]
    hub.close(replayed)
    assert [e.object.resource_version for e in events] == list(range(oldest, cache.resource_version + 1))
    assert sum(e.ByteSize() for e in events) == hub.history_bytes
    error = await rpc_error(_first_event(api, str(oldest - 2)))
    assert error.code() == grpc.StatusCode.OUT_OF_RANGE


def _replayable(api: Api, since: int) -> bool:
    """Whether a watch from `since` can resume from the history."""
    try:
        api.server.hub.close(api.server.hub.open(api.server.cache, str(since)))
    except ExpiredError:
        return False
    return True


async def _first_event(api: Api, resource_version: str) -> gpu_pb2.WatchGpusResponse:
    call = api.stub.WatchGpus(gpu_pb2.WatchGpusRequest(opts=gpu_pb2.ListOptions(resource_version=resource_version)))
    event = await call.read()
    assert isinstance(event, gpu_pb2.WatchGpusResponse)
    return event


async def test_a_watcher_is_dropped_once_its_queue_holds_its_byte_budget() -> None:
    budget = 256 * 1024
    cache = GpuCache()
    hub = WatchHub(queue_size=10_000, queue_bytes=budget)
    cache.add_listener(hub.publish)
    cache.create(make_gpu("gpu-0"))
    idle = hub.open(cache, str(cache.resource_version))  # never reads
    for index in range(20):
        cache.update_status("gpu-0", largest_status(index))
        assert idle.queued_bytes <= budget
    assert idle.state is WatchState.DROPPED
    assert idle.queued_bytes == 0  # and what it held is let go at once
    assert hub.watchers == 0


def test_the_cache_refuses_a_status_over_its_limit_in_process() -> None:
    small = GpuLimits(
        max_status_bytes=2048,
        max_condition_message_bytes=512,
        max_condition_reason_bytes=64,
        max_condition_status_bytes=8,
        max_recommended_action_bytes=32,
    )
    cache = GpuCache(limits=small)
    cache.create(make_gpu("gpu-0"))
    status = gpu_pb2.GpuStatus(conditions=[condition(f"C{i}", message="m" * 500) for i in range(5)])
    with pytest.raises(InvalidArgumentError, match=r"status is 2\d+ bytes; at most 2048 are accepted"):
        cache.update_status("gpu-0", status)
