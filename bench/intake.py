"""Health event intake: events/s and per-call latency of `HealthEventOccurredV1` over the unix socket,
on a quiet machine and under load.

One agent's intake (the PlatformConnector server) takes one event per call from several concurrent
clients for a bounded time: with a sink that only counts (the intake alone), and with the real
publisher (routing, fault ledgers, ordered lanes and their spools) in front of the agent's real
Device API, served on the same event loop as in the agent with the node's 8 GPUs, and no-op
Kubernetes and Temporal. The clients run in separate processes, as other monitors do. A run against
a servicer that does nothing gives the floor: what gRPC in Python costs per call on this machine
before the intake does any work. Each ratio compares two runs made one after the other under the
same conditions, so it holds however busy the machine is; the server's own CPU time per event is
reported too, and a last figure times the intake's own work per event (validation, conversion,
publisher routing) without gRPC, in this process. The intake alone is measured again with 100
events per call, as a monitor that batches sends them.

**Under load.** The three one-event-per-call runs are made twice: on the quiet machine, then with
one busy-looping process per core started by the bench (and stopped after the last run under
load). A GPU node's tenants are training jobs that keep every core busy at the same priority as the
agent (a DaemonSet pod with small CPU requests); a busy loop per core is that load, reproducible
from run to run and machine to machine, with nothing to install. It leaves the disk alone: what it
shows is the intake, the publisher and the Device API sharing the CPU with everyone else. The
servers are measured in interleaved slices (`Schedule`), and only once every client process has
connected: a fixed start-up allowance, as this bench had, counted a client still importing gRPC on
a loaded machine as a server taking "1 events/s".

What bounds the figures (cProfile in the server process): gRPC's own per-call work (its Cython
callbacks, the loop's epoll and tasks) is most of a call's CPU; the intake's validation and
conversion are ~15-20 us of a ~250 us call. With the publisher, each fatal event costs a ListGpus
and an UpdateGpuStatus to the Device API, called in process as the agent calls it (its operations
run directly, without gRPC).

Each target ends in a `VERDICT` line: the intake against the gRPC floor, quiet and under load; the
intake with its publisher against the intake alone, quiet and under load; the batched intake's
events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
from google.protobuf import empty_pb2

from bench.measure import percentile, verdict
from gpuheal.agents.device_api import DeviceApiServer
from gpuheal.agents.gpu_identity import gpu_name
from gpuheal.agents.intake import IntakeLimits, IntakeServer, IntakeSettings
from gpuheal.agents.intake.convert import to_domain
from gpuheal.agents.intake.validate import validate
from gpuheal.agents.publisher import Publisher, Verdict
from gpuheal.agents.publisher.device_api import InProcessDeviceApi
from gpuheal.agents.sink import EventSink
from gpuheal.domain.faults import Fault
from gpuheal.domain.health import HealthEvent
from gpuheal.protos import gpu_pb2
from gpuheal.protos import health_event_pb2 as pb
from gpuheal.protos import health_event_pb2_grpc as pb_grpc

TARGET_EVENTS_PER_S = 5_000.0
TARGET_P99_S = 0.001
# Issue 15's ratios, each against its baseline in the same run and conditions, and the batched intake's rate.
TARGET_INTAKE_VS_FLOOR = 0.9
TARGET_PUBLISHER_VS_INTAKE = 0.8
TARGET_BATCHED_EVENTS_PER_S = 20_000.0
BATCH = 100
DURATION_S = 3.0
# One server's turn in the interleaved schedule (see `Schedule`).
SLICE_S = 0.5
PROCESSES = 2
CLIENTS_PER_PROCESS = 2
GPUS = 8
_T = TypeVar("_T")


class EmptyServicer(pb_grpc.PlatformConnectorServicer):
    """The same method doing nothing at all: gRPC's own cost per call."""

    async def HealthEventOccurredV1(
        self, request: pb.HealthEvents, context: grpc.aio.ServicerContext[pb.HealthEvents, empty_pb2.Empty]
    ) -> empty_pb2.Empty:
        return empty_pb2.Empty()


