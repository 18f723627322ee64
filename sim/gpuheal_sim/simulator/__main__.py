"""Run a simulated fleet as a process (the `gpuheal-sim` console script, or `python -m gpuheal_sim.simulator`).

    gpuheal-sim --nodes 1500 --gpus-per-node 8 --reboot-seconds 0 --port 0 \\
        --kubeconfig PATH

prints one JSON line ``{"url": ..., "kubeconfig": ..., "nodes": ..., "buildSeconds": ...}`` on
stdout once it serves, and runs until SIGTERM or SIGINT, then shuts down cleanly (exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

from pydantic import ValidationError

from .fleet import FleetConfig
from .server import SimulatedCluster


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gpuheal-sim", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, help="a JSON file with FleetConfig fields (flags override it)")
    parser.add_argument("--nodes", type=int)
    parser.add_argument("--gpus-per-node", type=int)
    parser.add_argument("--reboot-seconds", type=float)
    parser.add_argument("--pod-start-seconds", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--nodes-per-rack", type=int, help="label nodes by rack, this many to a rack")
    parser.add_argument("--no-workloads", action="store_true", help="nodes only, no Deployments/Jobs/DaemonSets")
    parser.add_argument("--fault-survives-reboot", action="store_true")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--kubeconfig", type=Path, help="where to write the kubeconfig")
    parser.add_argument("--state-dir", type=Path, help="directory for the kubeconfig when --kubeconfig is not given")
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> FleetConfig:
    data: dict[str, object] = {}
    if args.config is not None:
        data.update(json.loads(args.config.read_text()))
    overrides = {
        "nodes": args.nodes,
        "gpus_per_node": args.gpus_per_node,
        "reboot_seconds": args.reboot_seconds,
        "pod_start_seconds": args.pod_start_seconds,
        "seed": args.seed,
        "nodes_per_rack": args.nodes_per_rack,
    }
    data.update({k: v for k, v in overrides.items() if v is not None})
    if args.no_workloads:
        data["workloads"] = False
    if args.fault_survives_reboot:
        data["fault_survives_reboot"] = True
    return FleetConfig.model_validate(data)


async def serve(args: argparse.Namespace, config: FleetConfig) -> None:
    cluster = SimulatedCluster(config, args.state_dir, host=args.host, port=args.port, kubeconfig_path=args.kubeconfig)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await cluster.start()
    try:
        line = {
            "url": cluster.url,
            "controlUrl": cluster.control_url,
            "caFile": str(cluster.ca_file),
            "kubeconfig": str(cluster.kubeconfig),
            "nodes": config.nodes,
            "buildSeconds": round(cluster.build_seconds, 3),
        }
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
        await stop.wait()
    finally:
        await cluster.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = build_config(args)
    except (ValidationError, ValueError, OSError) as exc:
        print(f"invalid configuration: {exc}", file=sys.stderr)
        return 2
    asyncio.run(serve(args, config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
