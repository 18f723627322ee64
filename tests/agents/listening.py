"""The TCP sockets this process listens on, read from /proc, to assert where a server bound."""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

import pytest

PROC_TCP = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

needs_proc = pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs Linux /proc")


def decode_address(text: str) -> Address:
    """An address as /proc/net/tcp{,6} writes it (32-bit words in host order).

    An IPv4-mapped IPv6 address (gRPC listens dual-stack: ::ffff:127.0.0.1) comes back as IPv4; any
    other IPv6 address (`::` for a wildcard bind) stays IPv6, so it can never equal 127.0.0.1.
    """
    raw = b"".join(int(text[i : i + 8], 16).to_bytes(4, sys.byteorder) for i in range(0, len(text), 8))
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw)
    address = ipaddress.IPv6Address(raw)
    return address.ipv4_mapped or address


def listening_tcp() -> set[tuple[Address, int]]:
    """(address, port) of the TCP sockets this process listens on."""
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found: set[tuple[Address, int]] = set()
    for table in PROC_TCP:
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                address, port = local.split(":")
                found.add((decode_address(address), int(port, 16)))
    return found
