"""`gpuheal-telemetry` against the agent's real telemetry intake on a unix socket, mostly as a process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gpuheal.agents.telemetry import LatestMetrics, TelemetryIntakeService, TelemetryServer
from gpuheal.domain.health import HealthEvent
from gpuheal.tools.telemetry import stream
from gpuheal.tools.telemetry.publish import PublishQueue
from gpuheal.tools.telemetry.settings import Settings, UsageError, settings_from
from gpuheal.tools.telemetry.stream import Streamer

SAMPLE = Path(__file__).parent / "data" / "dcgm_sample.csv"
NODE = "dgx-node-031"
# What the sample's rows report: XID 79, double-bit ECC growth twice (volatile, lifetime), a row-remap failure.
SAMPLE_FAULTS = {("DcgmXidError", "79"), ("DcgmEccDoubleBitError", "2"), ("DcgmEccDoubleBitError", "7")}
SAMPLE_FAULTS |= {("DcgmRowRemapFailure", "1")}


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[HealthEvent] = []

    async def submit(self, event: HealthEvent) -> None:
        self.events.append(event)


@pytest.fixture
def home(short_dir: Path) -> Path:
    return short_dir


@contextlib.asynccontextmanager
async def agent_intake(socket_path: Path) -> AsyncIterator[tuple[TelemetryIntakeService, RecordingSink]]:
    """The agent's telemetry intake, its faults going to a sink that keeps them."""
    sink = RecordingSink()
    service = TelemetryIntakeService(NODE, sink, LatestMetrics())
    async with TelemetryServer(socket_path, service):
        yield service, sink


def faults(sink: RecordingSink) -> list[tuple[str, str]]:
    return [(event.check_name, event.metadata["value"]) for event in sink.events]


async def start_streamer(*flags: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gpuheal.tools.telemetry",
        *flags,
        env={**os.environ, **(env or {})},
        stderr=asyncio.subprocess.PIPE,
    )


async def finished(process: asyncio.subprocess.Process, returncode: int = 0) -> list[dict[str, Any]]:
    """The process's log lines once it exits with `returncode`; each must be one JSON object."""
    _, errors = await asyncio.wait_for(process.communicate(), 60)
    lines = errors.decode().splitlines()
    assert process.returncode == returncode, lines[-5:]
    return [json.loads(line) for line in lines]


def final(logs: list[dict[str, Any]]) -> dict[str, Any]:
    [stats] = [entry for entry in logs if entry["msg"] == "Final streamer statistics"]
    return stats


async def test_a_pass_over_the_file_reaches_the_agent_and_the_process_exits_0(home: Path) -> None:
    socket_path = home / "telemetry.sock"
    async with agent_intake(socket_path) as (service, sink):
        streamer = await start_streamer(
            f"-csv-path={SAMPLE}", f"--socket={socket_path}", "-interval=1ms", "-loop=false"
        )
        logs = await finished(streamer)

    assert service.outcomes["accepted"] == 12
    assert sorted(faults(sink)) == sorted(SAMPLE_FAULTS)
    # The seed's start line: its message, and the interval in nanoseconds as Go logs a duration.
    [started] = [entry for entry in logs if entry["msg"] == "Starting telemetry streamer"]
    assert (started["interval"], started["loop_mode"], started["csv_path"]) == (1_000_000, False, str(SAMPLE))
    stats = final(logs)
    assert {key: stats[key] for key in ("rows_sent", "errors", "queue_published", "queue_delivered")} == {
        "rows_sent": 12,
        "errors": 4,
        "queue_published": 12,
        "queue_delivered": 12,
    }
    assert {entry["instance_id"] for entry in logs} == {"streamer-1"}
    assert [entry["line"] for entry in logs if entry["level"] == "WARNING"] == [14, 15, 16, 17]


@pytest.mark.parametrize("stopping", [signal.SIGTERM, signal.SIGINT])
async def test_a_looping_streamer_replays_until_a_signal_drains_and_reports_no_fault_twice(
    home: Path, stopping: signal.Signals
) -> None:
    socket_path = home / "telemetry.sock"
    async with agent_intake(socket_path) as (service, sink):
        streamer = await start_streamer(
            f"--csv-path={SAMPLE}", f"--socket={socket_path}", env={"STREAM_INTERVAL": "0", "INSTANCE_ID": "loop-1"}
        )
        while service.outcomes["accepted"] < 5 * 12:  # five passes at least
            await asyncio.sleep(0.05)
        streamer.send_signal(stopping)
        logs = await finished(streamer)

    stats = final(logs)
    assert stats["passes"] >= 5 and stats["instance_id"] == "loop-1"
    assert stats["queue_delivered"] == stats["queue_published"] == service.outcomes["accepted"], "drained"
    assert stats["queue_depth"] == 0 and stats["undelivered"] == 0
    assert sorted(faults(sink)) == sorted(SAMPLE_FAULTS), "each fault once, however often it is replayed"


