"""A small simulated fleet living on one cloud, and an HTTP client that trusts its endpoints."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from gpuheal_sim.simulator import FleetConfig, SimulatedCluster


@asynccontextmanager
async def cloud_fleet(
    cloud: str, state_dir: Path, *, nodes: int = 2, reboot_seconds: float = 0.2, terminate_seconds: float = 1.0
) -> AsyncIterator[SimulatedCluster]:
    """`nodes` nodes carrying `cloud`'s machine identities, no workloads, quick reboots."""
    config = FleetConfig(
        nodes=nodes,
        cloud=cloud,
        workloads=False,
        reboot_seconds=reboot_seconds,
        terminate_seconds=terminate_seconds,
    )
    async with SimulatedCluster(config, state_dir=state_dir) as cluster:
        yield cluster


def trusting_session(cluster: SimulatedCluster) -> aiohttp.ClientSession:
    """A client for the simulated clouds' HTTPS listener that trusts the simulator's CA only."""
    context = ssl.create_default_context(cafile=str(cluster.ca_file))
    return aiohttp.ClientSession(base_url=cluster.cloud_url, connector=aiohttp.TCPConnector(ssl=context))
