"""Writing a small file so that a crash leaves the old content or the new, never half of either."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_durably(path: Path, data: bytes, *, directory_sync: bool = True) -> None:
    """Write `data` to a temporary file, flush it to disk, rename it over `path` and flush the rename.

    A write that fails (a full disk, an I/O error) raises its `OSError` and leaves no temporary file
    behind: half a write would hold the space a retry needs. Without `directory_sync` the rename is
    not flushed: the caller flushes the directory once (`sync_directory`) for several writes, before
    it counts on any of them.
    """
    temporary = path.with_name(path.name + ".tmp")
    try:
        with temporary.open("wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        temporary.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise
    if directory_sync:
        sync_directory(path.parent)


def sync_directory(path: Path) -> None:
    """Flush the directory's entries: the renames into it reach the disk too, or a crash could
    forget what was acknowledged."""
    directory = os.open(path, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
