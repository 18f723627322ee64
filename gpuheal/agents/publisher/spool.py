"""A bounded FIFO of health events for one dependency that cannot be reached: on disk, and in memory
for the faults the disk refuses.

Each entry is one JSON file named `<sequence>.<a|n>.json` (`a` for actionable, `n` for not), written
to a temporary name, flushed and renamed, so a crash leaves either the whole entry or none. The
directory listing is the index: a new spool on the same directory (after an agent restart) picks
up where the old one stopped, in the same order.

Two bounds hold on disk, `max_entries` and `max_bytes` (the entries' file sizes). When a new event
does not fit, the oldest non-actionable entries are shed to make room (`shed`); a non-actionable
event that still does not fit, or that the disk refuses, is refused (`refused`). So is every
non-actionable event while faults wait in memory: disk room that frees goes to the faults first.

An actionable event, a fault that should start a remediation, is never dropped. When only
actionable entries are left to fill the budget, or the disk refuses the write (ENOSPC and EDQUOT
first shed non-actionable entries and try again; EIO, EROFS and the rest do not), the event is held
in memory in its place in the sequence: `head` hands it out when its turn comes, so it neither
overtakes older entries nor is overtaken, and every `append`, `head` and `remove` first tries to
write held events to disk again, oldest first. A held event is lost if the agent dies before it is
written or delivered, which is why the agent's readiness fails while one is held. The hold is
bounded (`max_held_bytes`, at least one event): past it `append` raises `SpoolFull`, the event is
not taken, and its sender keeps it and retries.

An entry that cannot be read is moved aside as `<name>.bad`, with a log line, and the lane goes on.
Entries that can never be read (a directory, a FIFO or a symlink in an entry's place, no permission,
a body that is not a health event) are moved at once. Errors of the process, not of the entry
(EMFILE, ENFILE, ENOMEM, EAGAIN, EINTR) are raised to the caller to retry without limit: moving
every entry aside while the agent is out of file descriptors would throw the whole backlog away.
Any other read error (EIO, …) is raised too, until the entry has failed `READ_ATTEMPTS` reads:
then it is moved aside.
`.bad` files are never loaded again and take no part in the budget: they are kept for a person to
read, and counted in `moved_aside` (and logged at start, with how many lie in the directory).

Methods block on disk I/O; callers on an event loop run them in a thread. A lock keeps the index
consistent when they do so from several tasks; `stats` reads without it, for a scrape that must not
wait behind an fsync.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import ValidationError

from gpuheal.agents.durable_file import write_durably
from gpuheal.domain.health import HealthEvent

log = logging.getLogger(__name__)

MIB = 1024 * 1024

_ACTIONABLE = "a"
_DROPPABLE = "n"
_ASIDE = ".bad"

# The disk has no room: shedding non-actionable entries may make some.
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
# The process is short of a resource; the entry is fine and a later read will work.
_PROCESS_SHORT = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS, errno.EAGAIN, errno.EINTR})
# Reading this entry will never work.
_UNREADABLE = frozenset(
    {
        errno.EISDIR,
        errno.ELOOP,  # a symlink in an entry's place (entries are opened with O_NOFOLLOW)
        errno.EACCES,
        errno.EPERM,
        errno.ENOTDIR,
        errno.EINVAL,  # not a regular file
        errno.ENXIO,
    }
)
# How often an entry may fail to read with an error of neither kind before it is moved aside.
READ_ATTEMPTS = 5


class SpoolFull(Exception):
    """An actionable event was not taken: the disk refused it and the memory hold is full.

    Nothing of the event was kept; its sender must retry it later (the intake answers UNAVAILABLE).
    """


@dataclass(frozen=True, slots=True)
class SpoolLimits:
    """How much one lane's spool holds: entries and bytes on disk, and bytes of faults held in memory."""

    max_entries: int = 10_000
    max_bytes: int = 64 * MIB
    max_held_bytes: int = 8 * MIB

    def __post_init__(self) -> None:
        for name in ("max_entries", "max_bytes", "max_held_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"spool {name} must be at least 1, not {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """A snapshot of one spool, for metrics and readiness."""

    entries: int  # on disk
    bytes: int  # on disk
    held: int  # actionable events in memory, refused by the disk
    held_bytes: int
    shed: int  # non-actionable entries deleted to make room
    refused: int  # non-actionable events not taken
    refused_actionable: int  # actionable events not taken (SpoolFull): their senders retry
    moved_aside: int  # unreadable entries renamed to *.bad
    over_budget: bool  # more on disk than the limits allow (a smaller budget than the last run's)


@dataclass(frozen=True, slots=True)
class Spooled:
    """One entry of the spool: its place, whether it may be shed, and its event while held in memory."""

    seq: int
    actionable: bool
    path: Path
    size: int
    held: HealthEvent | None = None


class Spool:
    """Health events waiting for one dependency, oldest first, within `limits`."""

    def __init__(self, directory: Path, limits: SpoolLimits | None = None) -> None:
        self.directory = directory
        self.limits = limits or SpoolLimits()
        self.shed = 0
        self.refused = 0
        self.refused_actionable = 0
        self.moved_aside = 0
        self._lock = threading.Lock()
        self._entries: dict[int, Spooled] = {}  # in sequence order, on disk and held alike
        self._held: dict[int, Spooled] = {}  # in sequence order
        self._droppable: deque[int] = deque()  # non-actionable sequences, oldest first; may hold removed ones
        self._bytes = 0
        self._held_bytes = 0
        self._read_failures: dict[int, int] = {}
        self._next_seq = 1
        self._load()

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> SpoolStats:
        """Counters and sizes as they stand."""
        on_disk = len(self._entries) - len(self._held)
        return SpoolStats(
            entries=on_disk,
            bytes=self._bytes,
            held=len(self._held),
            held_bytes=self._held_bytes,
            shed=self.shed,
            refused=self.refused,
            refused_actionable=self.refused_actionable,
            moved_aside=self.moved_aside,
            over_budget=self._bytes > self.limits.max_bytes or on_disk > self.limits.max_entries,
        )

    def append(self, event: HealthEvent, *, actionable: bool) -> bool:
        """Queue the event at the tail; False when a non-actionable event was refused.

        An actionable event is always queued, on disk or held in memory, unless the hold is full:
        then `SpoolFull` is raised and nothing was queued.
        """
        data = event.model_dump_json().encode()
        with self._lock:
            self._write_held()
            if actionable:
                self._append_fault(event, data)
                return True
            return self._append_droppable(event, data)

    def head(self) -> tuple[Spooled, HealthEvent] | None:
        """The oldest entry and its event, or None when empty; reading does not consume.

        Unreadable entries are moved aside on the way. An `OSError` is raised when the head entry
        cannot be read for now (see the module's description); the caller retries later.
        """
        with self._lock:
            self._write_held()
            while self._entries:
                entry = next(iter(self._entries.values()))
                if entry.held is not None:
                    return entry, entry.held
                event = self._read(entry)
                if event is not None:
                    return entry, event
            return None

    def remove(self, entry: Spooled) -> None:
        """Forget a delivered entry (no-op when it was already shed); freed room goes to held events."""
        with self._lock:
            current = self._entries.get(entry.seq)
            if current is not None:
                self._delete(current)
                self._write_held()

    def write_held(self) -> int:
        """Try once more to write held events to disk; how many are still held."""
        with self._lock:
            self._write_held()
            return len(self._held)

    def _append_droppable(self, event: HealthEvent, data: bytes) -> bool:
        if self._held:
            return self._refuse(event, f"{len(self._held)} actionable event(s) wait in memory for disk room")
        if not self._make_room(len(data)):
            return self._refuse(event, "the spool's budget is taken by actionable events")
        entry = self._new_entry(actionable=False, size=len(data))
        try:
            write_durably(entry.path, data)
        except OSError as error:
            return self._refuse(event, f"the disk refused it ({error})")
        self._add(entry)
        return True

    def _append_fault(self, event: HealthEvent, data: bytes) -> None:
        entry = self._new_entry(actionable=True, size=len(data))
        if self._held:
            reason = "older actionable events are held in memory"
        elif not self._make_room(entry.size):
            limits = self.limits
            reason = f"no room beside the actionable events in the budget ({limits.max_entries} entries, {limits.max_bytes} bytes)"
        else:
            error = self._write(entry, data)
            if error is None:
                self._add(entry)
                return
            reason = f"the disk refused it ({error})"
        if self._held and self._held_bytes + entry.size > self.limits.max_held_bytes:
            self.refused_actionable += 1
            log.error(
                "spool %s: refused actionable event %s: %s, and %d held events fill the memory hold (%d bytes); "
                "its sender must retry",
                self.directory,
                event.id,
                reason,
                len(self._held),
                self.limits.max_held_bytes,
            )
            raise SpoolFull(f"spool {self.directory} cannot take actionable event {event.id}: {reason}")
        held = replace(entry, held=event)
        self._add(held)
        log.error(
            "spool %s: holding actionable event %s in memory (%d held): %s; it is delivered in order, and "
            "written to disk when there is room",
            self.directory,
            event.id,
            len(self._held),
            reason,
        )

    def _write(self, entry: Spooled, data: bytes) -> OSError | None:
        """Write an actionable entry, shedding non-actionable ones while the disk is full; the error that stayed."""
        while True:
            try:
                write_durably(entry.path, data)
            except OSError as error:
                if error.errno in _DISK_FULL and self._shed_oldest():
                    continue
                return error
            return None

    def _write_held(self) -> None:
        """Move held events to disk, oldest first, while the budget and the disk take them."""
        while self._held:
            entry = next(iter(self._held.values()))
            assert entry.held is not None
            if not self._make_room(entry.size):
                return
            if self._write(entry, entry.held.model_dump_json().encode()) is not None:
                return
            del self._held[entry.seq]
            self._held_bytes -= entry.size
            self._entries[entry.seq] = replace(entry, held=None)  # keeps its place in the order
            self._bytes += entry.size
            log.info("spool %s: actionable event %s held in memory is now on disk", self.directory, entry.held.id)

    def _make_room(self, size: int) -> bool:
        """Shed the oldest non-actionable entries until an entry of `size` bytes fits the budget."""
        limits = self.limits
        if size > limits.max_bytes:
            return False
        while len(self._entries) - len(self._held) + 1 > limits.max_entries or self._bytes + size > limits.max_bytes:
            if not self._shed_oldest():
                return False
        return True

    def _shed_oldest(self) -> bool:
        while self._droppable:
            entry = self._entries.get(self._droppable.popleft())
            if entry is not None:  # else removed after delivery
                self._delete(entry)
                self.shed += 1
                log.warning("spool %s: shed the oldest non-actionable event to make room", self.directory)
                return True
        return False

    def _refuse(self, event: HealthEvent, reason: str) -> bool:
        self.refused += 1
        log.warning("spool %s: refused non-actionable event %s: %s", self.directory, event.id, reason)
        return False

    def _new_entry(self, *, actionable: bool, size: int) -> Spooled:
        return Spooled(self._next_seq, actionable, self.directory / _name(self._next_seq, actionable), size)

    def _add(self, entry: Spooled) -> None:
        self._next_seq = entry.seq + 1
        self._entries[entry.seq] = entry
        if entry.held is not None:
            self._held[entry.seq] = entry
            self._held_bytes += entry.size
            return
        self._bytes += entry.size
        if not entry.actionable:
            self._droppable.append(entry.seq)

    def _delete(self, entry: Spooled) -> None:
        del self._entries[entry.seq]
        self._read_failures.pop(entry.seq, None)
        if entry.held is not None:
            del self._held[entry.seq]
            self._held_bytes -= entry.size
        else:
            self._bytes -= entry.size
        try:
            # Also for a held entry: a write that failed after its rename may have left the file.
            entry.path.unlink(missing_ok=True)
        except OSError as error:
            log.warning(
                "spool %s: could not delete %s (%s); a restart may deliver it again", self.directory, entry.path, error
            )

    def _read(self, entry: Spooled) -> HealthEvent | None:
        """The entry's event; None when it was moved aside or is gone; raises when it may be read later."""
        try:
            return HealthEvent.model_validate_json(read_entry(entry.path))
        except FileNotFoundError:
            log.warning("spool %s: entry %s is gone; skipping it", self.directory, entry.path.name)
            self._forget(entry)
        except OSError as error:
            failures = self._read_failures.get(entry.seq, 0) + 1
            if error.errno in _PROCESS_SHORT or (error.errno not in _UNREADABLE and failures < READ_ATTEMPTS):
                self._read_failures[entry.seq] = failures
                raise
            self._move_aside(entry, str(error))
        except (ValidationError, ValueError) as error:  # not JSON, not a health event, not UTF-8
            self._move_aside(entry, f"not a health event: {error}".splitlines()[0])
        return None

    def _move_aside(self, entry: Spooled, reason: str) -> None:
        self._forget(entry)
        aside = entry.path.with_name(entry.path.name + _ASIDE)
        try:
            entry.path.rename(aside)
        except OSError as error:
            log.error(
                "spool %s: entry %s cannot be read (%s) nor moved aside (%s); skipping it until the next start",
                self.directory,
                entry.path.name,
                reason,
                error,
            )
            return
        self.moved_aside += 1
        log.error(
            "spool %s: entry %s cannot be read (%s); moved aside to %s for a person to inspect; the lane goes on",
            self.directory,
            entry.path.name,
            reason,
            aside.name,
        )

    def _forget(self, entry: Spooled) -> None:
        del self._entries[entry.seq]
        self._read_failures.pop(entry.seq, None)
        self._bytes -= entry.size

    def _load(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        found: list[Spooled] = []
        aside = 0
        next_seq = 1
        for path in self.directory.iterdir():
            if path.name.endswith(".tmp"):
                self._remove_torn(path)
            elif path.name.endswith(_ASIDE):
                aside += 1
                # Sequence numbers stay unique, so a later entry moved aside never lands on an older one.
                if (parsed := _parse(path.with_name(path.name.removesuffix(_ASIDE)))) is not None:
                    next_seq = max(next_seq, parsed[0] + 1)
            elif (parsed := _parse(path)) is not None:
                found.append(Spooled(parsed[0], parsed[1], path, _size(path)))
        for entry in sorted(found, key=lambda e: e.seq):
            self._add(entry)
        self._next_seq = max(next_seq, max(self._entries, default=0) + 1)
        if found:
            log.info("spool %s holds %d events (%d bytes) from before", self.directory, len(found), self._bytes)
        if aside:
            log.warning(
                "spool %s: %d entries that could not be read lie there as *%s for a person to inspect and delete",
                self.directory,
                aside,
                _ASIDE,
            )

    def _remove_torn(self, path: Path) -> None:
        """A write interrupted by a crash; never acknowledged."""
        try:
            path.unlink(missing_ok=True)
        except OSError as error:
            log.warning("spool %s: cannot remove the torn write %s (%s)", self.directory, path.name, error)


def read_entry(path: Path) -> bytes:
    """An entry's bytes. Only a regular file is read: a symlink fails with ELOOP, a directory with
    EISDIR, anything else (a FIFO, a device) with EINVAL; opened without blocking, so a FIFO cannot
    hang the reader."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb") as file:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        return file.read()


def _name(seq: int, actionable: bool) -> str:
    return f"{seq:012d}.{_ACTIONABLE if actionable else _DROPPABLE}.json"


def _parse(path: Path) -> tuple[int, bool] | None:
    parts = path.name.split(".")
    if len(parts) != 3 or parts[2] != "json" or not parts[0].isdigit() or parts[1] not in (_ACTIONABLE, _DROPPABLE):
        return None
    return int(parts[0]), parts[1] == _ACTIONABLE


def _size(path: Path) -> int:
    """What a loaded entry counts against the budget: a regular file's size, else nothing."""
    try:
        info = path.lstat()
    except OSError:
        return 0
    return info.st_size if stat.S_ISREG(info.st_mode) else 0