async def test_statistics_are_logged_on_their_period_with_the_seed_s_fields(
    home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(stream, "STATS_EVERY", timedelta(milliseconds=100))
    settings = Settings(csv_path=SAMPLE, interval=timedelta(milliseconds=10), socket=home / "telemetry.sock")
    stop = asyncio.Event()
    caplog.set_level(logging.INFO, logger="gpuheal.telemetry")
    async with agent_intake(settings.socket):
        asyncio.get_running_loop().call_later(0.55, stop.set)
        await stream.run(settings, stop)

    periodic = [record for record in caplog.records if record.getMessage() == "Streamer statistics"]
    assert len(periodic) >= 3
    fields = periodic[-1].__dict__["fields"]  # the `extra` the streamer logs its figures in
    assert {"rows_sent", "errors", "queue_depth", "queue_published", "queue_delivered"} <= fields.keys()
    assert fields["rows_sent"] > 0 and fields["errors"] >= 4


async def test_streamers_side_by_side_are_told_apart_by_their_instance_id(home: Path) -> None:
    socket_path = home / "telemetry.sock"
    other = home / "other.csv"
    gpu = "GPU-11111111-2222-3333-4444-555555555555"
    other.write_text(
        "timestamp,metric_name,gpu_id,device,uuid,modelName,Hostname,value\n"
        f"2025-07-18T20:42:34Z,DCGM_FI_DEV_XID_ERRORS,7,nvidia7,{gpu},H100,{NODE},48\n"
    )
    async with agent_intake(socket_path) as (_service, sink):
        streamers = [
            await start_streamer(f"-csv-path={path}", f"-socket={socket_path}", f"-instance-id={name}", "-loop=false")
            for path, name in ((SAMPLE, "streamer-a"), (other, "streamer-b"))
        ]
        for streamer in streamers:
            await finished(streamer)

    by_instance = {(event.metadata["instance_id"], event.metadata["value"]) for event in sink.events}
    assert ("streamer-b", "48") in by_instance and ("streamer-a", "79") in by_instance


async def test_two_streamers_of_the_same_file_one_after_the_other_report_each_xid_once(home: Path) -> None:
    socket_path = home / "telemetry.sock"
    xids = home / "xids.csv"
    gpu = "GPU-11111111-2222-3333-4444-555555555555"
    xids.write_text(
        "timestamp,metric_name,gpu_id,device,uuid,modelName,Hostname,value\n"
        + "".join(
            f"2025-07-18T20:42:3{at}Z,DCGM_FI_DEV_XID_ERRORS,0,nvidia0,{gpu},H100,{NODE},{xid}\n"
            for at, xid in enumerate((0, 79, 48))
        )
    )
    async with agent_intake(socket_path) as (_service, sink):
        for name in ("streamer-a", "streamer-b"):
            flags = (f"-csv-path={xids}", f"-socket={socket_path}", f"-instance-id={name}", "-interval=0")
            await finished(await start_streamer(*flags, "-loop=false"))

    assert [(event.metadata["instance_id"], event.metadata["value"]) for event in sink.events] == [
        ("streamer-a", "79"),
        ("streamer-a", "48"),
    ]


async def test_an_agent_that_is_down_costs_retries_not_readings_nor_the_process(home: Path) -> None:
    socket_path = home / "telemetry.sock"
    streamer = await start_streamer(f"-csv-path={SAMPLE}", f"-socket={socket_path}", "-interval=10ms", "-loop=false")
    await asyncio.sleep(1.0)  # the agent is not there yet: every call fails
    async with agent_intake(socket_path) as (service, _sink):
        logs = await finished(streamer)

    stats = final(logs)
    assert stats["failed_calls"] > 0 and stats["errors"] == 4 + stats["failed_calls"]
    assert stats["queue_delivered"] == 12 and service.outcomes["accepted"] == 12
    assert any(entry["msg"].startswith("the agent takes readings again") for entry in logs)


async def test_a_full_queue_makes_the_reader_wait(home: Path) -> None:
    """No agent, so nothing leaves the queue: the reader stops at the buffer plus one message per worker."""
    settings = Settings(csv_path=SAMPLE, interval=timedelta(0), queue_buffer=4, queue_workers=2, socket=home / "none")
    queue = PublishQueue(settings.socket, settings.queue_buffer, settings.queue_workers)
    streamer = Streamer(settings, queue)
    stop = asyncio.Event()
    reading = asyncio.create_task(streamer.stream(stop))
    await asyncio.sleep(1.0)
    published = queue.counts.published
    stop.set()
    await reading
    await queue.close(stop, timedelta(milliseconds=100))

    assert 0 < published <= 4 + 2, "at most the buffer, and what each worker holds, of endless passes"
    assert queue.counts.max_depth <= 4
    assert queue.counts.delivered == 0 and queue.counts.lost == published


async def test_another_node_s_readings_are_refused_counted_dropped_and_the_process_exits_1(home: Path) -> None:
    socket_path = home / "telemetry.sock"
    elsewhere = home / "elsewhere.csv"
    elsewhere.write_text(SAMPLE.read_text().replace(NODE, "dgx-node-999"))
    async with agent_intake(socket_path) as (service, _sink):
        streamer = await start_streamer(f"-csv-path={elsewhere}", f"-socket={socket_path}", "-loop=false")
        logs = await finished(streamer, returncode=1)

    assert service.outcomes == {"other_node": 12}
    stats = final(logs)
    assert stats["refused"] == 12 and stats["queue_delivered"] == 0 and stats["undelivered"] == 0
    [why] = [entry for entry in logs if entry["level"] == "ERROR"]
    assert why["msg"] == "not every reading was delivered: 12 refused by the agent, 0 undelivered"


async def test_a_csv_without_required_columns_stops_the_process_naming_them(home: Path) -> None:
    bad = home / "bad.csv"
    bad.write_text("timestamp,metric_name,gpu_id,device,modelName,Hostname\n")
    streamer = await start_streamer(f"-csv-path={bad}", f"-socket={home / 'none'}")
    _, errors = await asyncio.wait_for(streamer.communicate(), 60)

    assert streamer.returncode == 1
    error = json.loads(errors.decode().splitlines()[-1])
    assert error["level"] == "ERROR" and "lacks the required column(s) uuid, value" in error["msg"]


def test_flags_take_go_s_single_dash_form_and_the_double_dash_one() -> None:
    single = settings_from(
        [
            "-csv-path=m.csv",
            "-instance-id=s-2",
            "-interval=1m30s",
            "-loop=false",
            "-queue-buffer=5",
            "-queue-workers=2",
        ],
        {},
    )
    double = settings_from(
        [
            "--csv-path",
            "m.csv",
            "--instance-id",
            "s-2",
            "--interval",
            "90s",
            "--loop=f",
            "--queue-buffer",
            "5",
            "--queue-workers",
            "2",
        ],
        {},
    )

    assert single == double
    assert single == Settings(
        csv_path=Path("m.csv"),
        instance_id="s-2",
        interval=timedelta(seconds=90),
        loop=False,
        queue_buffer=5,
        queue_workers=2,
    )


def test_the_environment_fills_in_and_flags_win_over_it() -> None:
    env = {
        "CSV_PATH": "/data/dcgm.csv",
        "INSTANCE_ID": "streamer-7",
        "STREAM_INTERVAL": "150ms",
        "LOOP_MODE": "false",
        "QUEUE_BUFFER_SIZE": "50",
        "QUEUE_WORKERS": "3",
        "AGENT_SOCKET": "/run/x/telemetry.sock",
    }
    assert settings_from([], env) == Settings(
        csv_path=Path("/data/dcgm.csv"),
        instance_id="streamer-7",
        interval=timedelta(milliseconds=150),
        loop=False,
        queue_buffer=50,
        queue_workers=3,
        socket=Path("/run/x/telemetry.sock"),
    )
    assert settings_from(["-instance-id=flag", "-loop"], env).instance_id == "flag"
    assert settings_from(["-loop"], env).loop is True
    assert settings_from([], {"CSV_PATH": "m.csv"}) == Settings(csv_path=Path("m.csv")), "the seed's defaults"


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        ([], {}, r"-csv-path \(or CSV_PATH\) is required"),
        ([], {"CSV_PATH": "m.csv", "STREAM_INTERVAL": "fast"}, "STREAM_INTERVAL='fast': 'fast' is not a duration"),
        ([], {"CSV_PATH": "m.csv", "QUEUE_WORKERS": "many"}, "QUEUE_WORKERS='many'"),
        ([], {"CSV_PATH": "m.csv", "LOOP_MODE": "sometimes"}, "LOOP_MODE='sometimes'"),
        (["-csv-path=m.csv", "-queue-buffer=0"], {}, "-queue-buffer must be at least 1"),
        (["-csv-path=m.csv", "-instance-id= "], {}, "-instance-id must not be empty"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(argv: list[str], env: dict[str, str], named: str) -> None:
    with pytest.raises(UsageError, match=named):
        settings_from(argv, env)


def test_the_command_without_a_csv_exits_2_with_the_reason() -> None:
    env = {key: value for key, value in os.environ.items() if key != "CSV_PATH"}
    done = subprocess.run(
        [sys.executable, "-m", "gpuheal.tools.telemetry"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "-csv-path (or CSV_PATH) is required" in done.stderr
