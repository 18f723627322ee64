"""Health event intake: events/s and per-call latency of `HealthEventOccurredV1` over the unix socket.

One agent's intake (the PlatformConnector server) takes one event per call from several concurrent
clients for a bounded time, twice: once with a sink that only counts (the intake alone), once with
the real publisher in front of no-op backends (routing, fault ledgers and ordered lanes included,
no Kubernetes or Temporal round trips). The clients run in separate processes, as other monitors
do. Besides throughput and latency, the server's own CPU time per event is reported: on a machine
where the clients use up the cores, that is the figure that says what the intake could take. A
first run against a servicer that does nothing gives the floor: what gRPC in Python costs per call
on this machine before the intake does any work; a last figure times the intake's own work per
event (validation, conversion, publisher routing) without gRPC, in this process. The intake alone
is measured again with 100 events per call, as a monitor that batches sends them.

Each target ends in a `VERDICT` line: the intake against the gRPC floor of the same run, the intake
with its publisher against the intake alone, and the batched intake's events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf import empty_pb2

from bench.measure import percentile, verdict
from gpuheal.agents.intake import IntakeLimits, IntakeServer, IntakeSettings
from gpuheal.agents.intake.convert import to_domain
from gpuheal.agents.intake.validate import validate
from gpuheal.agents.publisher import Publisher, Verdict
from gpuheal.agents.sink import EventSink
from gpuheal.domain.faults import Fault
from gpuheal.domain.health import HealthEvent
from gpuheal.protos import gpu_pb2
from gpuheal.protos import health_event_pb2 as pb
from gpuheal.protos import health_event_pb2_grpc as pb_grpc

TARGET_EVENTS_PER_S = 5_000.0
TARGET_P99_S = 0.001
# Issue 15's ratios, each against its baseline in the same run, and the batched intake's rate.
TARGET_INTAKE_VS_FLOOR = 0.9
TARGET_PUBLISHER_VS_INTAKE = 0.8
TARGET_BATCHED_EVENTS_PER_S = 20_000.0
BATCH = 100
DURATION_S = 3.0
WARMUP_S = 0.5
# Time for the client processes to start and connect before the clock starts.
STARTUP_S = 2.0
PROCESSES = 2
CLIENTS_PER_PROCESS = 2


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


class CountingSink:
    def __init__(self) -> None:
        self.count = 0

    async def submit(self, event: HealthEvent) -> None:
        self.count += 1


class NoOpBackends:
    """Device API, node reporter and remediations that accept everything at once."""

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
        entitiesImpacted=[pb.Entity(entityType="GPU_UUID", entityValue=f"GPU-{index % 8:08d}")],
        nodeName="bench-node",
    )


@dataclass(frozen=True)
class Load:
    """One client process: its callers and the wall-clock window in which calls are measured."""

    target: str
    clients: int
    measure_from: float  # time.time()
    stop_at: float
    batch: int = 1  # events per call


async def _drive(load: Load) -> list[float]:
    """Call until `stop_at`; the latencies of calls that began inside the window."""
    requests = [_request(i, load.batch) for i in range(100)]
    latencies: list[float] = []

    async def client(number: int) -> None:
        async with grpc.aio.insecure_channel(load.target) as channel:
            stub = pb_grpc.PlatformConnectorStub(channel)
            await channel.channel_ready()
            i = number
            while (now := time.time()) < load.stop_at:
                began = time.perf_counter()
                await stub.HealthEventOccurredV1(requests[i % len(requests)])
                if now >= load.measure_from:
                    latencies.append(time.perf_counter() - began)
                i += load.clients

    await asyncio.gather(*(client(n) for n in range(load.clients)))
    return latencies


def _client_process(load: Load, results: multiprocessing.SimpleQueue[list[float]]) -> None:
    results.put(asyncio.run(_drive(load)))


@dataclass(frozen=True)
class Figures:
    events_per_s: float
    p50_s: float
    p99_s: float
    server_cpu_per_event_s: float


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _measure(
    serving: AbstractAsyncContextManager[str], processes: int, clients: int, duration: float, batch: int = 1
) -> Figures:
    """Figures for one server (which runs on this event loop), from the clients' processes."""
    async with serving as target:
        context = multiprocessing.get_context("spawn")
        measure_from = time.time() + STARTUP_S + WARMUP_S
        load = Load(target, clients, measure_from, measure_from + duration, batch)
        queues = [context.SimpleQueue() for _ in range(processes)]
        workers = [context.Process(target=_client_process, args=(load, queue)) for queue in queues]
        for worker in workers:
            worker.start()
        await asyncio.sleep(measure_from - time.time())
        cpu_before = _cpu_seconds()
        await asyncio.sleep(duration)
        cpu = _cpu_seconds() - cpu_before
        latencies: list[float] = []
        for queue in queues:  # waiting in threads keeps the server's loop free
            latencies += await asyncio.to_thread(queue.get)
        for worker in workers:
            await asyncio.to_thread(worker.join)
    if not latencies:
        raise RuntimeError("no call completed inside the window: the clients started too late")
    return Figures(
        events_per_s=len(latencies) * batch / duration,
        p50_s=percentile(latencies, 0.5),
        p99_s=percentile(latencies, 0.99),
        server_cpu_per_event_s=cpu / (len(latencies) * batch),
    )


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


