"""Sources of kernel log lines, as async iterators that never block the event loop.

- `follow_kmsg`: the kernel ring buffer through `/dev/kmsg` (one record per read, `PRI,SEQ,TS,FLAGS;text`
  and continuation lines starting with a space). By default it starts at the end of the ring (the
  records already there were written before this process looked); `from_start=True` replays the ring.
  A reader that falls behind gets EPIPE for records the ring overwrote; that is counted and reading
  goes on with the oldest record still there.
- `follow_file`: a plain log file with `tail -F` semantics: start at its end or its beginning, keep
  going when the file is truncated (read again from its start) or rotated (finish the old file, then
  read the new one from its start), wait for a file that does not exist yet.
- `follow_journal_export`: a file in journald's export format (`journalctl -o export`, text and binary
  fields) followed the same way, yielding each entry's MESSAGE; by default only kernel entries
  (`_TRANSPORT=kernel`, which includes records written to /dev/kmsg by the fault injector).

All blocking reads run on one worker thread per follower; the event loop only awaits them.
Bytes are decoded as UTF-8 with errors replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import select
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

KMSG = Path("/dev/kmsg")

# /dev/kmsg refuses reads into a buffer smaller than the record (EINVAL); records are at most ~8 KiB.
_KMSG_READ = 16384
# One worker hop returns at most this much, so the loop gets a turn during a backlog.
_BATCH_BYTES = 1 << 20
# A line longer than this is cut; kernel records are at most a few KiB.
_MAX_LINE = 1 << 20


class _Reader:
    """A blocking byte source for one follower; only ever called from its worker thread."""

    def read(self) -> bytes:
        raise NotImplementedError

    def idle(self, poll_interval: float) -> float:
        """How long to wait after a read that found nothing, before reading again."""
        return poll_interval

    def close(self) -> None:
        raise NotImplementedError


async def _chunks(reader: _Reader, poll_interval: float) -> AsyncGenerator[bytes, None]:
    """Bytes from a reader, read on a worker thread; sleeps `poll_interval` when there is nothing new."""
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpuheal-kmsg-follow")
    try:
        while True:
            data = await asyncio.wrap_future(worker.submit(reader.read))
            if data:
                yield data
            else:
                await asyncio.sleep(reader.idle(poll_interval))
    finally:
        # The single worker runs the close after any read still in flight, so a file descriptor is
        # never closed (and its number reused) under a running read.
        worker.submit(reader.close)
        worker.shutdown(wait=False)


async def _lines(chunks: AsyncGenerator[bytes, None]) -> AsyncGenerator[str, None]:
    """Split a byte stream into lines (without their newline); a partial last line waits for the rest."""
    partial = b""
    async with contextlib.aclosing(chunks):  # closing the lines closes the reader now, not at GC
        async for chunk in chunks:
            pieces = (partial + chunk).split(b"\n")
            partial = pieces.pop()
            if len(partial) > _MAX_LINE:
                pieces.append(partial)  # no newline in sight (binary junk): don't buffer without end
                partial = b""
            for piece in pieces:
                yield piece.decode("utf-8", errors="replace")


class _KmsgReader(_Reader):
    def __init__(self, path: Path, *, from_start: bool, wait: float) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self._wait_ms = max(0, int(wait * 1000))
        self._at_eof = False
        self.lost = 0
        if not from_start:
            # A pipe (tests) can't seek, and has no backlog to skip anyway.
            with contextlib.suppress(OSError):
                os.lseek(self._fd, 0, os.SEEK_END)
        self._poller = select.poll()
        self._poller.register(self._fd, select.POLLIN)

    def read(self) -> bytes:
        # Wait in the worker (not the loop) for a record, so new records arrive without polling delay.
        self._poller.poll(self._wait_ms)
        self._at_eof = False
        records: list[bytes] = []
        size = 0
        while size < _BATCH_BYTES:
            try:
                record = os.read(self._fd, _KMSG_READ)
            except BlockingIOError:
                break
            except BrokenPipeError:
                # The ring overwrote records we had not read yet; the next read starts at the oldest left.
                self.lost += 1
                log.warning("kernel ring buffer overran the reader; some records were lost")
                continue
            except OSError as error:
                if error.errno == errno.EINTR:
                    continue
                raise
            if not record:
                self._at_eof = True  # a closed pipe, never /dev/kmsg: poll would return at once forever
                break
            records.append(record if record.endswith(b"\n") else record + b"\n")
            size += len(record)
        return b"".join(records)

    def idle(self, poll_interval: float) -> float:
        # The read already waited in poll(); only an end of file calls for a pause of its own.
        return poll_interval if self._at_eof else 0.0

    def close(self) -> None:
        os.close(self._fd)


class _FileReader(_Reader):
    """`tail -F` over a path: reopens on rotation, rewinds on truncation, waits for a missing file."""

    def __init__(self, path: Path, *, from_start: bool) -> None:
        self._path = path
        self._file: BinaryIO | None = None
        self._identity: tuple[int, int] | None = None
        # Only the file present when following starts may be skipped to its end; later ones are new.
        self._skip_existing = not from_start

    def _open(self) -> None:
        try:
            handle = self._path.open("rb")
        except OSError:
            self._skip_existing = False
            return
        stat = os.fstat(handle.fileno())
        self._file, self._identity = handle, (stat.st_dev, stat.st_ino)
        if self._skip_existing:
            handle.seek(0, os.SEEK_END)
        self._skip_existing = False

    def read(self) -> bytes:
        if self._file is None:
            self._open()  # also the first open: on the worker, not on the event loop
            if self._file is None:
                return b""
        data = self._file.read(_BATCH_BYTES)
        if data:
            return data
        # At the end of what we have: has the file been truncated, or replaced by a new one?
        position = self._file.tell()
        if os.fstat(self._file.fileno()).st_size < position:
            self._file.seek(0)
            return self._file.read(_BATCH_BYTES)
        try:
            stat = self._path.stat()
        except OSError:
            return b""  # moved away and not recreated yet: keep the old one until a new one appears
        if (stat.st_dev, stat.st_ino) != self._identity:
            self._file.close()
            self._file = None
            self._open()
            return self._file.read(_BATCH_BYTES) if self._file else b""
        return b""

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


async def follow_kmsg(
    path: Path = KMSG, *, from_start: bool = False, poll_interval: float = 0.25
) -> AsyncGenerator[str, None]:
    """Lines of the kernel ring buffer as /dev/kmsg writes them (`3,812,6085126134786,-;NVRM: ...`)."""
    reader = _KmsgReader(path, from_start=from_start, wait=poll_interval)
    async with contextlib.aclosing(_lines(_chunks(reader, poll_interval))) as lines:
        async for line in lines:
            yield line


async def follow_file(
    path: Path, *, from_start: bool = False, poll_interval: float = 0.25
) -> AsyncGenerator[str, None]:
    """Lines appended to a log file (dmesg, journald or syslog text), following it like `tail -F`."""
    async with contextlib.aclosing(_lines(_chunks(_FileReader(path, from_start=from_start), poll_interval))) as lines:
        async for line in lines:
            yield line


# A binary field longer than this is taken as corruption rather than waited for.
_MAX_FIELD = 1 << 24


class JournalExportDecoder:
    """Incremental decoder of journald's export format: feed bytes, get finished entries.

    Text fields are `NAME=value\\n`; binary ones `NAME\\n`, a little-endian 64-bit length, the bytes and
    `\\n`; an empty line ends an entry.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._entry: dict[str, bytes] = {}

    def feed(self, data: bytes) -> list[dict[str, bytes]]:
        """The entries completed by these bytes, in order."""
        buffer = self._buffer
        buffer += data
        done: list[dict[str, bytes]] = []
        position = 0
        while True:
            newline = buffer.find(b"\n", position)
            if newline < 0:
                break
            if newline == position:
                if self._entry:
                    done.append(self._entry)
                    self._entry = {}
                position = newline + 1
                continue
            field = bytes(buffer[position:newline])
            name, equals, value = field.partition(b"=")
            if equals:
                self._entry[name.decode("utf-8", errors="replace")] = value
                position = newline + 1
                continue
            if len(buffer) < newline + 9:
                break  # the length of a binary field is still on its way
            size = int.from_bytes(buffer[newline + 1 : newline + 9], "little")
            if size > _MAX_FIELD:
                position = newline + 1  # not a length: skip the stray line and resynchronise
                continue
            end = newline + 9 + size
            if len(buffer) < end + 1:
                break
            self._entry[name.decode("utf-8", errors="replace")] = bytes(buffer[newline + 9 : end])
            position = end + 1
        del buffer[:position]
        return done


