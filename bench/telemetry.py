"""The telemetry streamer: the rows per second one `gpuheal-telemetry` process sustains into one agent.

The agent's telemetry intake runs here with its real metrics store and its real publisher (in front
of no-op backends, as in bench/eventgen.py) as the sink of the faults; the streamer runs as a
process of its own with `-interval=0` and its default queue (1,000 places, 10 workers), looping
over a CSV of 8 GPUs × 40 DCGM fields, one of which carries an XID. The rate is what the intake
took within a window after a second to settle; the queue's highest depth comes from the streamer's
final statistics and must stay within `-queue-buffer`, and the XID must have been reported once,
however many passes replayed it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench.intake import NoOpBackends
from gpuheal.agents.publisher import Publisher
from gpuheal.agents.telemetry import LatestMetrics, TelemetryIntakeService, TelemetryServer
from gpuheal.domain.health import HealthEvent

NODE = "bench-node"
GPUS = 8
FIELDS = 40
QUEUE_BUFFER = 1000
SETTLE_S = 1.0
WINDOW_S = 5.0
HEADER = "timestamp,metric_name,gpu_id,device,uuid,modelName,Hostname,container,pod,namespace,value,labels_raw\n"


class CountingSink:
    """Hands each fault to the publisher and counts it."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        self.faults = 0

    async def submit(self, event: HealthEvent) -> None:
        await self.publisher.submit(event)
        self.faults += 1


def write_csv(path: Path) -> int:
    """A DCGM CSV of GPUS × FIELDS readings, GPU 3 reporting XID 79; the number of rows."""
    lines = [HEADER]
    for gpu in range(GPUS):
        uuid = f"GPU-{gpu:08x}-0000-4000-8000-00000000bench"
        for field in range(FIELDS):
            metric, value = (
                ("DCGM_FI_DEV_XID_ERRORS", 79 if gpu == 3 else 0)
                if field == 0
                else (f"DCGM_FI_DEV_FIELD_{field}", field)
            )
            lines.append(
                f'2025-07-18T20:42:34Z,{metric},{gpu},nvidia{gpu},{uuid},NVIDIA H100 80GB HBM3,{NODE},,,,{value},"gpu=""{gpu}"""\n'
            )
    path.write_text("".join(lines))
    return GPUS * FIELDS


async def run() -> dict[str, float]:
    print("telemetry streamer: one gpuheal-telemetry process (-interval=0) into one agent's telemetry intake")
    logging.getLogger("gpuheal.agents").setLevel(logging.ERROR)
    home = Path(tempfile.mkdtemp(prefix="gh-bench-tel-", dir="/tmp"))
    backends = NoOpBackends()
    rows = write_csv(home / "dcgm.csv")
    try:
        async with Publisher(home / "spool", device_api=backends, nodes=backends, remediations=backends) as publisher:
            sink = CountingSink(publisher)
            service = TelemetryIntakeService(NODE, sink, LatestMetrics())
            async with TelemetryServer(home / "telemetry.sock", service):
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "gpuheal.tools.telemetry",
                    f"-csv-path={home / 'dcgm.csv'}",
                    f"-socket={home / 'telemetry.sock'}",
                    "-interval=0",
                    f"-queue-buffer={QUEUE_BUFFER}",
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE,
                )
                for _ in range(6000):  # a minute for the process to start and deliver its first row
                    if service.outcomes["accepted"]:
                        break
                    await asyncio.sleep(0.01)
                await asyncio.sleep(SETTLE_S)
                before, started = service.outcomes["accepted"], time.monotonic()
                await asyncio.sleep(WINDOW_S)
                rate = (service.outcomes["accepted"] - before) / (time.monotonic() - started)
                process.send_signal(signal.SIGTERM)
                _, errors = await process.communicate()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    [final] = [json.loads(line) for line in errors.decode().splitlines() if "Final streamer statistics" in line]
    depth = final["max_queue_depth"]
    within = depth <= QUEUE_BUFFER
    print(f"  rows sustained           {rate:7.0f} rows/s ({rows} rows a pass, {final['passes']} passes)")
    print(f"  highest queue depth      {depth:7d} of {QUEUE_BUFFER}: {'within' if within else 'OVER'} the buffer")
    print(f"  delivered / published    {final['queue_delivered']} / {final['queue_published']} (drained at SIGTERM)")
    print(f"  faults reported          {sink.faults:7d} (the one XID, however often it was replayed)")
    if not within or sink.faults != 1 or final["queue_delivered"] != final["queue_published"]:
        raise RuntimeError(f"the streamer's run went wrong: {final}, {sink.faults} faults")
    return {"telemetry_rows_per_s": rate, "telemetry_max_queue_depth": depth}


if __name__ == "__main__":
    asyncio.run(run())
