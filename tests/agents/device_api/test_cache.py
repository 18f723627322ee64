"""The cache and the watch hub in-process: copies, bounds, and a watch that replays to the cache."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuheal.agents.device_api import (
    ConflictError,
    DeviceApiError,
    GpuCache,
    ReadinessGate,
    WatchHub,
    WatchState,
)
from gpuheal.protos import gpu_pb2
from tests.agents.device_api.conftest import make_gpu


def test_objects_are_copied_in_and_out() -> None:
    cache = GpuCache()
    mine = make_gpu("gpu-0")
    stored, created = cache.create(mine)
    assert created
    mine.spec.uuid = "GPU-changed-by-caller"
    stored.status.recommended_action = "changed-by-caller"
    got = cache.get("gpu-0")
    assert got.spec.uuid == "GPU-gpu-0"
    assert got.status.recommended_action == ""
    got.metadata.name = "renamed"
    assert cache.list_gpus()[1][0].metadata.name == "gpu-0"


def test_list_response_is_rebuilt_after_every_write() -> None:
    cache = GpuCache()
    cache.create(make_gpu("gpu-0"))
    first = cache.list_response()
    assert cache.list_response() is first  # shared between readers of the same version
    cache.update_status("gpu-0", gpu_pb2.GpuStatus(recommended_action="RESTART_BM"))
    second = cache.list_response()
    assert second is not first
    assert second.gpu_list.metadata.resource_version == "2"
    assert second.gpu_list.items[0].status.recommended_action == "RESTART_BM"
    assert first.gpu_list.items[0].status.recommended_action == ""  # the old snapshot did not move


def test_update_status_requires_the_current_version_when_one_is_given() -> None:
    cache = GpuCache()
    cache.create(make_gpu("gpu-0"))
    cache.update_status("gpu-0", gpu_pb2.GpuStatus(recommended_action="a"), resource_version=1)
    with pytest.raises(ConflictError, match="resource_version 1 is stale: current is 2"):
        cache.update_status("gpu-0", gpu_pb2.GpuStatus(recommended_action="b"), resource_version=1)
    assert cache.get("gpu-0").status.recommended_action == "a"


def test_delete_stamps_the_deletion_version() -> None:
    cache = GpuCache()
    cache.create(make_gpu("gpu-0"))
    gone = cache.delete("gpu-0")
    assert gone.resource_version == 2 == cache.resource_version
    assert "gpu-0" not in cache


def test_gate_rejects_a_negative_count_and_opens_once() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        ReadinessGate(-1)
    gate = ReadinessGate(2)
    opened: list[str] = []
    gate.add_listener(lambda: opened.append(gate.reason))
    gate.observe(1)
    assert not gate.ready
    gate.observe(2)
    gate.mark_ready()
    assert opened == ["2 of 2 GPUs registered"]


# A random sequence of provider writes (some refused) must reach a watcher, in version order and
# without gaps, such that replaying its events rebuilds exactly what the cache holds.
operation = st.tuples(
    st.sampled_from(["create", "update", "update_status", "delete"]),
    st.sampled_from(["gpu-0", "gpu-1", "gpu-2"]),
    st.sampled_from(["", "a", "b"]),
    st.integers(min_value=0, max_value=6),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(operation, max_size=40))
def test_a_watch_replays_to_the_cache_state(operations: list[tuple[str, str, str, int]]) -> None:
    asyncio.run(_replay_matches(operations))


async def _replay_matches(operations: list[tuple[str, str, str, int]]) -> None:
    cache = GpuCache(max_gpus=2)
    hub = WatchHub(queue_size=1000)
    cache.add_listener(hub.publish)
    sub = hub.open(cache)
    for kind, name, action, version in operations:
        gpu = make_gpu(name)
        gpu.status.recommended_action = action
        gpu.resource_version = version
        try:
            if kind == "create":
                cache.create(gpu)
            elif kind == "update":
                cache.update(gpu)
            elif kind == "update_status":
                cache.update_status(name, gpu.status, version)
            else:
                cache.delete(name)
        except DeviceApiError:
            pass  # refused writes must leave no trace, which the replay below checks
    replayed: dict[str, gpu_pb2.Gpu] = {}
    versions: list[int] = []
    while sub.pending:
        event = await sub.next()
        versions.append(event.object.resource_version)
        if event.type == "DELETED":
            del replayed[event.object.metadata.name]
        else:
            replayed[event.object.metadata.name] = event.object
    assert versions == list(range(1, cache.resource_version + 1))
    _, state = cache.snapshot()
    assert {g.metadata.name: g for g in state} == replayed
    assert sub.state is WatchState.OPEN
