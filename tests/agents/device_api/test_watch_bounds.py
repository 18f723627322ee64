"""What watches may cost: the starting state is not copied up front, and only so many are served at once."""

from __future__ import annotations

import gc

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]

from gpuheal.agents.device_api import GpuCache, WatchHub
from gpuheal.protos import gpu_pb2
from tests.agents.device_api.conftest import ApiFactory, create, eventually, make_gpu, rpc_error
from tests.agents.device_api.test_watch import next_event, summary, watch


def live_watch_events() -> int:
    """WatchGpusResponse messages alive in this process: each holds a copy of its GPU."""
    gc.collect()
    return sum(1 for thing in gc.get_objects() if type(thing) is gpu_pb2.WatchGpusResponse)


async def test_a_watch_from_the_start_builds_each_added_event_as_it_is_sent() -> None:
    cache = GpuCache()
    hub = WatchHub()
    cache.add_listener(hub.publish)
    for index in range(50):
        cache.create(make_gpu(f"gpu-{index:02d}"))
    before = live_watch_events()
    sub = hub.open(cache)
    assert (sub.pending, live_watch_events() - before) == (50, 0), "the cache is not copied when a watch opens"

    cache.update_status("gpu-00", gpu_pb2.GpuStatus(recommended_action="RESTART_VM"))
    first = await sub.next()  # the state the watch started from, though the GPU changed since
    assert (summary(first), first.object.status.recommended_action) == (("ADDED", "gpu-00", 1), "")
    assert live_watch_events() - before == 2  # the one handed out and the live MODIFIED queued
    rest = [summary(await sub.next()) for _ in range(50)]
    assert rest == [("ADDED", f"gpu-{i:02d}", i + 1) for i in range(1, 50)] + [("MODIFIED", "gpu-00", 51)]
    hub.close(sub)


async def test_watches_past_the_limit_are_refused_naming_it(make_api: ApiFactory) -> None:
    api = await make_api(expected_gpus=0, max_watches=2)
    await create(api, "gpu-0")
    first, second = await watch(api), await watch(api)
    error = await rpc_error(next_event(api.stub.WatchGpus(gpu_pb2.WatchGpusRequest())))
    assert (error.code(), error.details()) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "2 watches are open, at most 2 are served at once (max_watches); close one or try again later",
    )
    first.cancel()
    await eventually(lambda: api.server.hub.streams == 1)
    third = await watch(api)
    assert summary(await next_event(third)) == ("ADDED", "gpu-0", 1)
    assert summary(await next_event(second)) == ("ADDED", "gpu-0", 1)
    second.cancel()
    third.cancel()


async def test_calls_past_the_servers_bound_are_refused_by_grpc(make_api: ApiFactory) -> None:
    api = await make_api(expected_gpus=0, max_watches=1, max_calls=1)
    await create(api, "gpu-0")
    watching = await watch(api)  # one call held open
    health = health_pb2_grpc.HealthStub(api.channel).Watch(health_pb2.HealthCheckRequest(service=""))
    assert (await health.read()).status == health_pb2.HealthCheckResponse.SERVING  # and a second
    error = await rpc_error(api.stub.GetGpu(gpu_pb2.GetGpuRequest(name="gpu-0")))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    health.cancel()
    watching.cancel()
