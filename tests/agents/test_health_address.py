"""The health endpoint's address as a person types it (`gpuheal.address.parse_listen_address`), and
where the endpoint then listens: `*:PORT` is every address of the pod, IPv4 and IPv6 alike, so the
kubelet's probe and Prometheus reach it on single- and dual-stack clusters."""

from __future__ import annotations

import aiohttp
import pytest
from prometheus_client.registry import CollectorRegistry

from gpuheal.address import EVERY_ADDRESS, parse_listen_address
from gpuheal.agents.health import HealthServer
from gpuheal_sim.demo.devserver import free_port
from tests.ipv6 import NEEDS_IPV6


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9400", ("127.0.0.1", 9400)),
        (":9400", ("127.0.0.1", 9400)),
        ("0.0.0.0:9400", ("0.0.0.0", 9400)),
        ("[::1]:9400", ("::1", 9400)),
        ("[::]:0", ("::", 0)),
        ("*:9400", (EVERY_ADDRESS, 9400)),
    ],
)
def test_addresses_in_every_documented_form(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen_address(text) == expected


@pytest.mark.parametrize("text", ["::1", "::1:9400", "fe80::1:9400", "[::1"])
def test_an_ipv6_address_without_brackets_is_refused_saying_how(text: str) -> None:
    with pytest.raises(ValueError, match=r"an IPv6 address goes in brackets, as in \[::1\]:9400$"):
        parse_listen_address(text)


@NEEDS_IPV6
async def test_on_every_address_the_health_endpoint_answers_over_ipv4_and_ipv6() -> None:
    port = free_port()
    server = HealthServer(*parse_listen_address(f"*:{port}"), CollectorRegistry(), lambda: [])
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            for url in (f"http://127.0.0.1:{port}/readyz", f"http://[::1]:{port}/readyz"):
                async with session.get(url) as response:
                    assert response.status == 200, url
    finally:
        await server.stop()
