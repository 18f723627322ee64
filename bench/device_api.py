"""Device API throughput and watch fan-out with 1,024 GPUs, over the unix socket.

The server runs in this process, alone on its event loop, as it would in the agent; the clients run
in one separate process (spawned, no shell), so client-side Python does not eat the server's loop.
Both share this machine's cores, which the figures include.

- ListGpus QPS: a few concurrent clients, each on its own channel, call ListGpus back to back for
  about 3 s; every response carries all 1,024 GPUs (three conditions each).
- Watch fan-out: 100 watchers resume from the list's resource version (as informers do after
  listing), then one UpdateGpuStatus at a time (200 in all); the latency is from just before the
  writer sends the update to each watcher holding the event. The next update goes out only once
  every watcher has the previous one, so the figure is fan-out, not queueing behind earlier updates.

Run it alone with `python -m bench.device_api`.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import grpc

from gpuheal.agents.device_api import DeviceApiServer
from gpuheal.protos import gpu_pb2, gpu_pb2_grpc

GPUS = 1024
LIST_CLIENTS = 4
LIST_SECONDS = 3.0
LIST_MAX_CALLS = 200_000
WATCHERS = 100
UPDATES = 200
FANOUT_TIMEOUT = 60.0  # seconds for the whole fan-out run, whatever happens
EVENT_TIMEOUT = 10.0  # seconds for one update to reach every watcher


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _gpu(index: int) -> gpu_pb2.Gpu:
    gpu = gpu_pb2.Gpu()
    gpu.metadata.name = f"gpu-{index}"
    gpu.spec.uuid = f"GPU-{index:08x}-0000-4000-8000-{index:012x}"
    for kind in ("Ready", "MemoryHealthy", "ThermalHealthy"):
        gpu.status.conditions.append(
            gpu_pb2.Condition(type=kind, status="True", reason="GPUHealthy", message=f"{kind} since start")
        )
    gpu.status.conditions[0].last_transition_time.GetCurrentTime()
    return gpu


# -- client process ------------------------------------------------------------------------------


async def _list_clients(target: str, clients: int, seconds: float, max_calls: int) -> tuple[int, float, list[float]]:
    channels = [grpc.aio.insecure_channel(target) for _ in range(clients)]
    calls = 0
    latencies: list[float] = []
    deadline = math.inf

    async def client(channel: grpc.aio.Channel) -> None:
        nonlocal calls
        stub = gpu_pb2_grpc.GpuServiceStub(channel)
        while time.perf_counter() < deadline and calls < max_calls:
            t0 = time.perf_counter()
            response = await stub.ListGpus(gpu_pb2.ListGpusRequest())
            latencies.append(time.perf_counter() - t0)
            assert len(response.gpu_list.items) == GPUS
            calls += 1

    try:
        for channel in channels:  # connect before the clock matters
            await channel.channel_ready()
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(client(c) for c in channels))
        return calls, time.perf_counter() - started, latencies
    finally:
        for channel in channels:
            await channel.close()


def list_clients(target: str, clients: int, seconds: float, max_calls: int) -> tuple[int, float, list[float]]:
    """ListGpus back to back from `clients` channels: (calls, elapsed seconds, latencies)."""
    return asyncio.run(_list_clients(target, clients, seconds, max_calls))


async def _fanout_clients(target: str, watchers: int, updates: int) -> list[float]:
    channel = grpc.aio.insecure_channel(target)
    stub = gpu_pb2_grpc.GpuServiceStub(channel)
    # Update i is announced by recommended_action "bench-<i>"; i = -1 is the warm-up.
    received: dict[int, list[float]] = {}
    complete: dict[int, asyncio.Event] = {i: asyncio.Event() for i in range(-1, updates)}

    async def watcher(version: str) -> None:
        request = gpu_pb2.WatchGpusRequest(opts=gpu_pb2.ListOptions(resource_version=version))
        async for event in stub.WatchGpus(request):
            now = time.perf_counter()
            marker = event.object.status.recommended_action
            if marker.startswith("bench-"):
                index = int(marker[len("bench-") :])
                arrivals = received.setdefault(index, [])
                arrivals.append(now)
                if len(arrivals) == watchers:
                    complete[index].set()

    async def update(index: int) -> float:
        name = f"gpu-{(index * 7919) % GPUS}"
        status = _gpu(0).status
        status.conditions[0].status = "False" if index % 2 else "True"
        status.recommended_action = f"bench-{index}"
        t0 = time.perf_counter()
        await stub.UpdateGpuStatus(gpu_pb2.UpdateGpuStatusRequest(name=name, status=status))
        await asyncio.wait_for(complete[index].wait(), EVENT_TIMEOUT)
        return t0

    tasks: list[asyncio.Task[None]] = []
    try:
        await channel.channel_ready()
        listed = await stub.ListGpus(gpu_pb2.ListGpusRequest())
        version = listed.gpu_list.metadata.resource_version
        tasks = [asyncio.create_task(watcher(version)) for _ in range(watchers)]
        await update(-1)  # every watcher is subscribed once all of them have seen this
        latencies: list[float] = []
        for index in range(updates):
            t0 = await update(index)
            latencies.extend(t - t0 for t in received[index])
        return latencies
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await channel.close()


def fanout_clients(target: str, watchers: int, updates: int) -> list[float]:
    """Watchers and a writer in one process: the fan-out latency of every (update, watcher)."""
    return asyncio.run(_fanout_clients(target, watchers, updates))


# -- server process ------------------------------------------------------------------------------


async def run() -> dict[str, float]:
    """Start a server with 1,024 GPUs, measure from a client process, print and return the figures."""
    loop = asyncio.get_running_loop()
    spawn = multiprocessing.get_context("spawn")  # never fork a process that runs gRPC
    with tempfile.TemporaryDirectory(prefix="gpuheal-bench-") as state, ProcessPoolExecutor(1, spawn) as pool:
        # More watchers than the default bound (64) serves: the figure is fan-out to WATCHERS.
        socket = Path(state) / "device.sock"
        async with DeviceApiServer(socket, expected_gpus=GPUS, max_watches=WATCHERS) as server:
            for index in range(GPUS):
                server.cache.create(_gpu(index))  # an in-process provider registering the node's GPUs
            assert server.ready
            size = server.cache.list_response().ByteSize()

            calls, elapsed, list_latencies = await loop.run_in_executor(
                pool, list_clients, server.target, LIST_CLIENTS, LIST_SECONDS, LIST_MAX_CALLS
            )
            fanout = await asyncio.wait_for(
                loop.run_in_executor(pool, fanout_clients, server.target, WATCHERS, UPDATES), FANOUT_TIMEOUT
            )
            dropped = server.hub.dropped_total

    figures = {
        "gpus": float(GPUS),
        "list_response_bytes": float(size),
        "list_qps": calls / elapsed,
        "list_p50_ms": percentile(list_latencies, 50) * 1000,
        "list_p99_ms": percentile(list_latencies, 99) * 1000,
        "watchers": float(WATCHERS),
        "watch_fanout_p50_ms": percentile(fanout, 50) * 1000,
        "watch_fanout_p99_ms": percentile(fanout, 99) * 1000,
        "watch_fanout_max_ms": max(fanout) * 1000,
        "watchers_dropped": float(dropped),
    }
    print(f"Device API, {GPUS} GPUs over the unix socket (server in-process, clients in another process)")
    print(
        f"  ListGpus: {figures['list_qps']:.0f} QPS from {LIST_CLIENTS} clients over {elapsed:.1f} s "
        f"({calls} calls, {size / 1024:.0f} KiB each); latency p50 {figures['list_p50_ms']:.2f} ms, "
        f"p99 {figures['list_p99_ms']:.2f} ms"
    )
    print(
        f"  WatchGpus fan-out to {WATCHERS} watchers, {UPDATES} UpdateGpuStatus: "
        f"p50 {figures['watch_fanout_p50_ms']:.2f} ms, p99 {figures['watch_fanout_p99_ms']:.2f} ms, "
        f"max {figures['watch_fanout_max_ms']:.2f} ms; watchers dropped: {dropped}"
    )
    return figures


if __name__ == "__main__":
    # Run through the module's own name so the spawned client process can find its functions.
    from bench.device_api import run as run_bench

    asyncio.run(run_bench())
