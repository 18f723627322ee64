"""Line sources: a log file followed like `tail -F`, /dev/kmsg records, and journal export files."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import struct
import threading
from collections.abc import AsyncGenerator
from datetime import timedelta
from pathlib import Path

import pytest

from gpuheal.agents.kmsg.follow import (
    FilePosition,
    JournalExportDecoder,
    KmsgPosition,
    LogLine,
    StartAt,
    _FileReader,
    follow_file,
    follow_journal_export,
    follow_kmsg,
)

POLL = timedelta(seconds=0.01)


class Collector:
    """Drains a line source on a task of its own, so waiting for lines never cancels the source."""

    def __init__(self, lines: AsyncGenerator[LogLine, None]) -> None:
        self._lines = lines
        self._queue: asyncio.Queue[LogLine] = asyncio.Queue()
        self._task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        async for line in self._lines:
            self._queue.put_nowait(line)

    async def take(self, count: int, timeout: float = 5.0) -> list[str]:
        return [line.text for line in await self.take_lines(count, timeout)]

    async def take_lines(self, count: int, timeout: float = 5.0) -> list[LogLine]:
        async with asyncio.timeout(timeout):
            return [await self._queue.get() for _ in range(count)]

    async def quiet(self, wait: float = 0.15) -> bool:
        """True when no line arrived within `wait` seconds.

        Only for negative assertions ("nothing more arrives"); never a barrier before a positive one.
        """
        await asyncio.sleep(wait)
        return self._queue.empty()

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._lines.aclose()


class FileOpens:
    """What the file followers' readers did when they tried to open their file (on their worker threads).

    The test's barrier for "the follower has looked at the file": starting from the end only skips
    what was there when the reader first opened it, so lines under test are written after that.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._attempts = 0  # tries, whether or not the file was there
        self._opened = 0  # tries that opened it (and, from the end, moved to its end)

    def record(self, *, opened: bool) -> None:
        with self._lock:
            self._attempts += 1
            self._opened += opened

    def counts(self) -> tuple[int, int]:
        """(attempts, opened) so far."""
        with self._lock:
            return self._attempts, self._opened

    async def wait(self, *, attempts: int = 0, opened: int = 0, timeout: float = 10.0) -> tuple[int, int]:
        """Wait (bounded: a hang guard) until at least that many tries and opens happened; the counts."""
        async with asyncio.timeout(timeout):
            while True:
                done, ok = self.counts()
                if done >= attempts and ok >= opened:
                    return done, ok
                await asyncio.sleep(POLL.total_seconds())


@pytest.fixture
def file_opens(monkeypatch: pytest.MonkeyPatch) -> FileOpens:
    """Every `_FileReader` open reported to the test, after it happened."""
    opens = FileOpens()
    real_open = _FileReader._open

    def _open(reader: _FileReader) -> None:
        real_open(reader)
        opens.record(opened=reader._file is not None)

    monkeypatch.setattr(_FileReader, "_open", _open)
    return opens


