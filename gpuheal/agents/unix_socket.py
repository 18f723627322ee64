"""Preparing an agent service's unix socket path: parent directory, a stale socket left by a crash, permissions."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_SOCKET_PATH = 107
SOCKET_MODE = 0o660


class SocketInUse(FileExistsError):
    """Another live process is serving on the socket path."""


def prepare_socket_path(path: Path) -> None:
    """Create the parent directory and remove a stale socket; refuse a live one or a non-socket file.

    A socket file whose server died still exists but refuses connections; gRPC cannot bind over it.
    A socket that accepts a connection belongs to a running agent, and taking it over would leave
    that agent deaf, so that is an error instead.
    """
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise ValueError(f"socket path {path} is longer than {MAX_SOCKET_PATH} bytes")
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o750)  # a directory gpuheal creates is not world-readable
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"{path} exists and is not a socket")
    if _accepts_connections(path):
        raise SocketInUse(f"another process is serving on {path}")
    path.unlink()


def restrict_socket(path: Path) -> None:
    """Owner and group may connect (mode 0660): the API has no authentication of its own."""
    path.chmod(SOCKET_MODE)


@contextlib.contextmanager
def binding_privately() -> Iterator[None]:
    """While a socket is bound: files are created with at most mode 0660, never a moment looser.

    The umask is process-wide, so this is held only around the bind itself, at start-up.
    """
    previous = os.umask(0o117)
    try:
        yield
    finally:
        os.umask(previous)


def _accepts_connections(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        with contextlib.suppress(OSError):
            probe.connect(str(path))
            return True
    return False
