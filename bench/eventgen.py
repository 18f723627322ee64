"""The event generator: the highest rate one `gpuheal-eventgen` process sustains against one agent.

The agent's intake runs here with its real publisher in front of no-op backends (as in
bench/intake.py); the generator runs as a process of its own with the seed's mix, `EVENT_RATE`
doubling from 250 events/s, each rate for a few seconds. A rate is sustained when the intake took,
within a window after the first event arrived, at least 95% of what the schedule called for, and
every call of the run succeeded. The first rate that is not sustained ends the climb.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench.intake import NoOpBackends
from gpuheal.agents.intake import IntakeServer, IntakeSettings
from gpuheal.agents.publisher import Publisher
from gpuheal.domain.health import HealthEvent

FIRST_RATE = 250.0
HIGHEST_RATE = 16_000.0
WINDOW_S = 4.0
SUSTAINED = 0.95
_FINAL = re.compile(r"Final Stats: (\d+) events sent .*, ([\d.]+)% success rate")


class TimingSink:
    """Hands each event to the publisher and keeps when it arrived."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        self.arrivals: list[float] = []
        self.first = asyncio.Event()

    async def submit(self, event: HealthEvent) -> None:
        await self.publisher.submit(event)
        self.arrivals.append(time.monotonic())
        self.first.set()


async def _at(rate: float, socket_path: Path, sink: TimingSink) -> tuple[float, float]:
    """The rate the intake took from one generator process asked for `rate`, and the run's success share."""
    sink.arrivals.clear()
    sink.first.clear()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gpuheal.tools.eventgen",
        f"-socket={socket_path}",
        # The no-op Device API lists no GPUs: the events name eight of the node's, as on a node.
        f"-gpu-uuids={','.join(f'GPU-bench-{index}' for index in range(8))}",
        env={**os.environ, "NODE_NAME": "bench-node", "EVENT_RATE": str(rate)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    with contextlib.suppress(TimeoutError):  # a generator that never delivers is reported below
        await asyncio.wait_for(sink.first.wait(), 60)
    await asyncio.sleep(WINDOW_S + 1.0)  # a second to settle, then the window
    process.send_signal(signal.SIGTERM)
    _, errors = await process.communicate()
    final = _FINAL.search(errors.decode())
    if not sink.arrivals or final is None:
        raise RuntimeError(f"the generator at {rate}/s took no events or gave no final line: {errors.decode()[-500:]}")
    start = sink.arrivals[0] + 1.0
    taken = bisect.bisect_left(sink.arrivals, start + WINDOW_S) - bisect.bisect_left(sink.arrivals, start)
    return taken / WINDOW_S, float(final.group(2)) / 100


async def run() -> dict[str, float]:
    print("event generator: one gpuheal-eventgen process, the seed's mix, against one agent's intake + publisher")
    # The no-op Device API knows no GPU, and the publisher says so for every event naming one.
    logging.getLogger("gpuheal.agents").setLevel(logging.ERROR)
    socket_dir = Path(tempfile.mkdtemp(prefix="gh-bench-gen-", dir="/tmp"))
    backends = NoOpBackends()
    publisher = Publisher(socket_dir / "spool", device_api=backends, nodes=backends, remediations=backends)
    sink = TimingSink(publisher)
    highest = 0.0
    try:
        async with IntakeServer(sink, IntakeSettings(socket_path=socket_dir / "intake.sock")):
            rate = FIRST_RATE
            while rate <= HIGHEST_RATE:
                achieved, success = await _at(rate, socket_dir / "intake.sock", sink)
                sustained = achieved >= SUSTAINED * rate and success == 1.0
                verdict = "sustained" if sustained else "not sustained"
                print(f"  asked {rate:7.0f}/s: took {achieved:7.0f}/s, {success:6.1%} of calls succeeded: {verdict}")
                if not sustained:
                    break
                highest, rate = rate, rate * 2
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
    print(f"  highest rate sustained  {highest:7.0f} events/s (the seed's heavy load is 0.2/s per node)")
    return {"eventgen_sustained_per_s": highest}


if __name__ == "__main__":
    asyncio.run(run())
