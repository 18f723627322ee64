"""The streaming loop: one row per interval from the CSV into the publish queue, and the statistics.

Rows go out on a schedule (the n-th at n × interval after the start), so the interval is kept on
average even though each row costs some time; an interval of zero sends as fast as the queue takes
them. At the end of the file the loop starts over when looping, and stops otherwise. A pass of a
looping streamer that found no well-formed row waits a second before the next, rather than spin.

When `stop` is set (SIGINT, SIGTERM) or the file ends, reading stops, the queue is drained into the
agent (for up to `DRAIN_TIMEOUT`), and the final statistics are logged. Statistics are logged every
`STATS_EVERY` meanwhile.
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
from gpuheal.tools.telemetry.publish import PublishQueue, message
from gpuheal.tools.telemetry.rows import read_rows
from gpuheal.tools.telemetry.settings import Settings

log = logging.getLogger("gpuheal.telemetry")

STATS_EVERY = timedelta(seconds=10)
DRAIN_TIMEOUT = timedelta(seconds=5)
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


class Streamer:
    """Streams the CSV of `settings` into `queue` until the file ends (not looping) or `stop` is set."""

    def __init__(self, settings: Settings, queue: PublishQueue) -> None:
        self.settings = settings
        self.queue = queue
        self.stats = Stats()
        self._malformed_this_pass = 0
        # The schedule: when streaming started, and the rows queued since.
        self._started = time.monotonic()
        self._queued = 0

    async def stream(self, stop: asyncio.Event) -> None:
        """Read and queue rows; raises `BadHeader` or `OSError` when the file cannot be read as a DCGM CSV."""
        self._started = time.monotonic()
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
                self._queued += 1
                sent += 1
        return sent

    async def _turn(self, stop: asyncio.Event) -> bool:
        """Wait until the next row is due (the n-th at n × interval); False when `stop` is set first."""
        interval = self.settings.interval.total_seconds()
        if not interval:
            await asyncio.sleep(0)  # let the workers and the signal handlers run
            return not stop.is_set()
        delay = self._started + self._queued * interval - time.monotonic()
        if delay > 0:
            return not await stopped_within(stop, delay)
        return not stop.is_set()

    def _malformed(self, line: int, reason: str) -> None:
        self.stats.malformed_rows += 1
        self._malformed_this_pass += 1
        if self.stats.passes == 1 and self._malformed_this_pass <= _MALFORMED_LOGGED:
            log.warning("line %d skipped: %s", line, reason, extra={"fields": {"line": line}})


async def run(settings: Settings, stop: asyncio.Event) -> Streamer:
    """Stream as `settings` say until the end (not looping) or `stop`; drain, log the final statistics.

    Raises `BadHeader` or `OSError` (after draining what was queued) when the CSV cannot be read.
    """
    queue = PublishQueue(settings.socket, settings.queue_buffer, settings.queue_workers)
    streamer = Streamer(settings, queue)
    log.info(
        "starting telemetry streamer",
        extra={
            "fields": {
                "csv_path": str(settings.csv_path),
                "socket": str(settings.socket),
                "interval": settings.interval.total_seconds(),
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
        await queue.close(DRAIN_TIMEOUT)
        reporting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporting
        log.info(
            "final streamer statistics",
            extra={"fields": {**streamer.stats.fields(queue), "undelivered": queue.counts.lost}},
        )
    return streamer


async def _report(streamer: Streamer, every: timedelta) -> None:
    while True:
        await asyncio.sleep(every.total_seconds())
        log.info("streamer statistics", extra={"fields": streamer.stats.fields(streamer.queue)})
