"""Sources of kernel log lines, as async iterators that never block the event loop.

Each yields `LogLine`s: the text, and the position a reader restarted there would resume after.

- `follow_kmsg`: the kernel ring buffer through `/dev/kmsg` (one record per read, `PRI,SEQ,TS,FLAGS;text`
  and continuation lines starting with a space). A position is the record's sequence number
  (`KmsgPosition`), which counts from the boot. It starts at the end of the ring (the records already
  there were written before this process looked), at its start (the whole ring), or after a saved
  sequence number (the ring is read from its start and what was handled is skipped; a gap to the
  first record left is logged: the ring overwrote those records while nobody read). A reader that
  falls behind gets EPIPE for records the ring overwrote; that is counted and reading goes on with
  the oldest record still there.
- `follow_file`: a plain log file with `tail -F` semantics: start at its end, its beginning or a saved
  `FilePosition`, keep going when the file is truncated (read again from its start) or rotated (finish
  the old file, then read the new one from its start), wait for a file that does not exist yet.
- `follow_journal_export`: a file in journald's export format (`journalctl -o export`, text and binary
  fields) followed the same way, yielding each entry's MESSAGE; by default only kernel entries
  (`_TRANSPORT=kernel`, which includes records written to /dev/kmsg by the fault injector).

A `FilePosition` names the file (device and inode), the offset after the last complete line (or
journal entry) and the bytes just before that offset. Resuming at one reads on from the offset when
the file is still there, is no shorter and still has those bytes there; a file rotated away (renamed
in the same directory) is found by its inode and finished first, then the files rotated after it
(uncompressed siblings named after the path, changed since, oldest first; compressed ones are
logged as not read), then the path's; otherwise the file at the path is new and is read from its
start. Each case is logged.

`end_of_kmsg` and `end_of_file` give the position where a source ends now, so a start at the end can
be saved as a position that stays true across a restart.

All blocking reads run on one worker thread per follower; the event loop only awaits them.
Bytes are decoded as UTF-8 with errors replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import select
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from stat import S_ISCHR, S_ISREG
from typing import BinaryIO, Literal, NamedTuple

log = logging.getLogger(__name__)

KMSG = Path("/dev/kmsg")

# How long a follower waits, when its source had nothing new, before reading again.
_POLL_INTERVAL = timedelta(seconds=0.25)

# /dev/kmsg refuses reads into a buffer smaller than the record (EINVAL); records are at most ~8 KiB.
_KMSG_READ = 16384
# One worker hop returns at most this much, so the loop gets a turn during a backlog.
_BATCH_BYTES = 1 << 20
# A line longer than this is cut; kernel records are at most a few KiB.
_MAX_LINE = 1 << 20
# Suffixes of rotated log files that were compressed (not read).
_COMPRESSED = frozenset({".gz", ".xz", ".bz2", ".zst", ".lz4", ".z"})
# How many bytes before a file position are kept to recognise the file's content on resuming.
_TAIL = 64
# The sequence number in a /dev/kmsg record's header.
_KMSG_SEQ = re.compile(r"[0-9]{1,4},([0-9]{1,20}),", re.ASCII)
_KMSG_SEQ_BYTES = re.compile(rb"[0-9]{1,4},([0-9]{1,20}),")


# Positions and lines are named tuples: one is made for every line read, and a tuple is the cheapest
# immutable value to make.


class KmsgPosition(NamedTuple):
    """After the /dev/kmsg record with this sequence number (of one boot)."""

    seq: int


class FilePosition(NamedTuple):
    """After `offset` bytes of the file with this device and inode; `tail` is the bytes right before them."""

    device: int
    inode: int
    offset: int
    tail: bytes


Position = KmsgPosition | FilePosition
# Where a follower begins: the start or the end of what is there, or after a saved position.
StartAt = Literal["start", "end"] | Position


class LogLine(NamedTuple):
    """One line of a source, the position after it (None where the source has none to give), and
    whether it was read before the follower first caught up with the source (`backlog`: written
    before the follower looked, or while it was reading what was)."""

    text: str
    position: Position | None
    backlog: bool = False


@dataclass(frozen=True, slots=True)
class _Chunk:
    """Bytes read from a file (`identity` is its device and inode; None for /dev/kmsg) at `offset`.

    `drained`: the read stopped because the source had nothing more then. `backlog`: read before
    a read of the follower drained the source (set by `_chunks`)."""

    data: bytes
    identity: tuple[int, int] | None = None
    offset: int = 0
    drained: bool = True
    backlog: bool = False


class _Reader:
    """A blocking byte source for one follower; only ever called from its worker thread."""

    def read(self) -> _Chunk:
        raise NotImplementedError

    def idle(self, poll_interval: timedelta) -> timedelta:
        """How long to wait after a read that found nothing, before reading again."""
        return poll_interval

    def close(self) -> None:
        raise NotImplementedError


# Told once, when the follower has handed on every line of the source's backlog.
OnCaughtUp = Callable[[], None]


async def _chunks(
    reader: _Reader, poll_interval: timedelta, on_caught_up: OnCaughtUp | None = None
) -> AsyncGenerator[_Chunk, None]:
    """Bytes from a reader, read on a worker thread; sleeps `poll_interval` when there is nothing new.

    Chunks up to the first that drained the source are marked `backlog`; `on_caught_up` runs once the
    consumer asks for more after that chunk (so every line of the backlog has been handled)."""
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpuheal-kmsg-follow")
    backlog = True
    try:
        while True:
            chunk = await asyncio.wrap_future(worker.submit(reader.read))
            if chunk.data:
                yield replace(chunk, backlog=True) if backlog else chunk
            if backlog and (chunk.drained or not chunk.data):
                backlog = False
                if on_caught_up is not None:
                    on_caught_up()
            if not chunk.data:
                await asyncio.sleep(reader.idle(poll_interval).total_seconds())
    finally:
        # The single worker runs the close after any read still in flight, so a file descriptor is
        # never closed (and its number reused) under a running read.
        worker.submit(reader.close)
        worker.shutdown(wait=False)


async def _lines(chunks: AsyncGenerator[_Chunk, None]) -> AsyncGenerator[LogLine, None]:
    """Split a byte stream into lines (without their newline); a partial last line waits for the rest.

    Lines of a file carry the `FilePosition` after them. When the bytes stop continuing where the last
    ones ended (the file was truncated, or replaced by a new one), a partial line left over is the
    end of the old content: it is yielded on its own, never glued to the new.
    """
    partial = b""
    identity: tuple[int, int] | None = None
    end = 0  # the file offset after the bytes seen so far
    async with contextlib.aclosing(chunks):  # closing the lines closes the reader now, not at GC
        async for chunk in chunks:
            if chunk.identity is not None and (chunk.identity != identity or chunk.offset != end) and partial:
                yield LogLine(
                    partial.decode("utf-8", errors="replace"), _position(identity, end, partial), chunk.backlog
                )
                partial = b""
            identity = chunk.identity
            buffer = partial + chunk.data
            base = chunk.offset - len(partial)  # the file offset of buffer[0]
            end = chunk.offset + len(chunk.data)
            pieces = buffer.split(b"\n")
            partial = pieces.pop()
            cut = b""
            if len(partial) > _MAX_LINE:  # no newline in sight (binary junk): don't buffer without end
                cut, partial = partial, b""
            backlog = chunk.backlog
            if identity is None:
                for piece in pieces:
                    yield LogLine(piece.decode("utf-8", errors="replace"), None, backlog)
                if cut:
                    yield LogLine(cut.decode("utf-8", errors="replace"), None, backlog)
                continue
            device, inode = identity
            stop = 0  # where in `buffer` the line just split off ends (after its newline)
            for piece in pieces:
                stop += len(piece) + 1
                tail = buffer[stop - _TAIL : stop] if stop > _TAIL else buffer[:stop]
                text = piece.decode("utf-8", errors="replace")
                yield LogLine(text, FilePosition(device, inode, base + stop, tail), backlog)
            if cut:
                stop += len(cut)
                yield LogLine(cut.decode("utf-8", errors="replace"), _position(identity, base + stop, cut), backlog)


def _position(identity: tuple[int, int] | None, offset: int, before: bytes) -> FilePosition | None:
    if identity is None:
        return None
    return FilePosition(identity[0], identity[1], offset, before[-_TAIL:])


class _KmsgReader(_Reader):
    def __init__(self, path: Path, *, from_end: bool, wait: timedelta) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self._wait_ms = max(0, int(wait / timedelta(milliseconds=1)))
        self._at_eof = False
        self.lost = 0
        if from_end:
            # A pipe (tests) can't seek, and has no backlog to skip anyway.
            with contextlib.suppress(OSError):
                os.lseek(self._fd, 0, os.SEEK_END)
        self._poller = select.poll()
        self._poller.register(self._fd, select.POLLIN)

    def read(self) -> _Chunk:
        # Wait in the worker (not the loop) for a record, so new records arrive without polling delay.
        self._poller.poll(self._wait_ms)
        self._at_eof = False
        records: list[bytes] = []
        size = 0
        drained = False
        while size < _BATCH_BYTES:
            try:
                record = os.read(self._fd, _KMSG_READ)
            except BlockingIOError:
                drained = True
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
                self._at_eof = drained = True  # a closed pipe, never /dev/kmsg: poll would return at once forever
                break
            records.append(record if record.endswith(b"\n") else record + b"\n")
            size += len(record)
        return _Chunk(b"".join(records), drained=drained)

    def idle(self, poll_interval: timedelta) -> timedelta:
        # The read already waited in poll(); only an end of file calls for a pause of its own.
        return poll_interval if self._at_eof else timedelta(0)

    def close(self) -> None:
        os.close(self._fd)


class _FileReader(_Reader):
    """`tail -F` over a path: reopens on rotation, rewinds on truncation, waits for a missing file."""

    def __init__(self, path: Path, *, start_at: StartAt) -> None:
        self._path = path
        self._file: BinaryIO | None = None
        self._identity: tuple[int, int] | None = None
        # Only the first open may skip to the end or resume; a file found later is new: read from its start.
        self._start_at: StartAt = start_at
        # Files rotated after the one resumed, read (from their start) before the path's.
        self._pending: list[Path] = []

    def _open(self) -> None:
        start_at, self._start_at = self._start_at, "start"
        if isinstance(start_at, FilePosition) and self._resume(start_at):
            return
        path = self._pending.pop(0) if self._pending else self._path
        try:
            handle = path.open("rb")
        except OSError:
            return
        stat = os.fstat(handle.fileno())
        self._file, self._identity = handle, (stat.st_dev, stat.st_ino)
        if start_at == "end":
            handle.seek(0, os.SEEK_END)

    def _resume(self, saved: FilePosition) -> bool:
        """Open the saved file at the saved offset (see the module docstring); False to read the path anew."""
        identity = (saved.device, saved.inode)
        where = self._find(identity)
        if where is None:
            log.warning(
                "%s was replaced while the agent was down and the file it was reading is gone: "
                "reading the new one from its start",
                self._path,
            )
            return False
        try:
            handle = where.open("rb")
        except OSError as error:
            log.warning("cannot resume %s (%s): reading %s from its start", where, error, self._path)
            return False
        stat = os.fstat(handle.fileno())
        if (stat.st_dev, stat.st_ino) != identity or not _holds(handle, stat.st_size, saved):
            handle.close()
            log.warning(
                "%s was truncated or rewritten while the agent was down: reading %s from its start", where, self._path
            )
            return False
        handle.seek(saved.offset)
        self._file, self._identity = handle, identity
        if where == self._path:
            log.info("resuming %s at byte %d", where, saved.offset)
        else:
            self._pending = self._rotated_after(where)
            log.warning(
                "%s was rotated while the agent was down: finishing %s from byte %d, then %s",
                self._path,
                where,
                saved.offset,
                ", ".join(str(path) for path in [*self._pending, self._path]),
            )
        return True

    def _rotated_after(self, resumed: Path) -> list[Path]:
        """The rotated siblings of the path (same directory, its name and a suffix) changed after `resumed`,
        oldest first; compressed ones cannot be read and are logged."""
        try:
            since = resumed.stat().st_mtime_ns
            siblings = [entry for entry in self._path.parent.iterdir() if entry.name.startswith(self._path.name + ".")]
        except OSError:
            return []
        found: list[tuple[int, Path]] = []
        for sibling in siblings:
            with contextlib.suppress(OSError):
                if sibling == resumed or not sibling.is_file() or sibling.stat().st_mtime_ns < since:
                    continue
                if sibling.suffix in _COMPRESSED:
                    log.warning("%s was rotated while the agent was down and compressed: not read", sibling)
                    continue
                found.append((sibling.stat().st_mtime_ns, sibling))
        return [path for _, path in sorted(found)]

    def _find(self, identity: tuple[int, int]) -> Path | None:
        """The path of the file with this identity: the followed path, or a rotated file beside it."""
        with contextlib.suppress(OSError):
            stat = self._path.stat()
            if (stat.st_dev, stat.st_ino) == identity:
                return self._path
        with contextlib.suppress(OSError), os.scandir(self._path.parent) as entries:
            for entry in entries:
                if entry.inode() == identity[1] and entry.is_file() and entry.stat().st_dev == identity[0]:
                    return Path(entry.path)
        return None

    def read(self) -> _Chunk:
        if self._file is None:
            self._open()  # also the first open: on the worker, not on the event loop
            if self._file is None:
                return _Chunk(b"")
        chunk = self._read()
        if chunk.data:
            return chunk
        # At the end of what we have: has the file been truncated, or replaced by a new one?
        if os.fstat(self._file.fileno()).st_size < chunk.offset:
            self._file.seek(0)
            return self._read()
        try:
            stat = self._path.stat()
        except OSError:
            return chunk  # moved away and not recreated yet: keep the old one until a new one appears
        if (stat.st_dev, stat.st_ino) != self._identity:
            self._file.close()
            self._file = None
            self._open()
            return self._read() if self._file else _Chunk(b"")
        return chunk

    def _read(self) -> _Chunk:
        assert self._file is not None
        offset = self._file.tell()
        data = self._file.read(_BATCH_BYTES)
        return _Chunk(data, self._identity, offset, drained=len(data) < _BATCH_BYTES)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _holds(handle: BinaryIO, size: int, saved: FilePosition) -> bool:
    """Whether the open file still has the saved bytes right before the saved offset."""
    if size < saved.offset or len(saved.tail) > saved.offset:
        return False
    handle.seek(saved.offset - len(saved.tail))
    return handle.read(len(saved.tail)) == saved.tail


async def follow_kmsg(
    path: Path = KMSG,
    *,
    start_at: StartAt = "end",
    poll_interval: timedelta = _POLL_INTERVAL,
    on_caught_up: OnCaughtUp | None = None,
) -> AsyncGenerator[LogLine, None]:
    """Lines of the kernel ring buffer as /dev/kmsg writes them (`3,812,6085126134786,-;NVRM: ...`).

    Each carries the sequence number of its record; continuation lines that of the record they follow.
    """
    after = start_at.seq if isinstance(start_at, KmsgPosition) else None
    reader = _KmsgReader(path, from_end=start_at == "end", wait=poll_interval)
    seq: int | None = None
    async with contextlib.aclosing(_lines(_chunks(reader, poll_interval, on_caught_up))) as lines:
        async for line in lines:
            header = _KMSG_SEQ.match(line.text)
            if header is not None:
                first = seq is None
                seq = int(header[1])
                if first and after is not None and seq > after + 1:
                    log.warning(
                        "kernel records %d to %d were overwritten in the ring buffer before they were read",
                        after + 1,
                        seq - 1,
                    )
            if after is not None and seq is not None and seq <= after:
                continue  # handled before the restart
            yield LogLine(line.text, KmsgPosition(seq) if seq is not None else None, line.backlog)


def end_of_kmsg(path: Path = KMSG) -> KmsgPosition | None:
    """The position after the last record in the ring now (read through once, nothing kept); None when
    it holds none, or is a pipe (reading one would take its records from the follower). Blocking."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    last: int | None = None
    partial = b""
    try:
        mode = os.fstat(fd).st_mode
        if not (S_ISCHR(mode) or S_ISREG(mode)):
            return None
        while True:
            try:
                data = os.read(fd, _KMSG_READ)
            except BlockingIOError:
                break
            except BrokenPipeError:
                continue  # overwritten while we read: go on with the oldest record left
            if not data:
                break  # a regular file in kmsg format
            # /dev/kmsg gives one record per read; a file in its format gives many lines, the last maybe cut.
            records = (partial + data).split(b"\n")
            partial = records.pop()
            for record in records:
                header = _KMSG_SEQ_BYTES.match(record)
                if header is not None:
                    last = int(header[1])
        header = _KMSG_SEQ_BYTES.match(partial)
        if header is not None:
            last = int(header[1])
    finally:
        os.close(fd)
    return KmsgPosition(last) if last is not None else None


