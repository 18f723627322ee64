"""The simulator's provider against the simulator's control API, and against a stand-in for its errors."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gpuheal.activities.providers import MachineReplacer, ProviderError, RebootTarget
from gpuheal_sim.provider import SimulatorProvider
from gpuheal_sim.simulator import FleetConfig, SimulatedCluster

NODE = "gpu-node-000"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[SimulatedCluster]:
    # The control API holds its answer to a recorded reboot for half a second, as a slow cloud does.
    config = FleetConfig(nodes=1, workloads=False, reboot_seconds=0.2, reboot_reply_seconds=0.5)
    async with SimulatedCluster(config, state_dir=tmp_path / "sim") as running:
        yield running


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def _raises(call: Awaitable[object]) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await call
    return caught.value


async def test_reboot_is_recorded_and_reported(cluster: SimulatedCluster, session: aiohttp.ClientSession) -> None:
    provider = SimulatorProvider(cluster.control_url, session)
    since = datetime.now(UTC) - timedelta(seconds=1)
    assert (await provider.reboot(RebootTarget(NODE, f"sim://{NODE}"))).startswith(
        f"simulator accepted the reboot of {NODE} at "
    )
    assert cluster.reboot_requests(NODE) == 1
    assert await provider.requested_since(RebootTarget(NODE, f"sim://{NODE}"), since) is True


async def test_replace_terminates_the_machine_and_the_node_goes(
    cluster: SimulatedCluster, session: aiohttp.ClientSession
) -> None:
    provider = SimulatorProvider(cluster.control_url, session)
    target = RebootTarget(NODE, f"sim://{NODE}")
    assert isinstance(provider, MachineReplacer)

    assert (await provider.replace(target)).startswith(f"simulator terminated the machine of {NODE} at ")
    assert (await provider.replace(target)).endswith("(already terminated)")
    for _ in range(200):
        if cluster.get_object("nodes", NODE) is None:
            break
        await asyncio.sleep(0.05)
    assert cluster.get_object("nodes", NODE) is None, "the simulator deletes the node of a terminated machine"
    error = await _raises(provider.replace(target))
    assert not error.retryable and str(error) == f"the simulator has no node {NODE}"


async def test_an_unknown_node_is_refused(cluster: SimulatedCluster, session: aiohttp.ClientSession) -> None:
    provider = SimulatorProvider(cluster.control_url, session)
    error = await _raises(provider.reboot(RebootTarget("gpu-node-404", "sim://gpu-node-404")))
    assert not error.retryable and error.refused  # the simulator answered that it did nothing
    # Reads ask for nothing: their errors are not marked.
    assert not (await _raises(provider.describe(RebootTarget("gpu-node-404", "sim://gpu-node-404")))).refused
    assert cluster.reboot_requests(NODE) == 0


async def test_a_reboot_that_cannot_connect_is_refused(session: aiohttp.ClientSession) -> None:
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = await _raises(SimulatorProvider(f"http://127.0.0.1:{port}", session).reboot(RebootTarget(NODE, "")))
    assert error.retryable and error.refused
    assert "simulator unreachable" in str(error)


async def test_a_reboot_whose_answer_times_out_is_not_refused(
    cluster: SimulatedCluster, session: aiohttp.ClientSession
) -> None:
    # The simulator recorded the reboot and answers late: asking again would reboot the node twice.
    provider = SimulatorProvider(cluster.control_url, session, timeout=0.2)
    error = await _raises(provider.reboot(RebootTarget(NODE, f"sim://{NODE}")))
    assert error.retryable and not error.refused
    assert "did not answer POST" in str(error)
    assert cluster.reboot_requests(NODE) == 1


@pytest.fixture
async def stand_in() -> AsyncIterator[tuple[str, list[str]]]:
    """A control API whose reboot answers with the status the node is named for, or drops the connection."""
    seen: list[str] = []

    async def reboot(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        seen.append(name)
        if name == "dropped":
            assert request.transport is not None
            request.transport.abort()
        return web.json_response({"message": name}, status=int(name) if name.isdigit() else 500)

    app = web.Application()
    app.router.add_post("/sim/v1/nodes/{name}/reboot", reboot)
    async with TestServer(app, host="127.0.0.1") as server:
        yield str(server.make_url("")), seen


@pytest.mark.parametrize(
    ("node", "retryable", "refused"),
    [
        ("503", True, True),  # throttled: answered, nothing done
        ("429", False, True),
        ("403", False, True),
        # A gateway's timeout, or a connection lost after the request went out: it may have arrived.
        ("504", True, False),
        ("dropped", True, False),
    ],
)
async def test_errors_are_refused_only_when_the_simulator_answered_them(
    stand_in: tuple[str, list[str]], session: aiohttp.ClientSession, node: str, retryable: bool, refused: bool
) -> None:
    url, seen = stand_in
    error = await _raises(SimulatorProvider(url, session).reboot(RebootTarget(node, f"sim://{node}")))
    assert error.retryable is retryable and error.refused is refused
    assert seen == [node]
