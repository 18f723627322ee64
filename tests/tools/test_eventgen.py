"""`gpuheal-eventgen` against a real intake (the agent's PlatformConnector server) on a unix socket."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from gpuheal.agents.device_api import DeviceApiServer
from gpuheal.agents.intake import IntakeServer, IntakeSettings
from gpuheal.domain.health import HealthEvent, ProcessingStrategy
from gpuheal.protos import gpu_pb2
from gpuheal.tools import eventgen
from gpuheal.tools.eventgen import MIX, Generator, Kind, Settings, UsageError, settings_from

NODE = "gpu-node-7"


class CountingSink:
    """Keeps the events it takes, each after `delay` seconds (a slow intake)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.events: list[HealthEvent] = []
        self.delay = delay

    async def submit(self, event: HealthEvent) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        self.events.append(event)


def kind_of(event: HealthEvent) -> Kind:
    """Which of the mix's kinds the intake received, read from the event as the agent sees it."""
    if event.strategy is ProcessingStrategy.STORE_ONLY:
        return Kind.SYSTEM_INFO
    if event.component_class == "NVSwitch":
        return Kind.NVSWITCH_WARNING
    return Kind.FATAL_XID if event.is_fatal else Kind.HEALTHY_GPU


@pytest.fixture
def socket_path(short_dir: Path) -> Path:
    return short_dir / "intake.sock"


async def generate(settings: Settings, seconds: float, rng: random.Random | None = None) -> Generator:
    """Run the continuous mode for `seconds`, then wait for the calls in flight."""
    generator = Generator(settings, rng)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, stop.set)
    assert settings.rate is not None
    await generator.continuous(settings.rate, stop)
    await generator.close()
    return generator


def within(count: int, total: int, share: float) -> bool:
    """`count` of `total` is `share`'s binomial expectation, give or take 4 standard deviations."""
    expected = total * share
    return abs(count - expected) <= 4 * math.sqrt(total * share * (1 - share))


