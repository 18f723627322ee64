"""`parse_host_port`, the one `HOST:PORT` parser behind `--address` and the agent's `--health-address`."""

from __future__ import annotations

import pytest

from gpuheal.address import parse_host_port


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("temporal.example:7233", ("temporal.example", 7233)),
        ("temporal_frontend:7233", ("temporal_frontend", 7233)),
        (" 10.0.0.5:7233 ", ("10.0.0.5", 7233)),
        ("[fe80::1]:7233", ("fe80::1", 7233)),
    ],
)
def test_a_host_and_port_are_split(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("7233", r"^'7233' is not HOST:PORT: it names no host$"),
        (":7233", r"^':7233' is not HOST:PORT: it names no host$"),
        ("temporal.example:0", r"is not HOST:PORT with a port from 1 to 65535$"),
        ("::1:7233", r"an IPv6 address goes in brackets, as in \[::1\]:9400$"),
        ("[::zz]:7233", r"^'\[::zz\]' in '\[::zz\]:7233' is not an IPv6 address$"),
        ("-bad-.example:7233", r"^'-bad-.example' in '-bad-.example:7233' is not a host name or IP address$"),
    ],
)
def test_without_defaults_a_host_and_a_port_from_1_are_required(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_host_port(text)


def test_a_default_host_and_lowest_port_let_the_host_go_unsaid_and_port_0_through() -> None:
    assert parse_host_port("0", default_host="127.0.0.1", lowest_port=0) == ("127.0.0.1", 0)


def test_a_default_host_does_not_excuse_a_malformed_one() -> None:
    with pytest.raises(ValueError, match=r"^'temporal\.\.example' in .* is not a host name or IP address$"):
        parse_host_port("temporal..example:9400", default_host="127.0.0.1", lowest_port=0)
