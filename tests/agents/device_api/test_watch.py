"""WatchGpus: the starting state, then every write in order; resuming; laggards dropped."""

from __future__ import annotations

import asyncio

import grpc

from gpuheal.agents.device_api import WatchState
from gpuheal.protos import gpu_pb2
from tests.agents.device_api.conftest import Api, ApiFactory, condition, create, eventually, rpc_error

WatchCall = grpc.aio.UnaryStreamCall[gpu_pb2.WatchGpusRequest, gpu_pb2.WatchGpusResponse]


async def next_event(call: WatchCall) -> gpu_pb2.WatchGpusResponse:
    event = await asyncio.wait_for(call.read(), timeout=5)
    assert isinstance(event, gpu_pb2.WatchGpusResponse), f"stream ended: {await call.code()}"
    return event


def summary(event: gpu_pb2.WatchGpusResponse) -> tuple[str, str, int]:
    return event.type, event.object.metadata.name, event.object.resource_version


async def watch(api: Api, resource_version: str = "") -> WatchCall:
    """Open a watch and wait until the server has subscribed it, so no write can race its start."""
    before = api.server.hub.watchers
    call = api.stub.WatchGpus(gpu_pb2.WatchGpusRequest(opts=gpu_pb2.ListOptions(resource_version=resource_version)))
    await eventually(lambda: api.server.hub.watchers > before)
    return call


async def set_status(api: Api, name: str, action: str) -> gpu_pb2.Gpu:
    status = gpu_pb2.GpuStatus(recommended_action=action)
    return (await api.stub.UpdateGpuStatus(gpu_pb2.UpdateGpuStatusRequest(name=name, status=status))).gpu


async def test_watch_sees_added_modified_deleted_in_order(api: Api) -> None:
    call = await watch(api)
    await create(api, "gpu-a")
    await create(api, "gpu-b")
    await set_status(api, "gpu-a", "COMPONENT_RESET")
    await api.stub.DeleteGpu(gpu_pb2.DeleteGpuRequest(name="gpu-b"))
    events = [await next_event(call) for _ in range(4)]
    assert [summary(e) for e in events] == [
        ("ADDED", "gpu-a", 1),
        ("ADDED", "gpu-b", 2),
        ("MODIFIED", "gpu-a", 3),
        ("DELETED", "gpu-b", 4),
    ]
    assert events[2].object.status.recommended_action == "COMPONENT_RESET"
    assert events[3].object.spec.uuid == "GPU-gpu-b"  # the last known state of what was deleted
    call.cancel()


async def test_watch_starts_with_the_current_state_then_follows(api: Api) -> None:
    for name in ("gpu-2", "gpu-0", "gpu-1"):
        await create(api, name)
    await set_status(api, "gpu-0", "NONE")
    call = await watch(api)
    initial = [summary(await next_event(call)) for _ in range(3)]
    assert initial == [("ADDED", "gpu-0", 4), ("ADDED", "gpu-1", 3), ("ADDED", "gpu-2", 1)]
    await set_status(api, "gpu-2", "RESTART_BM")
    assert summary(await next_event(call)) == ("MODIFIED", "gpu-2", 5)
    call.cancel()


async def test_watch_from_a_resource_version_replays_only_what_came_after(api: Api) -> None:
    await create(api, "gpu-0")
    await create(api, "gpu-1")
    listed = (await api.stub.ListGpus(gpu_pb2.ListGpusRequest())).gpu_list
    await set_status(api, "gpu-1", "one")
    await set_status(api, "gpu-0", "two")
    call = await watch(api, listed.metadata.resource_version)
    assert [summary(await next_event(call)) for _ in range(2)] == [("MODIFIED", "gpu-1", 3), ("MODIFIED", "gpu-0", 4)]
    await set_status(api, "gpu-1", "three")
    assert summary(await next_event(call)) == ("MODIFIED", "gpu-1", 5)
    call.cancel()


async def test_watch_from_a_version_no_longer_kept_is_out_of_range(make_api: ApiFactory) -> None:
    api = await make_api(expected_gpus=0, watch_history=2)
    await create(api, "gpu-0")
    for action in ("a", "b", "c"):
        await set_status(api, "gpu-0", action)
    for version in ("1", "99"):  # forgotten, and never reached (a client of a previous server)
        call = api.stub.WatchGpus(gpu_pb2.WatchGpusRequest(opts=gpu_pb2.ListOptions(resource_version=version)))
        error = await rpc_error(call.read())
        assert error.code() == grpc.StatusCode.OUT_OF_RANGE
        assert f"resource_version {version} is too old or unknown (events kept: 3..4)" in (error.details() or "")
    resumable = await watch(api, "2")  # the oldest kept event is 3: resuming from 2 loses nothing
    assert summary(await next_event(resumable)) == ("MODIFIED", "gpu-0", 3)
    resumable.cancel()