async def test_the_achieved_rate_and_mix_are_the_requested_ones(
    socket_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = CountingSink()
    caplog.set_level(logging.INFO, logger="gpuheal.eventgen")
    async with IntakeServer(sink, IntakeSettings(socket_path=socket_path)):
        generator = await generate(Settings(node=NODE, socket=socket_path, rate=400), seconds=5)

    taken = len(sink.events)
    assert generator.stats.succeeded == generator.stats.sent == taken
    assert 0.9 * 2000 <= taken <= 1.02 * 2000, f"{taken} events in 5 s at 400/s"
    kinds = Counter(kind_of(event) for event in sink.events)
    total = sum(MIX.values())
    for kind, weight in MIX.items():
        assert within(kinds[kind], taken, weight / total), f"{kind.value}: {kinds[kind]} of {taken}"
    assert {event.node for event in sink.events} == {NODE}
    fatal = [event for event in sink.events if event.is_fatal]
    assert all(event.needs_remediation and event.error_codes == ("79",) for event in fatal)
    # The seed's statistics line every 100 events, and about one success in a hundred on its own.
    messages = [record.getMessage() for record in caplog.records]
    stats = [
        m for m in messages if re.fullmatch(r"Stats: \d+ events sent \([\d.]+ events/sec\), 100\.0% success rate", m)
    ]
    assert [int(m.split()[1]) for m in stats] == list(range(100, taken + 1, 100))
    successes = sum(1 for m in messages if re.fullmatch(r"event \S+ \(.+\) taken", m))
    assert within(successes, taken, 0.01), f"{successes} successes of {taken} logged one by one"


async def test_a_slow_intake_does_not_lower_the_rate(socket_path: Path) -> None:
    """Each event takes the intake 20 ms: one call at a time would reach 50/s."""
    sink = CountingSink(delay=0.02)
    async with IntakeServer(sink, IntakeSettings(socket_path=socket_path)):
        generator = await generate(Settings(node=NODE, socket=socket_path, rate=120), seconds=3)

    assert generator.stats.succeeded >= 0.9 * 360, generator.stats.line()


async def test_an_intake_that_restarts_costs_the_events_meanwhile_not_the_rate(socket_path: Path) -> None:
    sink = CountingSink()
    settings = Settings(node=NODE, socket=socket_path, rate=100)
    generator = Generator(settings)
    stop = asyncio.Event()
    running = asyncio.create_task(generator.continuous(100, stop))
    async with IntakeServer(sink, IntakeSettings(socket_path=socket_path)):
        await asyncio.sleep(1)
    before = len(sink.events)
    await asyncio.sleep(1)  # down: its socket is gone
    async with IntakeServer(sink, IntakeSettings(socket_path=socket_path)):
        await asyncio.sleep(2)
        # The schedule is judged against the time that really passed: on a loaded machine the sleeps
        # above run long, and the generator rightly sends for as long as it ran.
        ran = time.monotonic() - generator.stats.started
        stop.set()
        await running
        await generator.close()

    assert 0.9 * 100 * ran <= generator.stats.sent <= 100 * ran + 5, "the schedule kept through the restart"
    assert generator.stats.sent - generator.stats.succeeded >= 50, "what was sent while it was down failed"
    assert len(sink.events) - before >= 100, "the restarted intake took events again within a second"


async def test_sigusr1_sends_a_fatal_event_beside_the_background_ones(socket_path: Path) -> None:
    sink = CountingSink()
    handlers: dict[int, Callable[[], None]] = {}
    stop = asyncio.Event()
    settings = Settings(
        node=NODE, socket=socket_path, background=True, interval=timedelta(seconds=0.2), gpu_uuids=("GPU-a",)
    )
    async with IntakeServer(sink, IntakeSettings(socket_path=socket_path)):

        def register(number: int, handler: Callable[[], None]) -> None:
            handlers[number] = handler

        running = asyncio.create_task(eventgen.run(settings, stop, register))
        await asyncio.sleep(0.5)
        handlers[signal.SIGUSR1]()
        await asyncio.sleep(0.3)
        stop.set()
        stats = await running

    kinds = Counter(kind_of(event) for event in sink.events)
    assert kinds[Kind.FATAL_XID] == 1
    assert 3 <= kinds[Kind.HEALTHY_GPU] <= 6, "one every 0.2 s"
    assert stats.sent == stats.succeeded == len(sink.events)


async def test_given_gpu_uuids_every_gpu_event_names_one_of_the_node_s_own_gpus(socket_path: Path) -> None:
    own = ("GPU-aaaaaaaa-0000-0000-0000-000000000001", "GPU-aaaaaaaa-0000-0000-0000-000000000002")
    sink = CountingSink()
    async with IntakeServer(sink, IntakeSettings(socket_path=socket_path)):
        await generate(Settings(node=NODE, socket=socket_path, rate=200, gpu_uuids=own), 1, random.Random(7))

    gpu_events = [event for event in sink.events if kind_of(event) in (Kind.HEALTHY_GPU, Kind.FATAL_XID)]
    assert len(gpu_events) > 50
    # Only the GPU's UUID: a made-up PCI address beside it would name another GPU of the node.
    assert {tuple((e.type, e.value) for e in event.entities) for event in gpu_events} == {
        (("GPU_UUID", gpu),) for gpu in own
    }


async def test_without_gpu_uuids_it_names_the_gpus_the_node_s_device_api_lists(socket_path: Path) -> None:
    # Not ready at first: the agent is still registering its GPUs when the generator starts.
    device_api = DeviceApiServer(socket_path.with_name("device-api.sock"), expected_gpus=2)
    sink = CountingSink()
    async with device_api, IntakeServer(sink, IntakeSettings(socket_path=socket_path)):
        stop = asyncio.Event()
        handlers: dict[int, Callable[[], None]] = {}
        settings = Settings(node=NODE, socket=socket_path, device_api=device_api.socket_path)
        generating = asyncio.create_task(eventgen.run(settings, stop, handlers.__setitem__))
        await asyncio.sleep(0.3)
        # Asked for while the GPUs are still being looked up: it goes out once they are known.
        handlers[signal.SIGUSR1]()
        await asyncio.sleep(0.3)
        assert not sink.events
        for index in range(2):
            gpu = gpu_pb2.Gpu(spec=gpu_pb2.GpuSpec(uuid=f"GPU-listed-{index}"))
            gpu.metadata.name = f"gpu-{index}"
            device_api.cache.create(gpu)
        await asyncio.sleep(1.5)
        stop.set()
        await generating

    [fatal] = sink.events
    assert fatal.is_fatal
    assert [(e.type, e.value) for e in fatal.entities] in (
        [("GPU_UUID", "GPU-listed-0")],
        [("GPU_UUID", "GPU-listed-1")],
    )


async def test_a_node_whose_device_api_does_not_answer_gets_made_up_gpus_and_a_warning(
    socket_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = CountingSink()
    absent = socket_path.with_name("no-device-api.sock")
    async with IntakeServer(sink, IntakeSettings(socket_path=socket_path)):
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(1.0, stop.set)
        settings = Settings(
            node=NODE, socket=socket_path, rate=50, device_api=absent, device_api_wait=timedelta(seconds=0.2)
        )
        await eventgen.run(settings, stop, lambda *_: None)

    assert sink.events, "it sends all the same"
    assert f"no GPUs from the Device API at {absent}" in caplog.text


def test_gpu_uuids_come_from_the_flag_or_gpu_uuids_and_an_empty_entry_is_refused() -> None:
    env = {"NODE_NAME": NODE}
    assert settings_from(["-gpu-uuids=GPU-a, GPU-b"], env).gpu_uuids == ("GPU-a", "GPU-b")
    assert settings_from([], {**env, "GPU_UUIDS": "GPU-c"}).gpu_uuids == ("GPU-c",)
    assert settings_from([], env).gpu_uuids == ()
    with pytest.raises(UsageError, match="-gpu-uuids='GPU-a,,GPU-b' has an empty entry"):
        settings_from(["--gpu-uuids", "GPU-a,,GPU-b"], env)


def test_flags_take_go_s_single_dash_form_and_the_double_dash_one() -> None:
    env = {"NODE_NAME": NODE}
    single = settings_from(["-socket=/run/x.sock", "-background=true", "-interval=1m30s"], env)
    double = settings_from(["--socket", "/run/x.sock", "--background", "--interval=90s"], env)

    assert (
        single
        == double
        == Settings(node=NODE, socket=Path("/run/x.sock"), background=True, interval=timedelta(seconds=90))
    )
    assert settings_from(["-background=false", "-interval=100ms"], env).interval == timedelta(milliseconds=100)
    assert settings_from([], {**env, "EVENT_RATE": "0.25"}).rate == 0.25


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        ([], {}, "NODE_NAME is required"),
        ([], {"NODE_NAME": "  "}, "NODE_NAME is required"),
        ([], {"NODE_NAME": NODE, "EVENT_RATE": "fast"}, "EVENT_RATE='fast' is not a number"),
        ([], {"NODE_NAME": NODE, "EVENT_RATE": "-1"}, "must be a positive number"),
        ([], {"NODE_NAME": NODE, "EVENT_RATE": "nan"}, "must be a positive number"),
        (["-interval=0"], {"NODE_NAME": NODE}, "-interval must be positive"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(argv: list[str], env: dict[str, str], named: str) -> None:
    with pytest.raises(UsageError, match=named):
        settings_from(argv, env)


@pytest.mark.parametrize(
    ("flag", "named"), [("-interval=15", "'15' is not a duration"), ("-background=maybe", "'maybe' is not a boolean")]
)
def test_a_malformed_flag_value_stops_with_its_reason(
    flag: str, named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        settings_from([flag], {"NODE_NAME": NODE})
    assert stopped.value.code == 2
    assert named in capsys.readouterr().err


def test_the_command_without_node_name_exits_with_the_reason() -> None:
    env = {key: value for key, value in os.environ.items() if key not in ("NODE_NAME", "EVENT_RATE")}
    done = subprocess.run(
        [sys.executable, "-m", "gpuheal.tools.eventgen"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "NODE_NAME is required" in done.stderr
