"""`gpuheal-telemetry`: DCGM exporter CSV readings, streamed to the node agent's telemetry intake.

The seed's telemetry streamer: it reads the CSV a DCGM exporter writes (`rows`), one row per
`-interval`, and publishes each as a `TelemetryIntake.Publish` message (headers, metadata and a JSON
telemetry point, `gpuheal.domain.telemetry`) through a bounded queue drained by a few workers
(`publish`) into the agent's `telemetry.sock`. The agent keeps the latest values as Prometheus
metrics and reports DCGM's signs of failure (XIDs, double-bit ECC errors, row-remap failures) as
health events. Several streamers may run side by side, each with its own `-instance-id`.

Not looping, the process ends once every reading is delivered or refused (waiting for an agent that
is down). SIGINT or SIGTERM stops reading and drains the queue for a while; the final statistics are
logged, and the process exits 0 when every reading was delivered, 1 (the counts logged) when the agent
refused one or one was left undelivered. Malformed CSV rows are skipped and logged, not a failure.
Logs are JSON lines on stderr, statistics among them every 10 s.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from gpuheal.tools.telemetry.jsonlog import log_as_json
from gpuheal.tools.telemetry.publish import QueueCounts
from gpuheal.tools.telemetry.rows import BadHeader
from gpuheal.tools.telemetry.settings import UsageError, settings_from
from gpuheal.tools.telemetry.stream import run

log = logging.getLogger("gpuheal.telemetry")


def main(argv: Sequence[str] | None = None) -> None:
    try:
        settings = settings_from(sys.argv[1:] if argv is None else argv, os.environ)
    except UsageError as error:
        print(f"gpuheal-telemetry: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    log_as_json(settings.instance_id)

    async def serve() -> QueueCounts:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for stopping in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(stopping, stop.set)
        try:
            return (await run(settings, stop)).queue.counts
        finally:
            for stopping in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(stopping)

    try:
        counts = asyncio.run(serve())
    except (BadHeader, OSError) as error:
        log.error("cannot stream %s: %s", settings.csv_path, error)
        raise SystemExit(1) from None
    # A refused reading never reached the agent either: whoever runs the streamer must see it.
    if counts.refused or counts.lost:
        log.error(
            "not every reading was delivered: %d refused by the agent, %d undelivered", counts.refused, counts.lost
        )
        raise SystemExit(1)
