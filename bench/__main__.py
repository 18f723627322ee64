"""`make bench`: run the benchmarks and print their figures beside the targets."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench import (
    agent,
    agent_memory,
    device_api,
    eventgen,
    fleet_cordon,
    history,
    intake,
    kmsg,
    kube_client,
    latency,
    plot,
    providers,
    replay,
    storm,
    telemetry,
)
from bench.measure import verdict
from gpuheal_sim.demo.devserver import DevServer, start_dev_server

# The bound on a whole `make bench`.
TARGET_TOTAL_S = 600.0


@contextmanager
def timed(name: str) -> Iterator[None]:
    """Say how long a benchmark took: where `make bench`'s minutes go."""
    started = time.perf_counter()
    yield
    print(f"[{name}: {time.perf_counter() - started:.0f} s]", flush=True)


async def _fleet_cordon(state: Path) -> fleet_cordon.FleetCordon:
    """On a dev server of its own: its load leaves remediations open, whose timers would go on
    firing on the shared server through the benchmarks after it."""
    own: DevServer = await start_dev_server()
    try:
        return await fleet_cordon.run(own, state)
    finally:
        await own.shutdown()


async def main(options: argparse.Namespace) -> None:
    began = time.perf_counter()
    server = await start_dev_server()  # in memory, shared by every benchmark and baseline of the run
    # Latencies (seconds) of the benchmarks that measure them, drawn together at the end.
    latencies: dict[str, list[float]] = {}
    try:
        with tempfile.TemporaryDirectory() as state:
            if options.only in (None, "latency"):
                with timed("latency"):
                    demo = await latency.run(server, Path(state), options.runs)
                    latencies["fault → cordon, demo fleet"] = demo.to_cordon
                    latencies["fault → back in service, demo fleet"] = demo.to_service
            if options.only in (None, "history"):
                with timed("history"):
                    await history.run(server, Path(state))
            if options.only in (None, "agent"):
                with timed("agent"):
                    await agent.run(server)
            if options.only in (None, "kmsg"):
                with timed("kmsg"):
                    kmsg.run()
            if options.only in (None, "replay"):
                with timed("replay"):
                    await replay.run()
            if options.only in (None, "intake"):
                with timed("intake"):
                    await intake.run()
            if options.only in (None, "eventgen"):
                with timed("eventgen"):
                    await eventgen.run()
            if options.only in (None, "telemetry"):
                with timed("telemetry"):
                    await telemetry.run()
            if options.only in (None, "device-api"):
                with timed("device-api"):
                    await device_api.run()
            if options.only in (None, "providers"):
                with timed("providers"):
                    await providers.run()
            if options.only in (None, "kube-client"):
                with timed("kube-client"):
                    await kube_client.run()
            if options.only in (None, "fleet-cordon"):
                with timed("fleet-cordon"):
                    fleet = await _fleet_cordon(Path(state))
                    latencies["fault → cordon, 2,000 idle nodes"] = fleet.idle
                    latencies["fault → cordon, 2,000 nodes, medium load"] = fleet.loaded
            if options.only in (None, "agent-memory"):
                with timed("agent-memory"):
                    await agent_memory.run(server, Path(state), options.soak_minutes)
            if options.only in (None, "storm"):
                with timed("storm"):
                    await storm.run(
                        server, Path(state), options.nodes, options.faulty, options.plots, options.storm_runs
                    )
        if latencies:
            path = options.plots / "latency.png"
            plot.latency_distributions(path, latencies, title="fault → cordon and → back in service")
            print(f"latency distributions drawn in {path}")
    finally:
        await server.shutdown()
    if options.only is None:
        total = time.perf_counter() - began
        verdict("make-bench", total <= TARGET_TOTAL_S, f"{total / 60:.1f} min", f"≤ {TARGET_TOTAL_S / 60:.0f} min")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument(
        "--only",
        choices=[
            "latency",
            "history",
            "agent",
            "kmsg",
            "replay",
            "intake",
            "eventgen",
            "telemetry",
            "device-api",
            "providers",
            "kube-client",
            "storm",
            "fleet-cordon",
            "agent-memory",
        ],
    )
    parser.add_argument("--runs", type=int, default=30, help="remediations in the latency benchmark")
    parser.add_argument("--nodes", type=int, default=1500, help="fleet size in the storm")
    parser.add_argument("--faulty", type=int, default=750, help="nodes that fault at once in the storm")
    parser.add_argument("--storm-runs", type=int, default=1, help="governed storms, each beside its baselines")
    parser.add_argument("--plots", type=Path, default=Path("docs/bench"), help="where the PNG plots go")
    parser.add_argument(
        "--soak-minutes", type=float, default=0.75, help="minutes of medium load on the agent in agent-memory"
    )
    asyncio.run(main(parser.parse_args()))