@asynccontextmanager
async def _floor_server(socket_path: Path) -> AsyncIterator[str]:
    server = grpc.aio.server()
    pb_grpc.add_PlatformConnectorServicer_to_server(EmptyServicer(), server)
    server.add_insecure_port(f"unix:{socket_path}")
    await server.start()
    try:
        yield f"unix:{socket_path}"
    finally:
        await server.stop(None)


@asynccontextmanager
async def _intake_server(sink: EventSink, socket_path: Path) -> AsyncIterator[str]:
    async with IntakeServer(sink, IntakeSettings(socket_path=socket_path)) as server:
        yield server.socket_target


@asynccontextmanager
async def _publisher(directory: Path) -> AsyncIterator[Publisher]:
    """The publisher, writing to the node's Device API (8 GPUs) served on the same loop, as in the agent."""
    async with DeviceApiServer(directory / "device-api.sock", expected_gpus=GPUS) as device_api:
        for index in range(GPUS):
            gpu = gpu_pb2.Gpu()
            gpu.spec.uuid = _uuid(index)
            gpu.metadata.name = gpu_name(gpu.spec.uuid)
            device_api.cache.create(gpu)
        backends = NoOpBackends()
        async with Publisher(
            directory / "spool", device_api=InProcessDeviceApi(device_api), nodes=backends, remediations=backends
        ) as publisher:
            yield publisher


@asynccontextmanager
async def _publishing_intake(directory: Path) -> AsyncIterator[str]:
    async with _publisher(directory) as publisher, _intake_server(publisher, directory / "intake.sock") as target:
        yield target


class CountingSink:
    def __init__(self) -> None:
        self.count = 0

    async def submit(self, event: HealthEvent) -> None:
        self.count += 1


class NoOpBackends:
    """Device API, Kubernetes and Temporal that accept everything at once (the event generator and
    telemetry benchmarks publish to them; the intake's own publisher writes to a real Device API)."""

    async def list_gpus(self) -> list[gpu_pb2.Gpu]:
        return []

    async def set_gpu_health(self, gpu: gpu_pb2.Gpu, verdict: Verdict) -> None:
        return None

    async def set_gpu_condition(self, node: str, verdict: Verdict) -> None:
        return None

    async def record_event(self, event: HealthEvent) -> None:
        return None

    async def report(self, fault: Fault) -> None:
        return None


def _uuid(index: int) -> str:
    return f"GPU-{index % GPUS:08d}"


def _request(index: int, batch: int = 1) -> pb.HealthEvents:
    """`batch` events of a plausible mix: mostly non-fatal XIDs, every tenth fatal (all three lanes),
    one GPU named."""
    return pb.HealthEvents(version=1, events=[_event(index * batch + n) for n in range(batch)])


def _event(index: int) -> pb.HealthEvent:
    fatal = index % 10 == 0
    return pb.HealthEvent(
        agent="bench",
        componentClass="GPU",
        checkName="SysLogsXIDError",
        isFatal=fatal,
        isHealthy=False,
        message="XID 79: GPU has fallen off the bus" if fatal else "XID 13: graphics engine exception",
        recommendedAction=pb.RESTART_BM if fatal else pb.NONE,
        errorCode=["79" if fatal else "13"],
        entitiesImpacted=[pb.Entity(entityType="GPU_UUID", entityValue=_uuid(index))],
        nodeName="bench-node",
    )


