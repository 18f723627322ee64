"""`NEEDS_IPV6`: skips a test of serving on IPv6 where the machine has no IPv6 loopback (`::1`)."""

from __future__ import annotations

import socket

import pytest


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


NEEDS_IPV6 = pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
