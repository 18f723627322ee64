"""GPU health in the Device API, written by the publisher to the agent's Device API server.

Every test runs with both clients (`connect`): gRPC over the server's socket, and in the server's
process, as the agent writes; a last test runs one scenario through each and compares what the
server stored, counted and answered.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from gpuheal.agents.device_api import DeviceApiServer
from gpuheal.agents.publisher import HEALTH_CONDITION, DependencyUnavailable, InProcessDeviceApi, Publisher
from gpuheal.agents.publisher.device_api import ListTooLarge, Refused, publish_gpu_health
from gpuheal.agents.publisher.ledger import OpenFaults, Verdict
from gpuheal.domain.actions import RecommendedAction
from gpuheal.protos import gpu_pb2, gpu_pb2_grpc
from tests.agents.device_api.conftest import eventually
from tests.agents.publisher.conftest import FAST, Connect
from tests.agents.publisher.events import GPU_A, GPU_B, fatal_xid, healthy, non_fatal
from tests.agents.publisher.grpc_device_api import GrpcDeviceApi

NODE = "gpu-node-7"
# What `register` creates: the Device API's readiness gate opens only once both are there, so no
# reader (the publisher's lookup included) can see the node before its GPUs are registered.
REGISTERED_GPUS = 2
FAULT = Verdict(healthy=False, reason="SysLogsXIDError", message="XID 79", action=RecommendedAction.RESTART_BM)


@dataclass
class Calls:
    """What the server tells its `answered` hook (the agent's request metrics): calls by method and code."""

    counted: Counter[tuple[str, str]] = field(default_factory=Counter)

    def __call__(self, method: str, code: str) -> None:
        self.counted[method, code] += 1


@dataclass
class Node:
    """The node's Device API, a provider's stub on its socket, and the calls it counted."""

    server: DeviceApiServer
    stub: gpu_pb2_grpc.GpuServiceAsyncStub
    calls: Calls


@pytest.fixture
def socket_dir(short_dir: Path) -> Path:
    return short_dir


def registered_gpus() -> list[gpu_pb2.Gpu]:
    """GPU A under its lower-cased UUID, with another provider's condition; GPU B under an index name."""
    a = gpu_pb2.Gpu(metadata=gpu_pb2.ObjectMeta(name=GPU_A.lower()), spec=gpu_pb2.GpuSpec(uuid=GPU_A))
    a.status.conditions.add(type="Ready", status="True", reason="Enumerated")
    b = gpu_pb2.Gpu(metadata=gpu_pb2.ObjectMeta(name="gpu-1"), spec=gpu_pb2.GpuSpec(uuid=GPU_B))
    return [a, b]


async def register(stub: gpu_pb2_grpc.GpuServiceAsyncStub) -> None:
    """Create the server's REGISTERED_GPUS: the second CreateGpu opens its readiness gate."""
    for gpu in registered_gpus():
        await stub.CreateGpu(gpu_pb2.CreateGpuRequest(gpu=gpu), wait_for_ready=True)


async def conditions(stub: gpu_pb2_grpc.GpuServiceAsyncStub, name: str) -> tuple[dict[str, str], str, int]:
    gpu = (await stub.GetGpu(gpu_pb2.GetGpuRequest(name=name))).gpu
    return (
        {c.type: f"{c.status}/{c.reason}" for c in gpu.status.conditions},
        gpu.status.recommended_action,
        gpu.resource_version,
    )


@pytest.fixture
async def node(socket_dir: Path) -> AsyncIterator[Node]:
    calls = Calls()
    async with DeviceApiServer(socket_dir / "device.sock", expected_gpus=REGISTERED_GPUS, answered=calls) as server:
        channel = grpc.aio.insecure_channel(f"unix://{server.socket_path}")
        stub = gpu_pb2_grpc.GpuServiceStub(channel)
        await register(stub)
        calls.counted.clear()
        yield Node(server, stub, calls)
        await channel.close()


async def test_fatal_and_healthy_events_set_the_gpus_health(node: Node, connect: Connect, socket_dir: Path) -> None:
    async with Publisher(socket_dir / "spool", device_api=connect(node.server), settings=FAST) as publisher:
        await publisher.submit(fatal_xid(NODE, GPU_A))
        await publisher.submit(fatal_xid(NODE, GPU_B, xid=48, action=RecommendedAction.COMPONENT_RESET))
        a_conditions, a_action, _ = await conditions(node.stub, GPU_A.lower())
        assert a_conditions == {"Ready": "True/Enumerated", HEALTH_CONDITION: "False/SysLogsXIDError"}
        assert a_action == "RESTART_BM"
        b_conditions, b_action, b_version = await conditions(node.stub, "gpu-1")  # found by spec.uuid
        assert (b_conditions[HEALTH_CONDITION], b_action) == ("False/SysLogsXIDError", "COMPONENT_RESET")

        await publisher.submit(non_fatal(NODE, GPU_B))  # informational: the GPU is not written
        assert (await conditions(node.stub, "gpu-1"))[2] == b_version

        await publisher.submit(healthy(NODE))  # names no GPU: every GPU heard of
        for name in (GPU_A.lower(), "gpu-1"):
            found, action, _ = await conditions(node.stub, name)
            assert (found[HEALTH_CONDITION], action) == ("True/GpusHealthy", "NONE")
        assert (await conditions(node.stub, GPU_A.lower()))[0]["Ready"] == "True/Enumerated"

        await publisher.submit(fatal_xid(NODE, "GPU-not-on-this-node"))  # logged and skipped
        assert publisher.pending() == {"device-api": 0}


async def test_events_wait_for_a_device_api_that_is_not_up_yet(socket_dir: Path, connect: Connect) -> None:
    server = DeviceApiServer(socket_dir / "late.sock", expected_gpus=REGISTERED_GPUS)
    async with Publisher(socket_dir / "spool", device_api=connect(server), settings=FAST) as publisher:
        await publisher.submit(fatal_xid(NODE, GPU_A))
        await publisher.submit(healthy(NODE, GPU_A))
        await publisher.submit(fatal_xid(NODE, GPU_A, xid=48, action=RecommendedAction.COMPONENT_RESET))
        assert publisher.pending() == {"device-api": 3}

        # The Device API comes up; until the GPUs are registered its gate answers the publisher's
        # lookups UNAVAILABLE (retried), then the backlog loop delivers the three in order.
        async with server:
            assert not server.ready
            channel = grpc.aio.insecure_channel(f"unix://{server.socket_path}")
            stub = gpu_pb2_grpc.GpuServiceStub(channel)
            await register(stub)
            assert server.ready
            await asyncio.wait_for(publisher.wait_delivered(), 10)
            found, action, _ = await conditions(stub, GPU_A.lower())
            assert (found[HEALTH_CONDITION], action) == ("False/SysLogsXIDError", "COMPONENT_RESET")
            await channel.close()


async def test_an_event_naming_thousands_of_unknown_gpus_costs_one_lookup(
    node: Node, connect: Connect, socket_dir: Path
) -> None:
    strangers = [f"GPU-{index:08d}-0000-4000-8000-000000000000" for index in range(12_000)]
    async with Publisher(socket_dir / "spool", device_api=connect(node.server), settings=FAST) as publisher:
        await publisher.submit(healthy(NODE, *strangers))
        assert node.calls.counted == {("ListGpus", "OK"): 1}, "the agent's own GPU list answers for every UUID at once"
        assert publisher.pending() == {"device-api": 0}

        # The strangers are not remembered: an event about every GPU writes the two the node has.
        node.calls.counted.clear()
        await publisher.submit(healthy(NODE))
        assert node.calls.counted == {("ListGpus", "OK"): 1, ("UpdateGpuStatus", "OK"): REGISTERED_GPUS}

        # And a real fault afterwards goes straight through.
        await publisher.submit(fatal_xid(NODE, GPU_A))
        found, action, _ = await conditions(node.stub, GPU_A.lower())
        assert (found[HEALTH_CONDITION], action) == ("False/SysLogsXIDError", "RESTART_BM")
        assert publisher.pending() == {"device-api": 0}


async def test_a_watch_over_the_socket_sees_each_health_write(node: Node, connect: Connect, socket_dir: Path) -> None:
    version = node.server.cache.resource_version
    watch = node.stub.WatchGpus(gpu_pb2.WatchGpusRequest(opts=gpu_pb2.ListOptions(resource_version=str(version))))
    await eventually(lambda: node.server.hub.watchers == 1)
    async with Publisher(socket_dir / "spool", device_api=connect(node.server), settings=FAST) as publisher:
        await publisher.submit(fatal_xid(NODE, GPU_A))
    event = await asyncio.wait_for(watch.read(), 5)
    assert isinstance(event, gpu_pb2.WatchGpusResponse)
    assert (event.type, event.object.metadata.name, event.object.resource_version) == (
        "MODIFIED",
        GPU_A.lower(),
        version + 1,
    )
    assert {c.type: c.status for c in event.object.status.conditions} == {"Ready": "True", HEALTH_CONDITION: "False"}
    watch.cancel()


async def test_a_write_that_loses_a_race_is_made_again_on_the_gpu_as_it_now_is(node: Node, connect: Connect) -> None:
    client = connect(node.server)
    [listed] = [gpu for gpu in await client.list_gpus() if gpu.metadata.name == "gpu-1"]
    # Another provider writes between the publisher's list and its write: the listed version is stale.
    theirs = gpu_pb2.GpuStatus(conditions=[gpu_pb2.Condition(type="Ready", status="True", reason="Enumerated")])
    await node.stub.UpdateGpuStatus(gpu_pb2.UpdateGpuStatusRequest(name="gpu-1", status=theirs))
    node.calls.counted.clear()

    await client.set_gpu_health(listed, FAULT)

    assert node.calls.counted == {("UpdateGpuStatus", "ABORTED"): 1, ("GetGpu", "OK"): 1, ("UpdateGpuStatus", "OK"): 1}
    found, action, _ = await conditions(node.stub, "gpu-1")
    assert (found, action) == ({"Ready": "True/Enumerated", HEALTH_CONDITION: "False/SysLogsXIDError"}, "RESTART_BM")

    # A writer that loses every race it is allowed is told to come back later.
    with pytest.raises(DependencyUnavailable, match="1 writes of gpu-1 lost races"):
        await connect(node.server, attempts=1).set_gpu_health(listed, FAULT)


async def outcome(call: Awaitable[Sequence[gpu_pb2.Gpu] | None], *, exact: bool = True) -> object:
    """What a client call ended with, comparable between clients: the names of the GPUs it listed,
    or its error (with its message where `exact`: a failed connection is worded by gRPC, not by the
    Device API)."""
    try:
        result = await call
    except (Refused, DependencyUnavailable, ListTooLarge) as error:
        return (type(error).__name__, str(error) if exact else "")
    return None if result is None else [gpu.metadata.name for gpu in result]


def stored(server: DeviceApiServer) -> list[tuple[str, int, str, list[tuple[str, str, str, str]]]]:
    """Every GPU as the server stores it, its timestamps aside."""
    _, gpus = server.cache.snapshot()
    return [
        (
            gpu.metadata.name,
            gpu.resource_version,
            gpu.status.recommended_action,
            [(c.type, c.status, c.reason, c.message) for c in gpu.status.conditions],
        )
        for gpu in gpus
    ]


async def scenario(directory: Path, kind: str) -> tuple[list[object], Counter[tuple[str, str]]]:
    """The publisher's calls through one client, from before the server is up to after it stops:
    each call's outcome and the stored GPUs after it, and the calls the server counted."""
    calls = Calls()
    server = DeviceApiServer(directory / f"{kind}.sock", expected_gpus=REGISTERED_GPUS, answered=calls)
    clients: list[GrpcDeviceApi] = []

    def client(**options: int) -> InProcessDeviceApi:
        if kind == "in-process":
            return InProcessDeviceApi(server, **options)
        clients.append(GrpcDeviceApi(server, **options))
        return clients[-1]

    ledger = OpenFaults()
    seen: list[object] = [await outcome(client().list_gpus(), exact=False)]  # not up yet
    async with server:
        seen.append(await outcome(client().list_gpus()))  # its readiness gate is closed
        for gpu in registered_gpus():
            server.cache.create(gpu)
        seen.append(await outcome(client().list_gpus()))
        for event in (fatal_xid(NODE, GPU_A), healthy(NODE), fatal_xid(NODE, GPU_B, xid=48)):
            seen += [await outcome(publish_gpu_health(client(), ledger, event)), stored(server)]
        listed = server.cache.get("gpu-1")
        server.cache.update_status("gpu-1", gpu_pb2.GpuStatus(recommended_action="RESTART_VM"))
        seen += [await outcome(client().set_gpu_health(listed, FAULT)), stored(server)]  # lost a race, won again
        seen.append(await outcome(client(attempts=1).set_gpu_health(listed, FAULT)))  # lost its only race
        ghost = gpu_pb2.Gpu(metadata=gpu_pb2.ObjectMeta(name="gpu-9"), spec=gpu_pb2.GpuSpec(uuid="GPU-9"))
        seen.append(await outcome(client().set_gpu_health(ghost, FAULT)))  # deleted meanwhile: skipped
        ghost.metadata.name = "Not_A_Name"
        seen.append(await outcome(client().set_gpu_health(ghost, FAULT)))  # refused for good
        seen.append(await outcome(client(max_list_bytes=256).list_gpus(), exact=False))  # larger than it takes
    seen.append(await outcome(client().list_gpus(), exact=False))  # stopped
    for channel in clients:
        await channel.close()
    return seen, calls.counted


async def test_both_clients_store_the_same_statuses_and_meet_the_same_errors(socket_dir: Path) -> None:
    over_grpc, grpc_calls = await scenario(socket_dir, "grpc")
    in_process, in_process_calls = await scenario(socket_dir, "in-process")
    assert in_process == over_grpc
    assert in_process_calls == grpc_calls
    # What the scenario met, so that agreeing is not agreeing on nothing.
    errors = [step for step in over_grpc if isinstance(step, tuple)]
    assert [name for name, _ in errors] == [
        "DependencyUnavailable",
        "DependencyUnavailable",
        "DependencyUnavailable",
        "Refused",
        "ListTooLarge",
        "DependencyUnavailable",
    ]
    assert "providers have not registered this node's GPUs yet" in errors[1][1]
    assert errors[3][1].startswith("Device API: INVALID_ARGUMENT: ")
    assert grpc_calls[("UpdateGpuStatus", "ABORTED")] == 2
    assert grpc_calls[("UpdateGpuStatus", "NOT_FOUND")] == 1


async def test_a_burst_of_node_wide_events_keeps_a_watcher_that_reads(socket_dir: Path, connect: Connect) -> None:
    """Events naming no GPU, submitted at once, write every GPU each: three times as many writes as
    a watch's queue holds. A watcher reading as fast as it can keeps up, whichever way the publisher
    calls: over gRPC its calls give the watch streams their turns, and in process it must too."""
    gpus, events, queue = 8, 12, 32
    async with DeviceApiServer(socket_dir / "burst.sock", expected_gpus=gpus, watch_queue_size=queue) as server:
        for index in range(gpus):
            server.cache.create(
                gpu_pb2.Gpu(metadata=gpu_pb2.ObjectMeta(name=f"gpu-{index}"), spec=gpu_pb2.GpuSpec(uuid=f"GPU-{index}"))
            )
        start = server.cache.resource_version
        async with grpc.aio.insecure_channel(server.target) as channel:
            watch = gpu_pb2_grpc.GpuServiceStub(channel).WatchGpus(
                gpu_pb2.WatchGpusRequest(opts=gpu_pb2.ListOptions(resource_version=str(start)))
            )
            await eventually(lambda: server.hub.watchers == 1)
            seen: list[int] = []

            async def read() -> None:
                async for event in watch:
                    seen.append(event.object.resource_version)
                    if len(seen) == gpus * events:
                        return

            reader = asyncio.create_task(read())
            async with Publisher(socket_dir / "spool", device_api=connect(server), settings=FAST) as publisher:
                await asyncio.gather(
                    *(
                        publisher.submit(fatal_xid(NODE, entities=(), xid=40 + k, message=f"XID {40 + k}"))
                        for k in range(events)
                    )
                )
                assert publisher.pending() == {"device-api": 0}
            await asyncio.wait_for(reader, 10)
    assert server.hub.dropped_total == 0
    assert seen == list(range(start + 1, start + gpus * events + 1))


async def test_the_publisher_leaves_the_list_the_device_api_serves_as_it_was(node: Node, connect: Connect) -> None:
    """The in-process client lists the server's own GPUs, shared with every client: writing health
    (a stale GPU's race included) builds new statuses and never touches them."""
    served = node.server.cache.list_response()
    before = served.SerializeToString(deterministic=True)
    client = connect(node.server)
    listed = await client.list_gpus()
    ledger = OpenFaults()
    for event in (fatal_xid(NODE, GPU_A), healthy(NODE), fatal_xid(NODE, GPU_B, xid=48)):
        await publish_gpu_health(client, ledger, event)
    await client.set_gpu_health(listed[1], FAULT)  # written since it was listed: read again, then written
    assert node.calls.counted[("UpdateGpuStatus", "ABORTED")] == 1
    assert served.SerializeToString(deterministic=True) == before
