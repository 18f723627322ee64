"""The health endpoint's address as a person types it: `HOST:PORT`, `[IPV6]:PORT`, `:PORT` or `PORT`."""

from __future__ import annotations

import pytest

from gpuheal.agents.health import parse_address


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9400", ("127.0.0.1", 9400)),
        (":9400", ("127.0.0.1", 9400)),
        ("0.0.0.0:9400", ("0.0.0.0", 9400)),
        ("[::1]:9400", ("::1", 9400)),
        ("[::]:0", ("::", 0)),
    ],
)
def test_addresses_in_every_documented_form(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["::1", "::1:9400", "fe80::1:9400", "[::1"])
def test_an_ipv6_address_without_brackets_is_refused_saying_how(text: str) -> None:
    with pytest.raises(ValueError, match=r"an IPv6 address goes in brackets, as in \[::1\]:9400$"):
        parse_address(text)