async def open_fifo_writer(fifo: Path, timeout: float = 10.0) -> int:
    """Open the FIFO for writing once the follower holds it open for reading (ENXIO until then)."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as error:
                if error.errno != errno.ENXIO:
                    raise
                await asyncio.sleep(POLL.total_seconds())
                continue
            os.set_blocking(writer, True)
            return writer


def _append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as log:
        log.write(text)


async def test_file_from_end_yields_appended_lines_and_survives_truncation(
    tmp_path: Path, file_opens: FileOpens
) -> None:
    path = tmp_path / "kern.log"
    path.write_text("old line 1\nold line 2\n")
    lines = Collector(follow_file(path, poll_interval=POLL))
    try:
        assert await file_opens.wait(opened=1) == (1, 1)  # the reader is at the end of the file
        _append(path, "new 1\nnew 2\npartial")
        # The first lines out are the new ones: what was there before following started is skipped.
        assert await lines.take(2) == ["new 1", "new 2"]
        assert await lines.quiet()  # a line without its newline waits for the rest
        _append(path, " line\n")
        assert await lines.take(1) == ["partial line"]
        path.write_text("")  # truncated (copytruncate rotation)
        # Shorter than what was read, so the truncation shows whether or not the reader saw it empty.
        _append(path, "after truncation\n")
        assert await lines.take(1) == ["after truncation"]
    finally:
        await lines.close()


async def test_file_rotation_and_late_creation(tmp_path: Path, file_opens: FileOpens) -> None:
    path = tmp_path / "kern.log"
    lines = Collector(follow_file(path, poll_interval=POLL))  # the file does not exist yet
    try:
        attempts, opened = await file_opens.wait(attempts=1)  # it looked, and found no file
        assert attempts >= 1 and opened == 0
        path.write_text("first\n")  # created after following started: read from its start
        assert await lines.take(1) == ["first"]
        _append(path, "last of the old file\n")
        path.rename(tmp_path / "kern.log.1")
        path.write_text("in the new file\n")
        assert await lines.take(2) == ["last of the old file", "in the new file"]
    finally:
        await lines.close()


async def test_file_from_start_and_undecodable_bytes(tmp_path: Path) -> None:
    path = tmp_path / "dmesg.txt"
    path.write_bytes(b"[ 1.0] one\n[ 2.0] t\xffo\n")
    lines = Collector(follow_file(path, start_at="start", poll_interval=POLL))
    try:
        assert await lines.take(2) == ["[ 1.0] one", "[ 2.0] t\ufffdo"]
    finally:
        await lines.close()


async def test_kmsg_records_from_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "kmsg"
    os.mkfifo(fifo)
    lines = Collector(follow_kmsg(fifo, poll_interval=POLL))
    writer = await open_fifo_writer(fifo)
    try:
        os.write(writer, b"3,812,6085126134786,-;NVRM: Xid (PCI:0000:3b:00): 79, GPU has fallen off the bus.\n")
        os.write(writer, b" SUBSYSTEM=pci\n DEVICE=+pci:0000:3b:00.0\n")
        (first, *rest) = await lines.take(3)
        assert first.startswith("3,812,6085126134786,-;NVRM: Xid")
        assert rest == [" SUBSYSTEM=pci", " DEVICE=+pci:0000:3b:00.0"]
    finally:
        os.close(writer)
        await lines.close()


async def test_kmsg_overrun_is_survived(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fifo = tmp_path / "kmsg"
    os.mkfifo(fifo)
    real_read = os.read
    overruns = [True]

    def read(fd: int, size: int) -> bytes:
        if overruns and size == 16384:
            overruns.pop()
            raise BrokenPipeError(32, "records were overwritten")
        return real_read(fd, size)

    monkeypatch.setattr(os, "read", read)  # the follower reads through `os.read`
    lines = Collector(follow_kmsg(fifo, poll_interval=POLL))
    writer = await open_fifo_writer(fifo)
    try:
        os.write(writer, b"6,900,1,-;after the overrun\n")
        assert await lines.take(1) == ["6,900,1,-;after the overrun"]
        assert not overruns
    finally:
        os.close(writer)
        await lines.close()


@pytest.mark.skipif(not os.access("/dev/kmsg", os.R_OK), reason="/dev/kmsg is not readable here")
async def test_real_dev_kmsg_replays_the_ring_as_records() -> None:
    lines = Collector(follow_kmsg(start_at="start", poll_interval=POLL))
    try:
        (line,) = await lines.take(1)
        header, separator, _ = line.partition(";")
        assert separator
        assert header.count(",") >= 3
        assert header.split(",")[0].isdigit()
    finally:
        await lines.close()


@pytest.mark.skipif(not os.access("/dev/kmsg", os.R_OK), reason="/dev/kmsg is not readable here")
async def test_real_dev_kmsg_resumes_after_a_sequence_number() -> None:
    everything = Collector(follow_kmsg(start_at="start", poll_interval=POLL))
    try:
        lines = await everything.take_lines(2)
    finally:
        await everything.close()
    first = lines[0].position
    assert isinstance(first, KmsgPosition)
    resumed = Collector(follow_kmsg(start_at=first, poll_interval=POLL))
    try:
        (line,) = await resumed.take_lines(1)
    finally:
        await resumed.close()
    assert isinstance(line.position, KmsgPosition)
    assert line.position.seq > first.seq
    assert line.text.split(",")[1] == str(line.position.seq)


def _export_entry(fields: dict[str, bytes]) -> bytes:
    out = b""
    for name, value in fields.items():
        if b"\n" in value:
            out += name.encode() + b"\n" + struct.pack("<Q", len(value)) + value + b"\n"
        else:
            out += name.encode() + b"=" + value + b"\n"
    return out + b"\n"


def test_export_decoder_text_and_binary_fields_in_any_chunks() -> None:
    stream = _export_entry(
        {"__CURSOR": b"s=1", "_TRANSPORT": b"kernel", "MESSAGE": b"NVRM: Xid (PCI:0000:3b:00): 48, DBE"}
    ) + _export_entry({"_TRANSPORT": b"journal", "MESSAGE": b"two\nlines"})
    for size in (1, 7, len(stream)):
        decoder = JournalExportDecoder()
        entries = [entry for at in range(0, len(stream), size) for entry in decoder.feed(stream[at : at + size])]
        assert [entry.fields["MESSAGE"] for entry in entries] == [b"NVRM: Xid (PCI:0000:3b:00): 48, DBE", b"two\nlines"]
        assert entries[-1].end == len(stream), "the offset after the entry, for resuming there"
        assert stream[: entries[0].end].endswith(entries[0].tail)
    (junk,) = JournalExportDecoder().feed(b"JUNK\n" + b"\xff" * 8 + b"\nMESSAGE=x\n\n")
    assert junk.fields == {"MESSAGE": b"x"}


async def test_journal_export_file_yields_kernel_messages(tmp_path: Path, file_opens: FileOpens) -> None:
    path = tmp_path / "journal.export"
    path.write_bytes(_export_entry({"_TRANSPORT": b"kernel", "MESSAGE": b"before we looked"}))
    kernel_lines = Collector(follow_journal_export(path, poll_interval=POLL))
    every_line = Collector(follow_journal_export(path, start_at="start", kernel_only=False, poll_interval=POLL))
    try:
        assert await file_opens.wait(opened=2) == (2, 2)  # both readers hold the file, at its end or start
        with path.open("ab") as journal:
            journal.write(_export_entry({"_TRANSPORT": b"syslog", "MESSAGE": b"from a daemon"}))
            journal.write(
                _export_entry(
                    {
                        "_TRANSPORT": b"kernel",
                        "SYSLOG_IDENTIFIER": b"NVRM",
                        "MESSAGE": b"NVRM: Xid (PCI:0001:00:00.0): 79, x",
                    }
                )
            )
        # Neither the entry from before following started nor the daemon's entry comes out first.
        assert await kernel_lines.take(1) == ["NVRM: Xid (PCI:0001:00:00.0): 79, x"]
        assert await every_line.take(3) == ["before we looked", "from a daemon", "NVRM: Xid (PCI:0001:00:00.0): 79, x"]
    finally:
        await kernel_lines.close()
        await every_line.close()


# --- resuming where an earlier reader stopped --------------------------------------------------------


async def _positions(path: Path, count: int, start_at: StartAt | None) -> list[LogLine]:
    """The first `count` lines of a file followed from `start_at`, with their positions."""
    assert start_at is not None
    lines = Collector(follow_file(path, start_at=start_at, poll_interval=POLL))
    try:
        return await lines.take_lines(count)
    finally:
        await lines.close()


async def test_kmsg_records_resume_after_the_saved_sequence_number(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A regular file of records stands in for /dev/kmsg: the reader reads the ring from its start."""
    ring = tmp_path / "kmsg"
    ring.write_bytes(b"6,10,1,-;ten\n SUBSYSTEM=pci\n6,11,2,-;eleven\n SUBSYSTEM=pci\n6,12,3,-;twelve\n")
    everything = Collector(follow_kmsg(ring, start_at="start", poll_interval=POLL))
    resumed = Collector(follow_kmsg(ring, start_at=KmsgPosition(11), poll_interval=POLL))
    try:
        lines = await everything.take_lines(5)
        assert [line.position for line in lines] == [KmsgPosition(seq) for seq in (10, 10, 11, 11, 12)]
        assert [line.text for line in await resumed.take_lines(1)] == ["6,12,3,-;twelve"]
        with ring.open("ab") as log:
            log.write(b"6,13,4,-;thirteen\n")
        (after,) = await resumed.take_lines(1)
        assert after == LogLine("6,13,4,-;thirteen", KmsgPosition(13))
    finally:
        await everything.close()
        await resumed.close()
    assert not any("overwritten" in record.message for record in caplog.records)
    overrun = Collector(follow_kmsg(ring, start_at=KmsgPosition(7), poll_interval=POLL))
    try:
        assert (await overrun.take(1)) == ["6,10,1,-;ten"]
    finally:
        await overrun.close()
    assert any("kernel records 8 to 9 were overwritten" in record.message for record in caplog.records)


