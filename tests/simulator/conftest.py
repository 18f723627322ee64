"""Fixtures for the simulator suite: small, fast fleets reached through the official clients."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import kubernetes.client
import kubernetes.config
import pytest
from kubernetes.aio import client as aio_client
from kubernetes.aio import config as aio_config
from kubernetes.aio import watch as aio_watch

from gpuheal_sim.simulator import FleetConfig, SimulatedCluster

T = TypeVar("T")

# Short delays keep the suite quick; long enough to observe the in-between states.
FAST = {"reboot_seconds": 0.3, "pod_start_seconds": 0.1, "eviction_retry_after_seconds": 1}


def trusting(cluster: SimulatedCluster) -> ssl.SSLContext:
    """A client TLS context that trusts the simulator's CA (what the kubeconfig carries)."""
    return ssl.create_default_context(cafile=str(cluster.ca_file))


def fast_config(**overrides: object) -> FleetConfig:
    return FleetConfig.model_validate({**FAST, **overrides})


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[SimulatedCluster]:
    """The default demo fleet (4 nodes x 8 GPUs with its workloads), on the test's event loop."""
    async with SimulatedCluster(fast_config(), state_dir=tmp_path) as running:
        yield running


async def aio_api(cluster: SimulatedCluster) -> aio_client.ApiClient:
    configuration = aio_client.Configuration()
    await aio_config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(cluster.kubeconfig), client_configuration=configuration, persist_config=False
    )
    return aio_client.ApiClient(configuration)


@pytest.fixture
async def api(cluster: SimulatedCluster) -> AsyncIterator[aio_client.ApiClient]:
    """An asyncio API client for ``cluster``, configured from the kubeconfig it wrote."""
    client = await aio_api(cluster)
    async with client:
        yield client


@pytest.fixture
def core(api: aio_client.ApiClient) -> aio_client.CoreV1Api:
    return aio_client.CoreV1Api(api)


def new_watch() -> Any:
    """An asyncio ``Watch`` (the client's watch module is untyped)."""
    return aio_watch.Watch()  # type: ignore[no-untyped-call]


def sync_api(cluster: SimulatedCluster) -> kubernetes.client.ApiClient:
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(cluster.kubeconfig), client_configuration=configuration
    )
    return kubernetes.client.ApiClient(configuration)


@pytest.fixture
def thread_cluster(tmp_path: Path) -> Iterator[SimulatedCluster]:
    """The default fleet running on its own loop in a background thread, for synchronous clients."""
    with SimulatedCluster.running_in_thread(fast_config(), tmp_path) as running:
        yield running


async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float = 10.0, interval: float = 0.05) -> T:
    """Poll ``check`` until it returns something other than None/False; fail after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result is not None and result is not False:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def eventually_sync(check: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
