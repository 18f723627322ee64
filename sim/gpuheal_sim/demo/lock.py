"""One demo per state directory: an flock on `demo.lock` there, holding the pid of the demo that runs.

A second demo on the same directory would start its own Temporal on the same database and
overwrite the first one's kubeconfigs and credentials; it is refused instead, naming the pid. The
kernel releases the lock when its holder exits, however it exits, so a crashed demo leaves nothing
to clean up (the file stays, unlocked, and the next demo takes it).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = "demo.lock"


class DemoAlreadyRunning(RuntimeError):
    """Another demo holds the state directory."""


@contextlib.contextmanager
def state_directory_lock(state_dir: Path) -> Iterator[None]:
    """Hold the state directory for this process; `DemoAlreadyRunning` when another one holds it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / LOCK_FILE
    # Not O_TRUNC: until the lock is ours, the file holds the running demo's pid.
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 32).decode(errors="replace").strip() or "unknown"
            raise DemoAlreadyRunning(
                f"a demo (pid {holder}) is already running with state directory {state_dir}; "
                "stop it, or give this one another --state-dir"
            ) from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(descriptor)  # releases the lock