async def test_kmsg_from_the_end_skips_the_ring(tmp_path: Path) -> None:
    ring = tmp_path / "kmsg"
    ring.write_bytes(b"6,10,1,-;before\n")
    lines = Collector(follow_kmsg(ring, poll_interval=POLL))
    try:
        assert await lines.quiet()
        with ring.open("ab") as log:
            log.write(b"6,11,2,-;after\n")
        assert await lines.take(1) == ["6,11,2,-;after"]
    finally:
        await lines.close()


async def test_a_file_resumes_after_the_saved_line(tmp_path: Path) -> None:
    path = tmp_path / "kern.log"
    path.write_text("one\ntwo\nthree\n")
    _, second = await _positions(path, 2, start_at="start")
    stat = path.stat()
    assert second.position == FilePosition(stat.st_dev, stat.st_ino, len("one\ntwo\n"), b"one\ntwo\n")
    _append(path, "four\n")
    assert [line.text for line in await _positions(path, 2, start_at=second.position)] == ["three", "four"]
    # Nothing new after the last line: nothing comes.
    (*_, last) = await _positions(path, 4, start_at="start")
    assert last.position is not None
    lines = Collector(follow_file(path, start_at=last.position, poll_interval=POLL))
    try:
        assert await lines.quiet()
        _append(path, "five\n")
        assert await lines.take(1) == ["five"]
    finally:
        await lines.close()