async def test_a_watcher_that_never_reads_is_dropped_and_others_get_every_event(make_api: ApiFactory) -> None:
    api = await make_api(expected_gpus=0, watch_queue_size=8)
    await create(api, "gpu-0")
    slow = await watch(api)
    fast = await watch(api)
    received: list[gpu_pb2.WatchGpusResponse] = []

    async def read_fast() -> None:
        async for event in fast:
            received.append(event)

    reader = asyncio.create_task(read_fast())
    # 28 KiB per event (within the status limit, with gpuheal's Healthy condition among them), 12.3 MiB
    # in all: more than the transport buffers for a client that never reads, so the slow watcher's
    # queue has to overflow.
    updates = 450
    for i in range(updates):
        status = gpu_pb2.GpuStatus(recommended_action=f"{i:06d}")
        status.conditions.extend(condition(f"Bulk{n}" if n else "Healthy", message="x" * 4000) for n in range(7))
        await api.stub.UpdateGpuStatus(gpu_pb2.UpdateGpuStatusRequest(name="gpu-0", status=status))
    await eventually(lambda: len(received) == 1 + updates)
    assert api.server.hub.dropped_total == 1
    assert api.server.hub.watchers == 1  # only the fast watcher is left
    assert [e.type for e in received] == ["ADDED"] + ["MODIFIED"] * updates
    assert [e.object.resource_version for e in received] == list(range(1, updates + 2))

    # What the slow watcher finally reads: what was in flight before the drop, then the verdict.
    got = 0

    async def drain_slow() -> None:
        nonlocal got
        async for _ in slow:
            got += 1

    error = await rpc_error(drain_slow())
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "fell more than 8 events or" in (error.details() or "")
    assert 0 < got <= updates
    await eventually(lambda: api.server.hub.streams == 1)  # the dropped stream is gone from the server
    reader.cancel()


async def test_stopping_the_server_ends_watches_with_unavailable(make_api: ApiFactory) -> None:
    api = await make_api(expected_gpus=0)
    call = await watch(api)  # subscribed on the server
    # An hour's grace: only the server ending the watch itself lets stop() return before the hang guard.
    await asyncio.wait_for(api.server.stop(grace=3600), timeout=60)
    assert (api.server.hub.watchers, api.server.hub.streams) == (0, 0)
    error = await rpc_error(call.read())
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "shutting down" in (error.details() or "")


async def test_a_watcher_that_goes_away_is_unsubscribed(api: Api) -> None:
    call = await watch(api)
    call.cancel()
    await eventually(lambda: api.server.hub.watchers == 0)
    await create(api, "gpu-0")  # publishing to nobody is fine
    assert api.server.hub.dropped_total == 0


async def test_watch_events_carry_conditions(api: Api) -> None:
    await create(api, "gpu-0")
    call = await watch(api, "1")
    status = gpu_pb2.GpuStatus(conditions=[condition("Ready", "False", "XID 79")], recommended_action="RESTART_BM")
    await api.stub.UpdateGpuStatus(gpu_pb2.UpdateGpuStatusRequest(name="gpu-0", status=status, resource_version=1))
    event = await next_event(call)
    assert event.object.status == status
    call.cancel()


async def test_a_writer_in_the_process_waits_for_a_watcher_that_reads_not_for_one_that_stopped(
    make_api: ApiFactory,
) -> None:
    """In-process calls are paced as gRPC's are: a watcher reading as fast as its stream sends keeps
    up with twelve times its queue in writes, while one that takes nothing is dropped, the writer going on."""
    api = await make_api(expected_gpus=0, watch_queue_size=8)
    await create(api, "gpu-0")
    version = api.server.cache.resource_version
    stopped = api.server.hub.open(api.server.cache, str(version))  # a watcher that never takes an event
    reading = await watch(api, str(version))
    received: list[int] = []

    async def read() -> None:
        async for event in reading:
            received.append(event.object.resource_version)

    reader = asyncio.create_task(read())
    service = api.server.service
    for action in range(100):
        status = gpu_pb2.GpuStatus(recommended_action=f"{action:06d}")
        call = api.server.call(service.update_gpu_status, gpu_pb2.UpdateGpuStatusRequest(name="gpu-0", status=status))
        await asyncio.wait_for(call, 10)  # bounded: a watcher that stopped must not hold the writer
    await eventually(lambda: len(received) == 100)
    assert received == list(range(version + 1, version + 101))
    assert (stopped.state, api.server.hub.dropped_total, api.server.hub.watchers) == (WatchState.DROPPED, 1, 1)
    reader.cancel()
    api.server.hub.close(stopped)
