"""`gpuheal replay` throughput: a fleet's kernel logs through the agent's monitor and the fleet's
rules, beside the parser alone on the same lines.

Builds one mixed log per node (the kmsg benchmark's mix: mostly kernel noise, a few percent NVIDIA
lines), each as one node's /dev/kmsg records are (stamps counting from the boot, a millisecond
apart: a whole log is about ten minutes of one boot), then times the parser over all of them and a whole replay of them. The
ratio is what replaying costs over parsing (flood control, fault handling, the fleet's decisions):
it tells how long a month of a fleet's logs takes to replay.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from bench.kmsg import build_log, time_parse
from gpuheal.domain.policy_document import PolicyDocument
from gpuheal.replay import replay_logs

# A /dev/kmsg record: priority, sequence number, microseconds since the boot.
_KMSG_RECORD = "{pri},{n},{usec},-;{text}"


async def run(nodes: int = 8, lines_per_node: int = 50_000) -> dict[str, float]:
    """Build the logs, time the parser and the replay over them (best of two each), print."""
    with tempfile.TemporaryDirectory() as scratch:
        logs = [Path(scratch) / f"gpu-node-{n:03}.log" for n in range(nodes)]
        for n, log in enumerate(logs):
            build_log(log, lines_per_node, seed=n, wrappings=[_KMSG_RECORD])
        parse = min(sum(time_parse(log)[0] for log in logs) for _ in range(2))
        replays = []
        for _ in range(2):
            start = time.perf_counter()
            replayed = await replay_logs(
                logs, PolicyDocument(), gpu_nodes=nodes, repair_time=timedelta(minutes=15), year=2026
            )
            replays.append(time.perf_counter() - start)
        replay = min(replays)
    lines = nodes * lines_per_node
    remediations = sum(len(node.runs) for node in replayed)
    figures = {
        "lines": float(lines),
        "parse_lines_per_s": lines / parse,
        "replay_lines_per_s": lines / replay,
        "replay_over_parse": replay / parse,
        "remediations": float(remediations),
    }
    print(f"replay: {nodes} nodes, {lines:,} kernel log lines, {remediations} remediations")
    print(f"  parser alone  {figures['parse_lines_per_s']:>13,.0f} lines/s")
    print(
        f"  replay        {figures['replay_lines_per_s']:>13,.0f} lines/s   "
        f"({figures['replay_over_parse']:.2f}x the parser's time)"
    )
    return figures


if __name__ == "__main__":
    options = argparse.ArgumentParser(prog="python -m bench.replay")
    options.add_argument("--nodes", type=int, default=8)
    options.add_argument("--lines", type=int, default=50_000, help="lines per node")
    arguments = options.parse_args()
    asyncio.run(run(arguments.nodes, arguments.lines))
