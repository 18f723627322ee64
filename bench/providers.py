"""What a reboot request costs through each cloud's real SDK, against the simulator's endpoints.

For every provider a fleet of 5 nodes lives on that cloud; the provider (built as the worker builds
it, from the environment the simulator names) reboots each node once and describes each node once,
one call at a time. The baseline is the simulator's own provider: one plain HTTP POST per reboot to
the same simulation, so the ratio is what the SDK, its credential chain, TLS and the cloud's
long-running operation add. Azure, GCP and Nebius follow their operations to the end by polling (the
simulated operations finish at the second poll), so their reboot figures are mostly the providers'
poll intervals (Azure 0.2 s as the simulator sets it, GCP 1 s, Nebius 1 s); describe is one plain
call on every cloud.

Run it alone with `python -m bench.providers`.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from bench.measure import describe
from gpuheal.activities.providers import RebootProvider, RebootTarget
from gpuheal.activities.providers.configured import build_providers
from gpuheal_sim.demo.run import cloud_client_environment
from gpuheal_sim.provider import SimulatorProvider
from gpuheal_sim.simulator import FleetConfig, SimulatedCluster

NODES = 5
CLOUDS = ("aws", "azure", "gcp", "nebius", "redfish")


def targets(cluster: SimulatedCluster) -> list[RebootTarget]:
    found = []
    for name in cluster.node_names():
        node = cluster.get_object("nodes", name)
        assert node is not None
        found.append(
            RebootTarget(
                node=name,
                provider_id=node["spec"].get("providerID", ""),
                annotations=node["metadata"].get("annotations", {}),
            )
        )
    return found


async def timed(call: Callable[[RebootTarget], Awaitable[object]], nodes: list[RebootTarget]) -> list[float]:
    """Seconds each call took, one node at a time."""
    seconds = []
    for node in nodes:
        started = time.perf_counter()
        await call(node)
        seconds.append(time.perf_counter() - started)
    return seconds


async def measure(provider: RebootProvider, cluster: SimulatedCluster) -> tuple[list[float], list[float]]:
    nodes = targets(cluster)
    await provider.describe(nodes[0])  # the first call builds clients and fetches credentials
    reboots = await timed(provider.reboot, nodes)
    described = await timed(provider.describe, nodes)
    assert all(cluster.reboot_requests(t.node) == 1 for t in nodes), "every node rebooted exactly once"
    return reboots, described


async def run() -> None:
    print(f"\n## Repair providers: one reboot and one describe per node, {NODES} nodes, one call at a time")
    with tempfile.TemporaryDirectory() as state:
        config = FleetConfig(nodes=NODES, workloads=False, reboot_seconds=0.5)
        async with (
            SimulatedCluster(config, state_dir=Path(state) / "sim") as cluster,
            aiohttp.ClientSession() as session,
        ):
            baseline, _ = await measure(SimulatorProvider(cluster.control_url, session), cluster)
        base = statistics.median(baseline)
        print(f"  simulator (plain HTTP, baseline)  reboot {describe(baseline)}")
        for cloud in CLOUDS:
            config = FleetConfig(nodes=NODES, cloud=cloud, workloads=False, reboot_seconds=0.5)
            async with (
                SimulatedCluster(config, state_dir=Path(state) / cloud) as cluster,
                cloud_client_environment(cluster),
            ):
                [provider] = build_providers([cloud], os.environ)
                reboots, described = await measure(provider, cluster)
            print(
                f"  {cloud:<8} reboot {describe(reboots)} ({statistics.median(reboots) / base:.0f}× the baseline's p50)"
                f"; describe {describe(described)}"
            )


if __name__ == "__main__":
    asyncio.run(run())
