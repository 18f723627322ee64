"""What `gpuheal-telemetry` does with readings the agent does not take at once: down, failing, stopping."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import grpc
import pydantic
import pytest
from google.protobuf import empty_pb2

from gpuheal.domain.telemetry import TelemetryPoint
from gpuheal.protos import telemetry_pb2 as pb
from gpuheal.protos import telemetry_pb2_grpc as pb_grpc
from gpuheal.tools.telemetry import main, stream
from gpuheal.tools.telemetry.settings import Settings, UsageError, settings_from
from gpuheal.tools.telemetry.stream import Schedule
from tests.agents.telemetry.test_store import point
from tests.tools.test_telemetry import SAMPLE, agent_intake, home

__all__ = ["home"]  # the fixture, shared


class Failing(pb_grpc.TelemetryIntakeServicer):
    """An agent whose every call fails inside the handler: UNKNOWN."""

    def __init__(self) -> None:
        self.calls = 0

    async def Publish(  # the contract names it
        self, request: pb.TelemetryMessage, context: grpc.aio.ServicerContext[pb.TelemetryMessage, empty_pb2.Empty]
    ) -> empty_pb2.Empty:
        self.calls += 1
        raise RuntimeError("a bug in the agent")


def test_a_time_without_a_zone_is_no_telemetry_point() -> None:
    naive = {**point(0, 0).model_dump(), "observed_at": datetime(2025, 7, 18, 20, 42, 34)}
    with pytest.raises(pydantic.ValidationError, match="timezone"):
        TelemetryPoint.model_validate(naive)


async def test_an_agent_that_fails_unexpectedly_has_the_reading_refused_after_a_few_tries(home: Path) -> None:
    socket_path = home / "telemetry.sock"
    failing = Failing()
    server = grpc.aio.server()
    pb_grpc.add_TelemetryIntakeServicer_to_server(failing, server)
    server.add_insecure_port(f"unix:{socket_path}")
    await server.start()
    try:
        settings = Settings(csv_path=SAMPLE, interval=timedelta(0), loop=False, socket=socket_path)
        streamer = await stream.run(settings, asyncio.Event())
    finally:
        await server.stop(None)

    counts = streamer.queue.counts
    assert counts.refused == 12 and counts.lost == 0 and counts.delivered == 0
    assert failing.calls < 12 * 10, "a few tries each, not forever"


async def test_at_the_end_of_the_file_the_streamer_waits_for_an_agent_that_is_down(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream, "DRAIN_TIMEOUT", timedelta(milliseconds=100))  # only a signal limits the wait
    socket_path = home / "telemetry.sock"
    settings = Settings(csv_path=SAMPLE, interval=timedelta(0), loop=False, socket=socket_path)
    streaming = asyncio.create_task(stream.run(settings, asyncio.Event()))
    await asyncio.sleep(1.0)  # the file is read, nothing delivered
    assert not streaming.done()
    async with agent_intake(socket_path) as (service, _sink):
        streamer = await streaming

    assert streamer.queue.counts.delivered == 12 == service.outcomes["accepted"]
    assert streamer.queue.counts.lost == 0


@pytest.fixture
def root_logging_restored() -> Iterator[None]:
    """`main` sets up the process's logging; the tests after this one keep pytest's."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def sigterm_in_a_second() -> Iterator[None]:
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    yield
    timer.cancel()


def test_a_signal_with_readings_undelivered_exits_non_zero_naming_the_count(
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    root_logging_restored: None,
    sigterm_in_a_second: None,
) -> None:
    monkeypatch.setattr(stream, "DRAIN_TIMEOUT", timedelta(milliseconds=100))
    with pytest.raises(SystemExit) as exited:
        main([f"-csv-path={SAMPLE}", f"-socket={home / 'none.sock'}", "-interval=0", "-loop=false"])

    assert exited.value.code == 1
    assert "12 message(s) not delivered" in capfd.readouterr().err


def test_a_stream_interval_too_long_to_hold_is_a_usage_error_naming_it() -> None:
    with pytest.raises(UsageError, match="STREAM_INTERVAL='100000000000h'"):
        settings_from([], {"CSV_PATH": "m.csv", "STREAM_INTERVAL": "100000000000h"})


def test_an_instance_id_that_is_not_utf_8_is_a_usage_error() -> None:
    not_utf8 = b"streamer-\xff".decode("utf-8", "surrogateescape")  # as os.environ holds such bytes
    with pytest.raises(UsageError, match=r"-instance-id .* is not UTF-8"):
        settings_from([], {"CSV_PATH": "m.csv", "INSTANCE_ID": not_utf8})


def test_a_schedule_that_fell_behind_starts_over_rather_than_bursting() -> None:
    schedule = Schedule(interval=0.1, now=0.0)
    assert schedule.delay(now=0.0) == 0
    schedule.sent()
    assert schedule.delay(now=0.05) == pytest.approx(0.05), "on schedule: the row waits its turn"
    schedule.sent()
    assert schedule.delay(now=60.0) == 0, "a minute stalled behind a full queue: this row goes at once"
    schedule.sent()
    assert schedule.delay(now=60.0) == pytest.approx(0.1), "and the next one an interval later, not at once"
