"""Writing a small file so that a crash leaves the old content or the new, never half of either."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_durably(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file, flush it to disk, rename it over `path` and flush the rename.

    A write that fails (a full disk, an I/O error) raises its `OSError` and leaves no temporary file
    behind: half a write would hold the space a retry needs.
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
    # The rename itself must reach the disk too, or a crash could forget what was acknowledged.
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
