"""Writing one record into the kernel log through `/dev/kmsg`.

The kernel makes one log record of each write(2) to /dev/kmsg, so a record goes out in a single
write of the whole line; a short write or any error is reported, never retried piecemeal. The file
is opened for each record (the injector writes rarely) without blocking: a path that cannot take
the record now (a FIFO with no reader, in the simulator) fails at once instead of hanging a request.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

DEFAULT_KMSG = Path("/dev/kmsg")

# The longest record /dev/kmsg takes from user space (the kernel's LOG_LINE_MAX, 1024 less its prefix).
MAX_RECORD = 976


class KmsgWriteError(OSError):
    """The record could not be written whole; the message says why."""


def write_record(path: Path, line: str) -> None:
    """Write `line` (priority prefix included) as one record, with one write(2). Blocking."""
    data = (line + "\n").encode("utf-8")
    if len(data) > MAX_RECORD or "\n" in line:
        raise KmsgWriteError(f"a kernel log record is one line of at most {MAX_RECORD} bytes")
    try:
        # O_APPEND changes nothing for /dev/kmsg; a regular file standing in for it keeps every record.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as error:
        raise KmsgWriteError(f"cannot open {path}: {os.strerror(error.errno or 0)}") from error
    try:
        written = os.write(fd, data)
    except OSError as error:
        raise KmsgWriteError(f"cannot write to {path}: {os.strerror(error.errno or 0)}") from error
    finally:
        os.close(fd)
    if written != len(data):
        raise KmsgWriteError(f"{path} took {written} of the record's {len(data)} bytes")


async def write_record_async(path: Path, line: str) -> None:
    """`write_record` off the event loop (opening a device or FIFO may take a moment)."""
    await asyncio.to_thread(write_record, path, line)
