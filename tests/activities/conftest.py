"""The Kubernetes client of the activity tests: the official asyncio client, over HTTPS, to each module's cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from kubernetes.aio import client

from gpuheal.kubeclient import connect
from gpuheal_sim.simulator import SimulatedCluster


@pytest.fixture
async def api(cluster: SimulatedCluster) -> AsyncIterator[client.ApiClient]:
    async with await connect(cluster.kubeconfig) as api_client:
        yield api_client