async def follow_journal_export(
    path: Path,
    *,
    from_start: bool = False,
    kernel_only: bool = True,
    poll_interval: float = 0.25,
    keep: Callable[[dict[str, bytes]], bool] | None = None,
) -> AsyncGenerator[str, None]:
    """The MESSAGE of each entry written to a journal export file, followed like `tail -F`.

    `kernel_only` keeps entries with `_TRANSPORT=kernel`; `keep`, when given, decides instead.
    Starting at the end of a file a writer is halfway through an entry can yield that entry's tail as
    a fragment; the decoder is back in step at the next blank line.
    """

    def kernel(entry: dict[str, bytes]) -> bool:
        return entry.get("_TRANSPORT") == b"kernel"

    wanted = keep or (kernel if kernel_only else None)
    decoder = JournalExportDecoder()
    async with contextlib.aclosing(_chunks(_FileReader(path, from_start=from_start), poll_interval)) as chunks:
        async for chunk in chunks:
            for entry in decoder.feed(chunk):
                if wanted is not None and not wanted(entry):
                    continue
                message = entry.get("MESSAGE")
                if message is None:
                    continue
                for line in message.decode("utf-8", errors="replace").splitlines():
                    yield line


class KernelLogFormat(StrEnum):
    """How the kernel log source is read."""

    KMSG = "kmsg"  # /dev/kmsg records
    FILE = "file"  # a text file appended to (dmesg or journald lines, or kmsg records)
    JOURNAL = "journal"  # a journal export file


def follow(path: Path, source: KernelLogFormat, *, from_start: bool = False) -> AsyncGenerator[str, None]:
    """The lines of a kernel log source of the given kind."""
    if source is KernelLogFormat.KMSG:
        return follow_kmsg(path, from_start=from_start)
    if source is KernelLogFormat.JOURNAL:
        return follow_journal_export(path, from_start=from_start)
    return follow_file(path, from_start=from_start)
