"""The streaming loop: one row per interval from the CSV into the publish queue, and the statistics.

Rows go out on a `Schedule` (the n-th at n × interval after the start), so the interval is kept on
average even though each row costs some time; a schedule that fell behind by more than an interval
(a full queue held the reader) starts over from then rather than sending the rows it missed in a
burst. An interval of zero sends as fast as the queue takes them. At the end of the file the loop
starts over when looping, and stops otherwise. A pass of a looping streamer that found no
well-formed row waits a second before the next, rather than spin.

When the file ends (not looping), reading stops and everything queued is delivered, however long an
agent that is down takes to come back. When `stop` is set (SIGINT, SIGTERM), reading stops and the
queue is drained for up to `DRAIN_TIMEOUT`, longer than one call; what is left is counted as
undelivered. The final statistics are logged either way, and every `STATS_EVERY` meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pydantic

from gpuheal.shutdown import stopped_within
from gpuheal.tools.telemetry.publish import CALL_TIMEOUT_S, PublishQueue, message
from gpuheal.tools.telemetry.rows import read_rows
from gpuheal.tools.telemetry.settings import Settings

log = logging.getLogger("gpuheal.telemetry")

STATS_EVERY = timedelta(seconds=10)
# A call under way when the signal came may take its whole deadline; a few more seconds deliver the rest.
DRAIN_TIMEOUT = timedelta(seconds=CALL_TIMEOUT_S + 5)
EMPTY_PASS_PAUSE_S = 1.0
# Malformed rows are logged one by one up to this many, in the first pass only: a file of garbage is
# one problem, and a replay's are the same rows again (they are counted every time).
_MALFORMED_LOGGED = 10


@dataclass
class Stats:
    """What the streamer read and what became of it."""

    malformed_rows: int = 0
    passes: int = 0
    started: float = field(default_factory=time.monotonic)

    def fields(self, queue: PublishQueue) -> dict[str, object]:
        counts = queue.counts
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return {
            "rows_sent": counts.published,
            "errors": self.malformed_rows + counts.failures + counts.refused,
            "malformed_rows": self.malformed_rows,
            "failed_calls": counts.failures,
            "refused": counts.refused,
            "queue_depth": queue.depth,
            "max_queue_depth": counts.max_depth,
            "queue_published": counts.published,
            "queue_delivered": counts.delivered,
            "rows_per_s": round(counts.published / elapsed, 1),
            "passes": self.passes,
        }


class Schedule:
    """When the next row is due: the n-th at n × `interval` after the start, starting over from `now`
    when it fell more than an interval behind."""

    def __init__(self, interval: float, now: float) -> None:
        self.interval = interval
        self._start = now
        self._rows = 0

    def delay(self, now: float) -> float:
        """Seconds until the next row is due (0: now)."""
        due = self._start + self._rows * self.interval
        if now - due > self.interval:
            self._start, self._rows = now, 0
            return 0.0
        return max(due - now, 0.0)

    def sent(self) -> None:
        self._rows += 1


class Streamer:
    """Streams the CSV of `settings` into `queue` until the file ends (not looping) or `stop` is set."""

    def __init__(self, settings: Settings, queue: PublishQueue) -> None:
        self.settings = settings
        self.queue = queue
        self.stats = Stats()
        self._malformed_this_pass = 0
        self._schedule = Schedule(settings.interval.total_seconds(), time.monotonic())

    async def stream(self, stop: asyncio.Event) -> None:
        """Read and queue rows; raises `BadHeader` or `OSError` when the file cannot be read as a DCGM CSV."""
        self._schedule = Schedule(self.settings.interval.total_seconds(), time.monotonic())
        while not stop.is_set():
            self.stats.passes += 1
            self._malformed_this_pass = 0
            sent = await self._pass(stop)
            if sent is None or not self.settings.loop:
                return
            if not sent:
                log.warning("a pass over %s sent no row; starting over in a second", self.settings.csv_path)
                if await stopped_within(stop, EMPTY_PASS_PAUSE_S):
                    return

    async def _pass(self, stop: asyncio.Event) -> int | None:
        """One pass over the file: how many rows it queued, or None when `stop` ended it."""
        sent = 0
        # Closed at once when the pass ends early, not whenever the generator is collected.
        with contextlib.closing(read_rows(self.settings.csv_path, self._malformed)) as rows:
            for row in rows:
                if not await self._turn(stop):
                    return None
                try:
                    outgoing = message(row, self.settings.instance_id, datetime.now(UTC))
                except pydantic.ValidationError as error:
                    self._malformed(row.line, f"{error.error_count()} field(s) over their limits")
                    continue
                if not await self.queue.put(outgoing, stop):
                    return None
                self._schedule.sent()
                sent += 1
        return sent

    async def _turn(self, stop: asyncio.Event) -> bool:
        """Wait until the next row is due; False when `stop` is set first."""
        if not self.settings.interval:
            await asyncio.sleep(0)  # let the workers and the signal handlers run
            return not stop.is_set()
        delay = self._schedule.delay(time.monotonic())
        if delay > 0:
            return not await stopped_within(stop, delay)
        return not stop.is_set()

    def _malformed(self, line: int, reason: str) -> None:
        self.stats.malformed_rows += 1
        self._malformed_this_pass += 1
        if self.stats.passes == 1 and self._malformed_this_pass <= _MALFORMED_LOGGED:
            log.warning("line %d skipped: %s", line, reason, extra={"fields": {"line": line}})


async def run(settings: Settings, stop: asyncio.Event) -> Streamer:
    """Stream as `settings` say until the end (not looping) or `stop`; deliver what is queued (all of it,
    or for up to `DRAIN_TIMEOUT` after `stop`), log the final statistics.

    Raises `BadHeader` or `OSError` (after draining what was queued) when the CSV cannot be read.
    """
    queue = PublishQueue(settings.socket, settings.queue_buffer, settings.queue_workers)
    streamer = Streamer(settings, queue)
    log.info(
        "Starting telemetry streamer",
        extra={
            "fields": {
                "csv_path": str(settings.csv_path),
                "socket": str(settings.socket),
                # In nanoseconds, as the seed's Go streamer logs a duration.
                "interval": settings.interval // timedelta(microseconds=1) * 1000,
                "loop_mode": settings.loop,
                "queue_buffer": settings.queue_buffer,
                "queue_workers": settings.queue_workers,
            }
        },
    )
    reporting = asyncio.create_task(_report(streamer, STATS_EVERY))
    try:
        await streamer.stream(stop)
    finally:
        log.info("stopped reading; draining the queue", extra={"fields": {"queue_depth": queue.depth}})
        await queue.close(stop, DRAIN_TIMEOUT)
        reporting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporting
        log.info(
            "Final streamer statistics",
            extra={"fields": {**streamer.stats.fields(queue), "undelivered": queue.counts.lost}},
        )
    return streamer


async def _report(streamer: Streamer, every: timedelta) -> None:
    while True:
        await asyncio.sleep(every.total_seconds())
        log.info("Streamer statistics", extra={"fields": streamer.stats.fields(streamer.queue)})
