"""`gpuheal-eventgen`: health events for an agent's intake, to load and time gpuheal on a cluster.

It speaks the intake's PlatformConnector (`HealthEventOccurredV1`) over its unix socket, as other
monitors do, in one of three modes:

- continuous, when `EVENT_RATE` (events/s) is set: a mix of 64% healthy GPU events, 24% system
  information (store-only), 8% fatal XID 79 (which quarantines the node) and 4% NVSwitch warnings;
- background (`-background=true`): a healthy GPU event every `-interval`;
- on demand only (neither).

GPU events name the node's GPUs: those of `-gpu-uuids`, else those the agent's Device API lists
(asked at start, for up to 30 s while the agent registers them), else made-up ones, with a warning.
In every mode SIGUSR1 sends one fatal XID 79 event, and SIGINT or SIGTERM stops it after the final
statistics. Events go out on a schedule (the n-th at n / rate seconds after the start), with a few
calls in flight at once, so a slow intake does not lower the rate, and one that is restarting costs
the events sent meanwhile (counted as failures) but not the rate: the channel reconnects within a
second. Statistics are logged every 100 events (count, achieved rate, success rate), and about one
success in a hundred on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import enum
import logging
import os
import random
import signal
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import grpc

from gpuheal.protos import gpu_pb2, gpu_pb2_grpc
from gpuheal.protos import health_event_pb2 as pb
from gpuheal.protos import health_event_pb2_grpc as pb_grpc
from gpuheal.protos.sockets import DEVICE_API_SOCKET, HEALTH_EVENTS_SOCKET, SOCKET_DIR
from gpuheal.shutdown import stopped_within
from gpuheal.tools.goflags import add_flag

log = logging.getLogger("gpuheal.eventgen")

DEFAULT_SOCKET = SOCKET_DIR / HEALTH_EVENTS_SOCKET
DEFAULT_DEVICE_API = SOCKET_DIR / DEVICE_API_SOCKET
AGENT = "gpuheal-eventgen"
# Calls in flight at once: the intake serves 8 at a time (and refuses more), other monitors included.
IN_FLIGHT = 4
STATS_EVERY = 100
# The share of successes logged one by one.
SUCCESS_LOG_SHARE = 0.01
GPUS = 8
# gRPC's reconnect backoff grows to minutes by default; an intake that restarts must be found again at once.
_CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000)]


class Kind(enum.Enum):
    HEALTHY_GPU = "healthy GPU"
    SYSTEM_INFO = "system info"
    FATAL_XID = "fatal XID 79"
    NVSWITCH_WARNING = "NVSwitch warning"


# The continuous mix, out of 125 (the seed's 80/30/10/5).
MIX: dict[Kind, int] = {Kind.HEALTHY_GPU: 80, Kind.SYSTEM_INFO: 30, Kind.FATAL_XID: 10, Kind.NVSWITCH_WARNING: 5}


class UsageError(ValueError):
    """The environment or the flags do not say what to do: the message names the setting."""


@dataclass(frozen=True, slots=True)
class Settings:
    node: str
    socket: Path = DEFAULT_SOCKET
    # Events per second, continuously; None: background or on demand only.
    rate: float | None = None
    background: bool = False
    interval: timedelta = timedelta(seconds=15)
    # The node's GPUs the GPU events name; none: those the node's Device API lists, else (it does not
    # answer within `device_api_wait`) GPUS made-up ones, which the agent stores without recording
    # their health, and whose fatal events leave a remediation waiting on a GPU that never comes back
    # healthy (it escalates to a person).
    gpu_uuids: tuple[str, ...] = ()
    device_api: Path = DEFAULT_DEVICE_API
    device_api_wait: timedelta = timedelta(seconds=30)


def settings_from(argv: Sequence[str], environ: dict[str, str] | os._Environ[str]) -> Settings:
    """The settings from the flags (single- or double-dash) and NODE_NAME / EVENT_RATE."""
    parser = argparse.ArgumentParser(prog="gpuheal-eventgen", allow_abbrev=False, description=__doc__.split("\n\n")[0])
    add_flag(parser, "socket", default=DEFAULT_SOCKET, kind=Path, help="the agent's intake socket")
    add_flag(parser, "background", default=False, kind="bool", help="send a healthy event every -interval")
    add_flag(parser, "interval", default=timedelta(seconds=15), kind="duration", help="the background interval")
    add_flag(
        parser,
        "gpu-uuids",
        default=environ.get("GPU_UUIDS", ""),
        help="the node's GPUs, comma-separated, for GPU events to name [env GPU_UUIDS; default: those -device-api "
        "lists]",
    )
    add_flag(parser, "device-api", default=DEFAULT_DEVICE_API, kind=Path, help="the agent's Device API socket")
    options = parser.parse_args(list(argv))
    node = environ.get("NODE_NAME", "").strip()
    if not node:
        raise UsageError("NODE_NAME is required: the node the events are about (in a DaemonSet, spec.nodeName)")
    rate: float | None = None
    if environ.get("EVENT_RATE", "").strip():
        try:
            rate = float(environ["EVENT_RATE"])
        except ValueError:
            raise UsageError(f"EVENT_RATE={environ['EVENT_RATE']!r} is not a number of events per second") from None
        if not 0 < rate < float("inf"):
            raise UsageError(f"EVENT_RATE={environ['EVENT_RATE']!r} must be a positive number of events per second")
    if options.interval <= timedelta(0):
        raise UsageError(f"-interval must be positive, not {options.interval}")
    gpu_uuids = tuple(name.strip() for name in options.gpu_uuids.split(",")) if options.gpu_uuids.strip() else ()
    if "" in gpu_uuids:
        raise UsageError(f"-gpu-uuids={options.gpu_uuids!r} has an empty entry: give GPU UUIDs separated by commas")
    return Settings(
        node=node,
        socket=options.socket,
        rate=rate,
        background=options.background,
        interval=options.interval,
        gpu_uuids=gpu_uuids,
        device_api=options.device_api,
    )


def choose(rng: random.Random) -> Kind:
    """One kind of the continuous mix, by its weight."""
    return rng.choices(list(MIX), weights=list(MIX.values()))[0]


def event(kind: Kind, node: str, rng: random.Random, gpu_uuids: Sequence[str] = ()) -> pb.HealthEvent:
    """A health event of `kind` about one of the node's GPUs (`gpu_uuids`, else made-up ones), or its
    NVSwitch, or the node, now."""
    wire = _of_kind(kind, _gpu_entities(node, rng, gpu_uuids), rng)
    wire.version, wire.agent, wire.nodeName, wire.id = 1, AGENT, node, str(uuid.uuid4())
    wire.generatedTimestamp.GetCurrentTime()
    return wire


def _gpu_entities(node: str, rng: random.Random, gpu_uuids: Sequence[str]) -> list[pb.Entity]:
    if gpu_uuids:  # the node's own: their PCI addresses are the agent's to know
        return [pb.Entity(entityType="GPU_UUID", entityValue=rng.choice(gpu_uuids))]
    gpu = rng.randrange(GPUS)
    return [
        pb.Entity(entityType="PCI", entityValue=f"0000:{0x18 + 0x10 * gpu:02x}:00.0"),
        pb.Entity(entityType="GPU_UUID", entityValue=f"GPU-{uuid.uuid5(uuid.NAMESPACE_DNS, f'{node}/{gpu}')}"),
    ]


def _of_kind(kind: Kind, gpu_entities: list[pb.Entity], rng: random.Random) -> pb.HealthEvent:
    gpu = gpu_entities[-1].entityValue
    match kind:
        case Kind.HEALTHY_GPU:
            return pb.HealthEvent(
                componentClass="GPU",
                checkName="GpuHealthCheck",
                isHealthy=True,
                message=f"GPU {gpu} healthy",
                entitiesImpacted=gpu_entities,
            )
        case Kind.SYSTEM_INFO:
            return pb.HealthEvent(
                componentClass="System",
                checkName="SystemInfo",
                isHealthy=True,
                message="system information",
                processingStrategy=pb.STORE_ONLY,
                metadata={"kernel": "6.8.0", "driver": "570.124.06"},
            )
        case Kind.FATAL_XID:
            return pb.HealthEvent(
                componentClass="GPU",
                checkName="SysLogsXIDError",
                isFatal=True,
                message="XID 79: GPU has fallen off the bus",
                recommendedAction=pb.RESTART_BM,
                errorCode=["79"],
                entitiesImpacted=gpu_entities,
            )
        case Kind.NVSWITCH_WARNING:
            return pb.HealthEvent(
                componentClass="NVSwitch",
                checkName="NVSwitchNonFatalError",
                message="NVSwitch SXid 20034: link training warning",
                errorCode=["20034"],
                entitiesImpacted=[pb.Entity(entityType="NVSWITCH", entityValue=str(rng.randrange(4)))],
            )


@dataclass
class Stats:
    """What was sent, and how it went."""

    started: float = field(default_factory=time.monotonic)
    sent: int = 0
    succeeded: int = 0
    by_kind: dict[Kind, int] = field(default_factory=dict)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        success = 100.0 * self.succeeded / self.sent if self.sent else 100.0
        return f"Stats: {self.sent} events sent ({self.sent / elapsed:.2f} events/sec), {success:.1f}% success rate"


class Generator:
    """Sends events to the intake at `socket`, at most IN_FLIGHT calls at once."""

    def __init__(self, settings: Settings, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.stats = Stats()
        self._rng = rng or random.Random()
        self._channel = grpc.aio.insecure_channel(f"unix:{settings.socket}", options=_CHANNEL_OPTIONS)
        self._stub = pb_grpc.PlatformConnectorStub(self._channel)
        self._slots = asyncio.Semaphore(IN_FLIGHT)
        self._calls: set[asyncio.Task[None]] = set()
        # Failures since the intake last took an event: logged when they start and when they end,
        # not one by one (an intake that is down fails every event sent meanwhile).
        self._failing = 0

    async def close(self) -> None:
        """Wait for the calls in flight, then close the channel."""
        await asyncio.gather(*self._calls, return_exceptions=True)
        await self._channel.close()

    async def send(self, kind: Kind) -> None:
        """Start sending one event of `kind` (once a slot is free); its outcome goes to the statistics."""
        await self._slots.acquire()
        call = asyncio.create_task(self._call(kind))
        self._calls.add(call)
        call.add_done_callback(self._calls.discard)

    async def _call(self, kind: Kind) -> None:
        wire = event(kind, self.settings.node, self._rng, self.settings.gpu_uuids)
        try:
            await self._stub.HealthEventOccurredV1(pb.HealthEvents(version=1, events=[wire]), timeout=10)
        except grpc.aio.AioRpcError as error:
            if not self._failing:
                log.warning(
                    "the intake does not take events (%s: %s); counting them until it does",
                    error.code().name,
                    error.details(),
                )
            self._failing += 1
        else:
            self.stats.succeeded += 1
            if self._failing:
                log.info("the intake takes events again, after %d not taken", self._failing)
                self._failing = 0
            if self._rng.random() < SUCCESS_LOG_SHARE:
                log.info("event %s (%s) taken", wire.id, kind.value)
        finally:
            self._slots.release()
            self.stats.sent += 1
            self.stats.by_kind[kind] = self.stats.by_kind.get(kind, 0) + 1
            if self.stats.sent % STATS_EVERY == 0:
                log.info(self.stats.line())

    async def continuous(self, rate: float, stop: asyncio.Event) -> None:
        """The mix at `rate` events/s until `stop`: the n-th event is due n / rate s after the start."""
        started = time.monotonic()
        for count in range(sys.maxsize):
            delay = started + count / rate - time.monotonic()
            if delay > 0 and await stopped_within(stop, delay):
                return
            if stop.is_set():
                return
            await self.send(choose(self._rng))

    async def background(self, interval: timedelta, stop: asyncio.Event) -> None:
        """A healthy GPU event every `interval` until `stop`."""
        while not stop.is_set():
            await self.send(Kind.HEALTHY_GPU)
            if await stopped_within(stop, interval.total_seconds()):
                return


async def node_gpus(device_api: Path, wait: timedelta) -> tuple[str, ...]:
    """The GPU UUIDs the node's Device API lists, asked until it answers with some or `wait` is over
    (it answers UNAVAILABLE while the agent is still registering the node's GPUs); () if it never does."""
    deadline = time.monotonic() + wait.total_seconds()
    async with grpc.aio.insecure_channel(f"unix:{device_api}", options=_CHANNEL_OPTIONS) as channel:
        stub = gpu_pb2_grpc.GpuServiceStub(channel)
        while True:
            try:
                listed = await stub.ListGpus(gpu_pb2.ListGpusRequest(), timeout=max(deadline - time.monotonic(), 0.1))
            except grpc.aio.AioRpcError:
                listed = None
            gpus = tuple(sorted(gpu.spec.uuid for gpu in listed.gpu_list.items)) if listed else ()
            if gpus or time.monotonic() >= deadline:
                return gpus
            await asyncio.sleep(min(0.5, max(deadline - time.monotonic(), 0)))


async def run(settings: Settings, stop: asyncio.Event, on_signal: Callable[[int, Callable[[], None]], None]) -> Stats:
    """Generate as `settings` say until `stop`; SIGUSR1 (through `on_signal`) sends a fatal event.

    SIGUSR1 is handled from the start (its default would end the process), and a fatal event asked
    for while the node's GPUs are still being looked up goes out as soon as they are known."""
    made: asyncio.Future[Generator] = asyncio.get_running_loop().create_future()
    fatal_sends: set[asyncio.Task[None]] = set()

    async def send_fatal() -> None:
        await (await made).send(Kind.FATAL_XID)

    def fatal() -> None:
        log.info("SIGUSR1: sending a fatal XID 79 event")
        task = asyncio.create_task(send_fatal())
        fatal_sends.add(task)
        task.add_done_callback(fatal_sends.discard)

    on_signal(signal.SIGUSR1, fatal)
    if not settings.gpu_uuids:
        settings = dataclasses.replace(settings, gpu_uuids=await _looked_up_gpus(settings, stop))
    generator = Generator(settings)
    made.set_result(generator)
    mode = (
        f"continuous at {settings.rate} events/s"
        if settings.rate
        else f"background every {settings.interval}"
        if settings.background
        else "on demand (SIGUSR1)"
    )
    log.info("sending %s events for node %s to %s", mode, settings.node, settings.socket)
    try:
        if settings.rate:
            await generator.continuous(settings.rate, stop)
        elif settings.background:
            await generator.background(settings.interval, stop)
        else:
            await stop.wait()
    finally:
        await asyncio.gather(*fatal_sends, return_exceptions=True)
        await generator.close()
        log.info("Final %s", generator.stats.line())
    return generator.stats


async def _looked_up_gpus(settings: Settings, stop: asyncio.Event) -> tuple[str, ...]:
    """The node's GPUs from its Device API, unless `stop` comes first (then none)."""
    lookup = asyncio.create_task(node_gpus(settings.device_api, settings.device_api_wait))
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({lookup, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not lookup.done():
        lookup.cancel()
        return ()
    gpus = lookup.result()
    if gpus:
        log.info("GPU events name the %d GPU(s) the Device API at %s lists", len(gpus), settings.device_api)
    else:
        log.warning(
            "no GPUs from the Device API at %s within %s: GPU events name made-up GPUs, whose fatal events "
            "escalate to a person (give -gpu-uuids)",
            settings.device_api,
            settings.device_api_wait,
        )
    return gpus


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = settings_from(sys.argv[1:] if argv is None else argv, os.environ)
    except UsageError as error:
        print(f"gpuheal-eventgen: {error}", file=sys.stderr)
        raise SystemExit(2) from None

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for stopping in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(stopping, stop.set)
        await run(settings, stop, loop.add_signal_handler)

    asyncio.run(serve())


if __name__ == "__main__":
    main()
