"""`HOST:PORT` as a person types it, parsed once for every gpuheal flag that takes one.

The host is a DNS name, an IPv4 address or a bracketed IPv6 address; an unbracketed IPv6 address is
refused with a hint, since `::1:9400` cannot be split unambiguously. Callers choose what an empty host
means (an error, or a default such as loopback) and whether port 0 (any free port) is allowed.

A server's listen address (`parse_listen_address`) is loopback unless told otherwise, and `*:PORT`
serves on every address the machine (in a pod: the pod) has, IPv4 and IPv6 alike, each family the
kernel offers; the chart uses it. A single `[::]` would not do: asyncio makes an IPv6 socket
IPv6-only, so an IPv4-only pod would be left unserved.
"""

from __future__ import annotations

import ipaddress
import re

# A DNS name: dot-separated labels of letters, digits and inner hyphens (RFC 1123), and underscores,
# which container networks use in service names and the Temporal SDK's URL parser accepts.
_HOSTNAME = re.compile(r"(?!-)[\w-]{1,63}(?<!-)(\.(?!-)[\w-]{1,63}(?<!-))*\.?", re.ASCII)


def parse_host_port(text: str, *, default_host: str | None = None, lowest_port: int = 1) -> tuple[str, int]:
    """`(host, port)` from `HOST:PORT` or `[IPV6]:PORT`; a ValueError names what is wrong.

    With `default_host`, the host may be left out (`:PORT` or a bare `PORT`) and means that host; the
    IPv6 host comes back without its brackets. The port runs from `lowest_port` to 65535.
    """
    text = text.strip()
    host, _, port = text.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    if ":" in host and not bracketed:  # "::1" would otherwise be host ":" and port 1
        raise ValueError(f"{text!r} is not HOST:PORT: an IPv6 address goes in brackets, as in [::1]:9400")
    if not port.isdigit() or not lowest_port <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT with a port from {lowest_port} to 65535")
    if bracketed:
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"'[{host}]' in {text!r} is not an IPv6 address") from None
    elif not host:
        if default_host is None:
            raise ValueError(f"{text!r} is not HOST:PORT: it names no host")
        host = default_host
    elif len(host) > 253 or not _HOSTNAME.fullmatch(host):
        raise ValueError(f"{host!r} in {text!r} is not a host name or IP address")
    return host, int(port)


LOOPBACK = "127.0.0.1"
EVERY_ADDRESS = "*"


def parse_listen_address(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `[IPV6]:PORT`, `*:PORT` (every address), `:PORT` or `PORT` (loopback); port 0 is any
    free one. A ValueError names what is wrong."""
    every = text.strip().startswith(f"{EVERY_ADDRESS}:")
    host, port = parse_host_port(text.strip().removeprefix(EVERY_ADDRESS), default_host=LOOPBACK, lowest_port=0)
    if every and port == 0:
        # asyncio would bind a free port per address family, a different one in each.
        raise ValueError(f"{text.strip()}: serving on every address needs a port (any free one differs per family)")
    return (EVERY_ADDRESS if every else host), port


def bind_host(host: str) -> str | None:
    """The host to hand asyncio's `create_server` (or aiohttp's `TCPSite`): None, every address of each
    family, for `EVERY_ADDRESS`."""
    return None if host == EVERY_ADDRESS else host
