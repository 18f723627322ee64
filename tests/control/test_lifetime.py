"""The process's Temporal runtime is released before the interpreter exits, however the command ends.

The SDK's Rust threads go with the last reference to their runtime; when that happened during
interpreter shutdown, `gpuheal list` aborted about one run in 14. Each command runs here in a
thread of its own, as the CLI runs it in the main thread: `asyncio.run` under `ProcessRuntime.run`.
"""

from __future__ import annotations

import asyncio

import pytest

from gpuheal.control.connection import connect_temporal
from gpuheal.control.lifetime import ProcessRuntime, current_runtime
from gpuheal.control.remediations import InvalidQuery, list_remediations
from gpuheal_sim.demo.devserver import DevServer


async def test_the_runtime_is_released_once_the_command_returns(dev_server: DevServer) -> None:
    async def listing() -> int:
        client = await connect_temporal(dev_server.address)
        assert client.service_client.config.runtime is current_runtime() is not None
        return len(await list_remediations(client))

    process = ProcessRuntime()
    await asyncio.to_thread(process.run, listing)

    assert process.released
    assert current_runtime() is None


async def test_the_runtime_is_released_even_while_the_failure_is_still_held(dev_server: DevServer) -> None:
    async def bad_query() -> None:
        client = await connect_temporal(dev_server.address)
        await list_remediations(client, "GpuhealPhase ====")

    process = ProcessRuntime()
    with pytest.raises(InvalidQuery) as raised:
        await asyncio.to_thread(process.run, bad_query)

    # The traceback (held by `raised`) ran through the frames that held the client.
    assert raised.value.__traceback__ is not None
    assert process.released