@dataclass(frozen=True)
class Schedule:
    """When the clients call which server: after a warm-up slice for each, `rounds` rounds of one
    slice per server, in turn. Interleaving the servers' slices gives each the same share of what
    the rest of the machine does meanwhile, so their ratio holds on a machine shared with others."""

    start: float  # time.time() of the first warm-up slice
    slice_s: float
    servers: int
    rounds: int

    def slice_at(self, now: float) -> int:
        return int((now - self.start) // self.slice_s)

    def server_of(self, slice_number: int) -> int:
        return slice_number % self.servers

    def measured(self, slice_number: int) -> bool:
        return self.servers <= slice_number < self.servers * (self.rounds + 1)

    @property
    def end(self) -> float:
        return self.start + self.slice_s * self.servers * (self.rounds + 1)


@dataclass(frozen=True)
class Load:
    """One client process: its callers, and where it says it is connected and hears the schedule."""

    targets: tuple[str, ...]
    clients: int
    batch: int  # events per call
    connected: multiprocessing.SimpleQueue[bool]
    schedule: multiprocessing.SimpleQueue[Schedule]


async def _drive(load: Load) -> list[list[float]]:
    """Connect to every server, say so, then call as the schedule says; per server, the latencies
    of the calls that began in one of its measured slices.

    The schedule starts only once every client process is connected: under load, starting a process
    and importing gRPC can take seconds, which must not be counted as any server's.
    """
    requests = [_request(i, load.batch) for i in range(100)]
    latencies: list[list[float]] = [[] for _ in load.targets]
    channels = [[grpc.aio.insecure_channel(target) for target in load.targets] for _ in range(load.clients)]
    for channel in (channel for per_client in channels for channel in per_client):
        await channel.channel_ready()
    load.connected.put(True)
    schedule = load.schedule.get()
    await asyncio.sleep(schedule.start - time.time())

    async def client(number: int, stubs: list[pb_grpc.PlatformConnectorAsyncStub]) -> None:
        i = number
        while (now := time.time()) < schedule.end:
            slice_number = schedule.slice_at(now)
            server = schedule.server_of(slice_number)
            began = time.perf_counter()
            await stubs[server].HealthEventOccurredV1(requests[i % len(requests)])
            if schedule.measured(slice_number):
                latencies[server].append(time.perf_counter() - began)
            i += load.clients

    await asyncio.gather(
        *(
            client(n, [pb_grpc.PlatformConnectorStub(channel) for channel in per_client])
            for n, per_client in enumerate(channels)
        )
    )
    for channel in (channel for per_client in channels for channel in per_client):
        await channel.close()
    return latencies


def _client_process(load: Load, results: multiprocessing.SimpleQueue[list[list[float]]]) -> None:
    results.put(asyncio.run(_drive(load)))


def _spin(until: float) -> None:
    """Keep one core busy (until `until`, should the bench die without stopping it)."""
    while time.time() < until:
        pass


@contextmanager
def _busy_cores(seconds: float) -> Iterator[int]:
    """One busy-looping process per core for the duration of the block; yields how many."""
    cores = os.cpu_count() or 1
    context = multiprocessing.get_context("spawn")
    spinners = [context.Process(target=_spin, args=(time.time() + seconds,), daemon=True) for _ in range(cores)]
    for spinner in spinners:
        spinner.start()
    try:
        yield cores
    finally:
        for spinner in spinners:
            spinner.terminate()
        for spinner in spinners:
            spinner.join()


@dataclass(frozen=True)
class Figures:
    events_per_s: float
    p50_s: float
    p99_s: float
    server_cpu_per_event_s: float


async def _receive(queue: multiprocessing.SimpleQueue[_T], worker: multiprocessing.process.BaseProcess) -> _T:
    """What the client process puts on `queue`, polled so that the servers' loop stays free and a
    client that died is an error, not a bench that waits for ever."""
    while queue.empty():
        if not worker.is_alive():
            raise RuntimeError(f"client process {worker.pid} exited with {worker.exitcode}")
        await asyncio.sleep(0.02)
    return queue.get()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _measure(
    targets: tuple[str, ...], processes: int, clients: int, duration: float, batch: int = 1
) -> list[Figures]:
    """Figures for each server (all running on this event loop), from the clients' processes, in
    interleaved slices of `SLICE_S` adding up to `duration` per server."""
    context = multiprocessing.get_context("spawn")
    results = [context.SimpleQueue() for _ in range(processes)]
    loads = [Load(targets, clients, batch, context.SimpleQueue(), context.SimpleQueue()) for _ in range(processes)]
    workers = [
        # Daemons: a bench that fails leaves no client waiting for a schedule that never comes.
        context.Process(target=_client_process, args=(load, queue), daemon=True)
        for load, queue in zip(loads, results, strict=True)
    ]
    for worker in workers:
        worker.start()
    for load, worker in zip(loads, workers, strict=True):
        await _receive(load.connected, worker)
    schedule = Schedule(time.time() + 0.2, SLICE_S, len(targets), max(1, round(duration / SLICE_S)))
    for load in loads:
        load.schedule.put(schedule)
    cpu = [0.0] * len(targets)
    for slice_number in range(len(targets), len(targets) * (schedule.rounds + 1)):
        began = schedule.start + slice_number * schedule.slice_s
        await asyncio.sleep(began - time.time())
        before = _cpu_seconds()
        await asyncio.sleep(began + schedule.slice_s - time.time())
        cpu[schedule.server_of(slice_number)] += _cpu_seconds() - before
    latencies: list[list[float]] = [[] for _ in targets]
    for queue, worker in zip(results, workers, strict=True):
        for server, found in enumerate(await _receive(queue, worker)):
            latencies[server] += found
    for worker in workers:
        worker.join()
    measured_s = schedule.rounds * schedule.slice_s
    figures = []
    for server, found in enumerate(latencies):
        if not found:
            raise RuntimeError(f"no call to {targets[server]} completed in its slices")
        events = len(found) * batch
        figures.append(
            Figures(
                events_per_s=events / measured_s,
                p50_s=percentile(found, 0.5),
                p99_s=percentile(found, 0.99),
                server_cpu_per_event_s=cpu[server] / events,
            )
        )
    return figures


async def _intake_work_per_event(publisher: Publisher, events: int = 20_000) -> float:
    """Seconds of validate + convert + publisher.submit per event, no gRPC involved."""
    requests = [_request(i) for i in range(100)]
    limits = IntakeLimits()
    began = time.perf_counter()
    for i in range(events):
        request = requests[i % len(requests)]
        validate(request, limits)
        await publisher.submit(to_domain(request.events[0], limits))
    return (time.perf_counter() - began) / events


async def _one_per_call(
    directory: Path, condition: str, processes: int, clients: int, duration: float
) -> dict[str, float]:
    """The floor, the intake alone and the intake with its publisher, one event per call, in interleaved slices."""
    labels = {
        "grpc_floor": "gRPC floor, empty handler",
        "intake": "intake, counting sink",
        "intake_publisher": "intake + publisher, Device API",
    }
    async with (
        _floor_server(directory / f"floor-{condition}.sock") as floor,
        _intake_server(CountingSink(), directory / f"intake-{condition}.sock") as intake,
        _publishing_intake(directory / condition) as published,
    ):
        found = await _measure((floor, intake, published), processes, clients, duration)
    figures: dict[str, float] = {}
    for (key, label), measured in zip(labels.items(), found, strict=True):
        figures |= _report(f"{key}_{condition}", f"{label}, {condition}", measured, processes, clients, 1)
    return figures


def _report(key: str, label: str, found: Figures, processes: int, clients: int, batch: int) -> dict[str, float]:
    print(
        f"{label:48} {processes}x{clients} clients, {batch} event(s)/call: "
        f"{found.events_per_s:6.0f} events/s{_one_per_call_target(batch, 'events')}  "
        f"p50 {found.p50_s * 1000:.2f} ms  p99 {found.p99_s * 1000:.2f} ms{_one_per_call_target(batch, 'p99')}  "
        f"server CPU {found.server_cpu_per_event_s * 1e6:.0f} us/event "
        f"(~{1 / found.server_cpu_per_event_s:.0f} events/s per core)"
    )
    return {
        f"{key}_events_per_s": found.events_per_s,
        f"{key}_p50_s": found.p50_s,
        f"{key}_p99_s": found.p99_s,
        f"{key}_server_cpu_per_event_s": found.server_cpu_per_event_s,
    }


async def run(
    processes: int = PROCESSES, clients: int = CLIENTS_PER_PROCESS, duration: float = DURATION_S
) -> dict[str, float]:
    """Measure the intake alone and with the publisher, quiet and under load; print the figures beside the targets."""
    directory = Path(tempfile.mkdtemp(prefix="gh-bench-", dir="/tmp"))
    figures: dict[str, float] = {}
    try:
        figures |= await _one_per_call(directory, "quiet", processes, clients, duration)
        async with _intake_server(CountingSink(), directory / "batch.sock") as target:
            (batched,) = await _measure((target,), processes, clients, duration, BATCH)
        figures |= _report("intake_batched", "intake, counting sink, quiet", batched, processes, clients, BATCH)
        # The spinners are stopped once the three runs are done; the bound is for a bench that dies first.
        with _busy_cores(3 * (duration + 60)) as cores:
            print(f"under load: {cores} busy-looping processes, one per core")
            figures |= await _one_per_call(directory, "under_load", processes, clients, duration)
        async with _publisher(directory / "work") as publisher:
            work = await _intake_work_per_event(publisher)
        figures["intake_work_per_event_s"] = work
        print(f"intake work per event without its own gRPC call (validate, convert, publisher): {work * 1e6:.0f} us")
        _verdicts(figures)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return figures


def _one_per_call_target(batch: int, figure: str) -> str:
    """The one-event-per-call targets, shown beside those runs only (a batch's call is longer by design)."""
    if batch != 1:
        return ""
    return (
        f" (target >= {TARGET_EVENTS_PER_S:.0f})" if figure == "events" else f" (target < {TARGET_P99_S * 1000:.0f} ms)"
    )


def _per_core(figures: dict[str, float], side: str, condition: str) -> tuple[float, float]:
    """The events per server CPU second of one side, and its events per second."""
    return 1 / figures[f"{side}_{condition}_server_cpu_per_event_s"], figures[f"{side}_{condition}_events_per_s"]


def _verdicts(figures: dict[str, float]) -> None:
    """Judged by the servers' CPU per event, the events per core each could take: the throughputs
    are printed too, but the client processes share the two cores and their own cost, the same on
    both sides, pulls a throughput ratio toward 1 (more so under load)."""
    for condition, suffix in (("quiet", ""), ("under_load", "-under-load")):
        floor, floor_rate = _per_core(figures, "grpc_floor", condition)
        alone, alone_rate = _per_core(figures, "intake", condition)
        published, published_rate = _per_core(figures, "intake_publisher", condition)
        verdict(
            f"intake-1-per-call{suffix}",
            alone / floor >= TARGET_INTAKE_VS_FLOOR,
            f"{alone / floor:.2f}: {alone:.0f} vs {floor:.0f} events per server CPU second of the empty-handler gRPC "
            f"server (throughput {alone_rate:.0f} vs {floor_rate:.0f} events/s, {alone_rate / floor_rate:.2f})",
            f"≥ {TARGET_INTAKE_VS_FLOOR}",
        )
        verdict(
            f"intake-publisher{suffix}",
            published / alone >= TARGET_PUBLISHER_VS_INTAKE,
            f"{published / alone:.2f}: {published:.0f} vs {alone:.0f} events per server CPU second of the intake "
            f"alone (throughput {published_rate:.0f} vs {alone_rate:.0f} events/s, {published_rate / alone_rate:.2f})",
            f"≥ {TARGET_PUBLISHER_VS_INTAKE}",
        )
    batched = figures["intake_batched_events_per_s"]
    verdict(
        f"intake-{BATCH}-per-call",
        batched >= TARGET_BATCHED_EVENTS_PER_S,
        f"{batched:.0f} events/s",
        f"≥ {TARGET_BATCHED_EVENTS_PER_S:.0f}",
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.intake")
    parser.add_argument("--processes", type=int, default=PROCESSES, help="client processes")
    parser.add_argument("--clients", type=int, default=CLIENTS_PER_PROCESS, help="concurrent callers per process")
    parser.add_argument("--seconds", type=float, default=DURATION_S, help="measured time per run")
    options = parser.parse_args()
    asyncio.run(run(options.processes, options.clients, options.seconds))
