"""The demo's dev server comes up when a port it found free is taken before it binds it, as happens
when two demos (or two test processes) start at once and both find 7233 free."""

from __future__ import annotations

import socket

import pytest
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

from gpuheal_sim.demo import devserver


async def test_a_port_taken_between_the_check_and_the_bind_costs_a_second_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    picked: list[int] = []
    real_free_port = devserver.free_port

    def found_free_then_taken(wanted: int | None = None) -> int:
        # The first check finds the port free, as the other process had not bound it yet.
        chosen = port if not picked else real_free_port(wanted)
        picked.append(chosen)
        return chosen

    monkeypatch.setattr(devserver, "free_port", found_free_then_taken)
    try:
        server = await devserver.start_dev_server()
    finally:
        taken.close()
    try:
        assert picked[0] == port
        assert server.address != f"127.0.0.1:{port}", "started again on a port picked afresh"
        await server.client.workflow_service.get_system_info(GetSystemInfoRequest())  # it answers
    finally:
        await server.shutdown()
