"""Where the injector's servers listen: loopback by default, a bracketed IPv6 address, or every
address of the pod (`*:PORT`, what the chart gives them)."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from aiohttp import web

from gpuheal.tools.injector.serving import EVERY_ADDRESS, parse_listen, serving
from gpuheal_sim.demo.devserver import free_port


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")


def application() -> web.Application:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/health", health)
    return app


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


@needs_ipv6
async def test_a_server_told_an_ipv6_address_serves_there() -> None:
    async with serving(application(), *parse_listen("[::1]:0"), "test server") as port:
        assert await answers(f"http://[::1]:{port}")


@needs_ipv6
async def test_a_server_on_every_address_serves_ipv4_and_ipv6() -> None:
    host, port = parse_listen(f"*:{free_port()}")
    async with serving(application(), host, port, "test server") as bound:
        assert bound == port
        assert await answers(f"http://127.0.0.1:{port}")
        assert await answers(f"http://[::1]:{port}")
