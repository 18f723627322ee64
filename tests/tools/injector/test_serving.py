"""Where the injector's servers listen: loopback by default, a bracketed IPv6 address, or every
address of the pod (`*:PORT`, what the chart gives them). The agent serves here; the API, on the
same serving code, is served on IPv6 in test_api."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gpuheal.address import EVERY_ADDRESS, parse_listen_address
from gpuheal.tools.injector.agent import InjectorAgentSettings, running_agent
from gpuheal.tools.injector.auth import Token
from gpuheal.tools.injector.serving import injector_application, serving
from gpuheal_sim.demo.devserver import free_port
from tests.ipv6 import NEEDS_IPV6
from tests.tools.injector.conftest import TOKEN


def agent_settings(address: str, tmp_path: Path) -> InjectorAgentSettings:
    host, port = parse_listen_address(address)
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
    assert parse_listen_address(text) == address


def test_every_address_needs_a_port_of_its_own() -> None:
    # Port 0 on every address would bind a different free port in each address family.
    with pytest.raises(ValueError, match=r"\*:0: serving on every address needs a port"):
        parse_listen_address("*:0")


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


async def test_a_handler_that_fails_is_a_json_500_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("the handler broke")

    app = injector_application(Token(TOKEN))
    app.router.add_get("/broken", broken)
    async with serving(app, "127.0.0.1", 0, "a broken server") as port, aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with session.get(f"http://127.0.0.1:{port}/broken", headers=headers) as response:
            assert response.status == 500
            assert await response.json() == {"error": "internal error (RuntimeError); the server's log has more"}
    assert "the handler broke" in caplog.text