@pytest.mark.parametrize("how", ["truncated", "rewritten", "replaced"])
async def test_a_file_changed_while_down_is_read_from_its_start(
    tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "kern.log"
    path.write_text("old one\nold two\nold three\n")
    _, saved = await _positions(path, 2, start_at="start")
    if how == "truncated":  # copytruncate, then less than was read
        path.write_text("new\n")
    elif how == "rewritten":  # copytruncate, then more than was read: the bytes before the offset differ
        path.write_text("a new line\nanother new line\nand a third\n")
    else:  # moved away elsewhere (or deleted), a new file in its place
        path.rename(tmp_path.parent / f"{tmp_path.name}-kern.log.old")
        path.write_text("new\n")
    first = (await _positions(path, 1, start_at=saved.position))[0]
    assert first.text == ("a new line" if how == "rewritten" else "new")
    assert any("from its start" in record.message for record in caplog.records)


async def test_a_file_rotated_while_down_is_finished_before_the_new_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "kern.log"
    path.write_text("one\ntwo\n")
    (saved,) = await _positions(path, 1, start_at="start")
    _append(path, "three\n")
    path.rename(tmp_path / "kern.log.1")
    path.write_text("four\n")
    lines = await _positions(path, 3, start_at=saved.position)
    assert [line.text for line in lines] == ["two", "three", "four"]
    new = path.stat()
    assert lines[-1].position == FilePosition(new.st_dev, new.st_ino, len("four\n"), b"four\n")
    assert any("was rotated while the agent was down" in record.message for record in caplog.records)


async def test_a_partial_last_line_of_a_truncated_file_is_not_glued_to_the_new_content(tmp_path: Path) -> None:
    path = tmp_path / "kern.log"
    path.write_text("whole\nhalf a li")
    lines = Collector(follow_file(path, start_at="start", poll_interval=POLL))
    try:
        assert await lines.take(1) == ["whole"]
        assert await lines.quiet()
        path.write_text("new\n")
        assert await lines.take(2) == ["half a li", "new"]
    finally:
        await lines.close()


async def test_a_journal_export_resumes_after_the_saved_entry(tmp_path: Path) -> None:
    path = tmp_path / "journal.export"
    path.write_bytes(
        _export_entry({"_TRANSPORT": b"kernel", "MESSAGE": b"first"})
        + _export_entry({"_TRANSPORT": b"kernel", "MESSAGE": b"second\nof two lines"})
    )
    reader = Collector(follow_journal_export(path, start_at="start", poll_interval=POLL))
    try:
        first, *second = await reader.take_lines(3)
    finally:
        await reader.close()
    assert second[0].position == second[1].position, "the lines of one entry share the position after it"
    with path.open("ab") as journal:
        journal.write(_export_entry({"_TRANSPORT": b"kernel", "MESSAGE": b"third"}))
    assert first.position is not None
    resumed = Collector(follow_journal_export(path, start_at=first.position, poll_interval=POLL))
    try:
        assert await resumed.take(3) == ["second", "of two lines", "third"]
    finally:
        await resumed.close()
