"""Where the injector's servers listen: loopback by default, a bracketed IPv6 address, or every
address of the pod (`*:PORT`, what the chart gives them). The agent serves here; the API, on the
same serving code, is served on IPv6 in test_api."""

from __future__ import annotations

import socket
from pathlib import Path

import aiohttp
import pytest

from gpuheal.tools.injector.agent import InjectorAgentSettings, running_agent
from gpuheal.tools.injector.auth import Token
from gpuheal.tools.injector.serving import EVERY_ADDRESS, parse_listen
from gpuheal_sim.demo.devserver import free_port
from tests.tools.injector.conftest import TOKEN


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


NEEDS_IPV6 = pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")


def agent_settings(address: str, tmp_path: Path) -> InjectorAgentSettings:
    host, port = parse_listen(address)
    return InjectorAgentSettings(token=Token(TOKEN), host=host, port=port, kmsg=tmp_path / "kmsg", gpus_root=tmp_path)


async def answers(url: str) -> bool:
    async with aiohttp.ClientSession() as session, session.get(url + "/health") as response:
        return response.status == 200


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("8083", ("127.0.0.1", 8083)),
        ("[::1]:8083", ("::1", 8083)),
        ("[::]:0", ("::", 0)),
        ("*:8083", (EVERY_ADDRESS, 8083)),
        ("10.0.0.7:8083", ("10.0.0.7", 8083)),
    ],
)
def test_a_listen_address_is_parsed(text: str, address: tuple[str, int]) -> None:
    assert parse_listen(text) == address


@NEEDS_IPV6
async def test_the_agent_told_an_ipv6_address_serves_there(tmp_path: Path) -> None:
    async with running_agent(agent_settings("[::1]:0", tmp_path)) as (_, port):
        assert await answers(f"http://[::1]:{port}")


@NEEDS_IPV6
async def test_the_agent_on_every_address_serves_ipv4_and_ipv6(tmp_path: Path) -> None:
    async with running_agent(agent_settings(f"*:{free_port()}", tmp_path)) as (agent, port):
        assert agent.settings.host == EVERY_ADDRESS
        assert await answers(f"http://127.0.0.1:{port}")
        assert await answers(f"http://[::1]:{port}")
