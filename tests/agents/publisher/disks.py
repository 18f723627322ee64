"""Disks that refuse writes, standing in front of the spool's real write (`write_durably`).

Where a real small filesystem can be mounted (a tmpfs, as root) the tests use it too; these stand-ins
let the same behaviour be tested anywhere, and an I/O error be tested at all.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

from gpuheal.agents.durable_file import write_durably


class FullDisk:
    """A filesystem of `capacity` bytes holding everything under `root`, as a tmpfs does: each file
    takes whole 4 KiB blocks, and a write that does not fit fails with ENOSPC."""

    BLOCK = 4096

    def __init__(self, root: Path, capacity: int) -> None:
        self.root = root
        self.capacity = capacity

    def used(self) -> int:
        return sum(
            -(-path.stat().st_size // self.BLOCK) * self.BLOCK for path in self.root.rglob("*") if path.is_file()
        )

    def __call__(self, path: Path, data: bytes, *, directory_sync: bool = True) -> None:
        if self.used() + -(-len(data) // self.BLOCK) * self.BLOCK > self.capacity:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        write_durably(path, data, directory_sync=directory_sync)


class BrokenDisk:
    """A disk whose every write fails with `code` (EIO: a dying disk; EROFS: remounted read-only)."""

    def __init__(self, code: int) -> None:
        self.code = code

    def __call__(self, path: Path, data: bytes, *, directory_sync: bool = True) -> None:
        raise OSError(self.code, os.strerror(self.code), str(path))


class LostRename:
    """A disk whose writes land but whose directory flush fails (EIO), as `write_durably` fails after
    its rename: the entry's file is there, and its writer was told the write failed."""

    def __call__(self, path: Path, data: bytes, *, directory_sync: bool = True) -> None:
        write_durably(path, data, directory_sync=directory_sync)
        raise OSError(errno.EIO, os.strerror(errno.EIO), str(path.parent))


class HealingDisk:
    """A disk that fails every write with EIO until `healed`; `attempted` is set at each write tried."""

    def __init__(self) -> None:
        self.healed = False
        self.attempted = threading.Event()

    def __call__(self, path: Path, data: bytes, *, directory_sync: bool = True) -> None:
        self.attempted.set()
        if not self.healed:
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))
        write_durably(path, data, directory_sync=directory_sync)