def end_of_file(path: Path) -> FilePosition | None:
    """The position at the end of the file at `path` now; None when there is none. Blocking."""
    try:
        handle = path.open("rb")
    except OSError:
        return None
    with handle:
        found = os.fstat(handle.fileno())
        size = found.st_size
        handle.seek(max(0, size - _TAIL))
        return FilePosition(found.st_dev, found.st_ino, size, handle.read(size - handle.tell()))


def follow_file(
    path: Path,
    *,
    start_at: StartAt = "end",
    poll_interval: timedelta = _POLL_INTERVAL,
    on_caught_up: OnCaughtUp | None = None,
) -> AsyncGenerator[LogLine, None]:
    """Lines appended to a log file (dmesg, journald or syslog text), following it like `tail -F`."""
    return _lines(_chunks(_FileReader(path, start_at=start_at), poll_interval, on_caught_up))


# A binary field longer than this is taken as corruption rather than waited for.
_MAX_FIELD = 1 << 24


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One entry of a journal export stream, and the stream offset right after it."""

    fields: dict[str, bytes]
    end: int
    tail: bytes  # the bytes right before `end` (at least the blank line that ended the entry)


class JournalExportDecoder:
    """Incremental decoder of journald's export format: feed bytes, get finished entries.

    Text fields are `NAME=value\\n`; binary ones `NAME\\n`, a little-endian 64-bit length, the bytes and
    `\\n`; an empty line ends an entry. `offset` is where in its file the stream starts.
    """

    def __init__(self, offset: int = 0) -> None:
        self._buffer = bytearray()
        self._entry: dict[str, bytes] = {}
        self._consumed = offset  # the stream offset of the buffer's first byte

    def feed(self, data: bytes) -> list[JournalEntry]:
        """The entries completed by these bytes, in order."""
        buffer = self._buffer
        buffer += data
        done: list[JournalEntry] = []
        position = 0
        while True:
            newline = buffer.find(b"\n", position)
            if newline < 0:
                break
            if newline == position:
                if self._entry:
                    end = newline + 1
                    tail = bytes(buffer[max(0, end - _TAIL) : end])
                    done.append(JournalEntry(self._entry, self._consumed + end, tail))
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
        self._consumed += position
        return done


async def follow_journal_export(
    path: Path,
    *,
    start_at: StartAt = "end",
    kernel_only: bool = True,
    poll_interval: timedelta = _POLL_INTERVAL,
    keep: Callable[[dict[str, bytes]], bool] | None = None,
    on_caught_up: OnCaughtUp | None = None,
) -> AsyncGenerator[LogLine, None]:
    """The MESSAGE of each entry written to a journal export file, followed like `tail -F`.

    `kernel_only` keeps entries with `_TRANSPORT=kernel`; `keep`, when given, decides instead.
    Starting at the end of a file a writer is halfway through an entry can yield that entry's tail as
    a fragment; the decoder is back in step at the next blank line. Every line of an entry carries the
    position after that entry. A new file, or the same one rewound, starts a new decoder.
    """

    def kernel(entry: dict[str, bytes]) -> bool:
        return entry.get("_TRANSPORT") == b"kernel"

    wanted = keep or (kernel if kernel_only else None)
    decoder = JournalExportDecoder()
    identity: tuple[int, int] | None = None
    end = 0
    reader = _FileReader(path, start_at=start_at)
    async with contextlib.aclosing(_chunks(reader, poll_interval, on_caught_up)) as chunks:
        async for chunk in chunks:
            if chunk.identity != identity or chunk.offset != end:
                decoder = JournalExportDecoder(chunk.offset)
            identity, end = chunk.identity, chunk.offset + len(chunk.data)
            for entry in decoder.feed(chunk.data):
                if wanted is not None and not wanted(entry.fields):
                    continue
                message = entry.fields.get("MESSAGE")
                if message is None:
                    continue
                position = _position(identity, entry.end, entry.tail)
                for line in message.decode("utf-8", errors="replace").splitlines():
                    yield LogLine(line, position, chunk.backlog)


class KernelLogFormat(StrEnum):
    """How the kernel log source is read."""

    KMSG = "kmsg"  # /dev/kmsg records
    FILE = "file"  # a text file appended to (dmesg or journald lines, or kmsg records)
    JOURNAL = "journal"  # a journal export file


class ReadFrom(StrEnum):
    """Where the agent starts reading its kernel log."""

    RESUME = "resume"  # after the last line handled before (the saved position), else from the start
    START = "start"  # everything there: the whole ring buffer, or the file from its beginning
    END = "end"  # only what is written from now on


@dataclass(frozen=True, slots=True)
class KernelLog:
    """A kernel log source: its path, its format, and where the agent asks to begin reading.

    `read_from` is the agent's choice; the monitor, which knows what was read before, turns it into
    the `StartAt` that `lines` follows from.
    """

    path: Path
    format: KernelLogFormat = KernelLogFormat.KMSG
    read_from: ReadFrom = ReadFrom.RESUME
    poll_interval: timedelta = _POLL_INTERVAL

    def fits(self, position: Position) -> bool:
        """Whether a position is of this source's kind (a sequence number for /dev/kmsg, an offset for files)."""
        return isinstance(position, KmsgPosition) == (self.format is KernelLogFormat.KMSG)

    def end(self) -> Position | None:
        """Where the source ends now (see `end_of_kmsg` and `end_of_file`); None when it holds nothing. Blocking."""
        if self.format is KernelLogFormat.KMSG:
            return end_of_kmsg(self.path)
        return end_of_file(self.path)

    def lines(self, start_at: StartAt, on_caught_up: OnCaughtUp | None = None) -> AsyncGenerator[LogLine, None]:
        """Follow the source from `start_at`; `on_caught_up` runs once its backlog is handled."""
        poll = self.poll_interval
        if self.format is KernelLogFormat.KMSG:
            return follow_kmsg(self.path, start_at=start_at, poll_interval=poll, on_caught_up=on_caught_up)
        if self.format is KernelLogFormat.JOURNAL:
            return follow_journal_export(self.path, start_at=start_at, poll_interval=poll, on_caught_up=on_caught_up)
        return follow_file(self.path, start_at=start_at, poll_interval=poll, on_caught_up=on_caught_up)