async def run(
    processes: int = PROCESSES, clients: int = CLIENTS_PER_PROCESS, duration: float = DURATION_S
) -> dict[str, float]:
    """Measure the intake alone and with the publisher; print the figures beside the targets."""
    socket_dir = Path(tempfile.mkdtemp(prefix="gh-bench-", dir="/tmp"))
    backends = NoOpBackends()
    publisher = Publisher(socket_dir / "spool", device_api=backends, nodes=backends, remediations=backends)
    runs: dict[str, tuple[str, AbstractAsyncContextManager[str], int]] = {
        "grpc_floor": ("gRPC floor, empty handler", _floor_server(socket_dir / "floor.sock"), 1),
        "intake": ("intake, counting sink", _intake_server(CountingSink(), socket_dir / "intake.sock"), 1),
        "intake_publisher": (
            "intake + publisher, no-op backends",
            _intake_server(publisher, socket_dir / "pub.sock"),
            1,
        ),
        "intake_batched": ("intake, counting sink", _intake_server(CountingSink(), socket_dir / "batch.sock"), BATCH),
    }
    figures: dict[str, float] = {}
    try:
        for key, (label, serving, batch) in runs.items():
            found = await _measure(serving, processes, clients, duration, batch)
            figures |= {
                f"{key}_events_per_s": found.events_per_s,
                f"{key}_p50_s": found.p50_s,
                f"{key}_p99_s": found.p99_s,
                f"{key}_server_cpu_per_event_s": found.server_cpu_per_event_s,
            }
            print(
                f"{label:36} {processes}x{clients} clients, {batch} event(s)/call: "
                f"{found.events_per_s:6.0f} events/s{_one_per_call_target(batch, 'events')}  "
                f"p50 {found.p50_s * 1000:.2f} ms  p99 {found.p99_s * 1000:.2f} ms{_one_per_call_target(batch, 'p99')}  "
                f"server CPU {found.server_cpu_per_event_s * 1e6:.0f} us/event "
                f"(~{1 / found.server_cpu_per_event_s:.0f} events/s per core)"
            )
        work = await _intake_work_per_event(publisher)
        figures["intake_work_per_event_s"] = work
        print(f"intake work per event without gRPC (validate, convert, publisher): {work * 1e6:.0f} us")
        _verdicts(figures)
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
    return figures


def _one_per_call_target(batch: int, figure: str) -> str:
    """The one-event-per-call targets, shown beside those runs only (a batch's call is longer by design)."""
    if batch != 1:
        return ""
    return (
        f" (target >= {TARGET_EVENTS_PER_S:.0f})" if figure == "events" else f" (target < {TARGET_P99_S * 1000:.0f} ms)"
    )


def _verdicts(figures: dict[str, float]) -> None:
    floor, alone = figures["grpc_floor_events_per_s"], figures["intake_events_per_s"]
    published, batched = figures["intake_publisher_events_per_s"], figures["intake_batched_events_per_s"]
    verdict(
        "intake-vs-grpc-floor",
        alone / floor >= TARGET_INTAKE_VS_FLOOR,
        f"{alone / floor:.2f}: {alone:.0f} vs {floor:.0f} events/s",
        f"≥ {TARGET_INTAKE_VS_FLOOR}",
    )
    verdict(
        "intake-publisher-vs-intake",
        published / alone >= TARGET_PUBLISHER_VS_INTAKE,
        f"{published / alone:.2f}: {published:.0f} vs {alone:.0f} events/s",
        f"≥ {TARGET_PUBLISHER_VS_INTAKE}",
    )
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
