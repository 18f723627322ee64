"""A bounded FIFO of health events for one dependency that cannot be reached: on disk, and in memory
for the faults the disk refuses.

Each entry is one file (see `spool_files`), written to a temporary name, flushed and renamed, so a
crash leaves either the whole entry or none. Entries appended together (`append_batch`, as a lane
writes the events that arrived while it was writing) share one flush of the directory, made before
any of them is reported taken; should it fail, each is treated as a write that failed after its
rename. The directory listing is the index: a new spool on the
same directory (after an agent restart) picks up where the old one stopped, in the same order. A
write that fails uses up its sequence number all the same (it may have failed after its rename,
when the directory would not flush, leaving its file), so no two entries share a number; should an
earlier run have left two files with one number, both are kept, ordered by number then name.

Two bounds hold on disk, `max_entries` and `max_bytes` (the entries' file sizes). When a new event
does not fit, the oldest non-actionable entries are shed to make room (`shed`); a non-actionable
event that still does not fit, or that the disk refuses, is refused (`refused`). So is every
non-actionable event while faults wait in memory: disk room that frees goes to the faults first.

An actionable event, a fault that should start a remediation, is never dropped. When only
actionable entries are left to fill the budget, or the disk refuses the write (ENOSPC and EDQUOT
first shed non-actionable entries and try again; EIO, EROFS and the rest do not), the event is held
in memory, as the JSON it would have been written as, in its place in the sequence: `head` hands it
out when its turn comes, so it neither overtakes older entries nor is overtaken, and every
`append`, `head` and `remove` first tries to write held events to disk again, oldest first. A held
event is lost if the agent dies before it is written or delivered, which is why the agent's
readiness fails while one is held (and why the lane, when it closes, keeps trying for a while). The
hold is bounded (`max_held_bytes` of JSON, at least one event): past it `append` raises
`SpoolFull`, the event is not taken, and its sender keeps it and retries.

An entry that cannot be read is moved aside as `<name>.bad`, with a log line, and the lane goes on.
Entries that can never be read (a directory, a FIFO or a symlink in an entry's place, no permission,
a body that is not a health event) are moved at once. Errors of the process, not of the entry
(EMFILE, ENFILE, ENOMEM, EAGAIN, EINTR) are raised to the caller to retry without limit: moving
every entry aside while the agent is out of file descriptors would throw the whole backlog away.
Any other read error (EIO, …) is raised too, for a while: a fault's entry is retried for
`read_retry` (ten minutes by default) from its first failed read, so a disk that is flaky for a
moment costs no remediation; any other entry is moved aside once it has failed `READ_ATTEMPTS` reads.
`.bad` files are never loaded again and take no part in the budget: they are kept for a person to
read, and counted in `moved_aside` (and logged at start, with how many lie in the directory). The
faults among them, this run's and earlier runs', are counted in `faults_aside`: each is a fault that
reaches no remediation until a person acts, and the agent's readiness says so.

Methods block on disk I/O; callers on an event loop run them in a thread. A lock keeps the index
consistent when they do so from several tasks; `stats` reads without it, for a scrape that must not
wait behind an fsync.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import NoReturn

from pydantic import ValidationError

from gpuheal.agents.durable_file import sync_directory, write_durably
from gpuheal.agents.publisher.spool_files import (
    ASIDE,
    DISK_FULL,
    PROCESS_SHORT,
    TORN,
    UNREADABLE,
    EntryName,
    entry_size,
    read_entry,
    unlink,
)
from gpuheal.agents.sink import SinkFull
from gpuheal.domain.health import HealthEvent

log = logging.getLogger(__name__)

MIB = 1024 * 1024

# How often an entry that is not a fault may fail to read with an error of neither kind before it is moved aside.
READ_ATTEMPTS = 5


class SpoolFull(SinkFull):
    """An actionable event was not taken: the disk refused it and the memory hold is full.

    Nothing of the event was kept; its sender must retry it later (the intake answers UNAVAILABLE).
    """


@dataclass(frozen=True, slots=True)
class SpoolLimits:
    """How much one lane's spool holds (entries and bytes on disk, bytes of faults held in memory), and
    for how long a fault's entry that fails to read (EIO, …) is retried before it is moved aside."""

    max_entries: int = 10_000
    max_bytes: int = 64 * MIB
    max_held_bytes: int = 8 * MIB
    read_retry: timedelta = timedelta(minutes=10)

    def __post_init__(self) -> None:
        for name in ("max_entries", "max_bytes", "max_held_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"spool {name} must be at least 1, not {getattr(self, name)}")
        if self.read_retry < timedelta(0):
            raise ValueError(f"spool read_retry must not be negative, not {self.read_retry}")


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """A snapshot of one spool, for metrics and readiness."""

    entries: int  # on disk
    bytes: int  # on disk
    held: int  # actionable events in memory, refused by the disk
    held_bytes: int  # their JSON
    shed: int  # non-actionable entries deleted to make room
    refused: int  # non-actionable events not taken
    refused_actionable: int  # actionable events not taken (SpoolFull): their senders retry
    moved_aside: int  # unreadable entries renamed to *.bad
    faults_aside: int  # actionable entries moved aside, now and by earlier runs: they wait for a person
    over_budget: bool  # more on disk than the limits allow (a smaller budget than the last run's)
    limit_bytes: int  # the budget on disk (`SpoolLimits.max_bytes`)


@dataclass(frozen=True, slots=True)
class Spooled:
    """One entry of the spool: its place in the order, whether it may be shed, its file's name in the
    spool's directory, and the JSON of its event while held in memory. The place is the number in the
    file's name, except for entries loaded at start, which are numbered in the order their files sort in."""

    seq: int
    actionable: bool
    name: str
    size: int
    held: bytes | None = None


@dataclass(slots=True)
class _ReadFailures:
    since: float  # the clock at the first failed read
    count: int = 0


class Spool:
    """Health events waiting for one dependency, oldest first, within `limits`.

    `clock` (monotonic seconds) times how long a fault's entry has failed to read.
    """

    def __init__(
        self, directory: Path, limits: SpoolLimits | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.directory = directory
        self.limits = limits or SpoolLimits()
        self.shed = 0
        self.refused = 0
        self.refused_actionable = 0
        self.moved_aside = 0
        self.faults_aside = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[int, Spooled] = {}  # in sequence order, on disk and held alike
        self._held: dict[int, Spooled] = {}  # in sequence order
        self._droppable: dict[int, None] = {}  # non-actionable entries on disk, oldest first
        self._bytes = 0
        self._held_bytes = 0
        self._read_failures: dict[int, _ReadFailures] = {}
        self._refusing = False  # a full hold was logged; logged again once the hold has emptied
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
            faults_aside=self.faults_aside,
            over_budget=self._bytes > self.limits.max_bytes or on_disk > self.limits.max_entries,
            limit_bytes=self.limits.max_bytes,
        )

    def append(self, event: HealthEvent, *, actionable: bool) -> bool:
        """Queue the event at the tail; False when a non-actionable event was refused.

        An actionable event is always queued, on disk or held in memory, unless the hold is full:
        then `SpoolFull` is raised and nothing was queued.
        """
        (taken,) = self.append_batch([(event, actionable)])
        if isinstance(taken, SpoolFull):
            raise taken
        return taken

    def append_batch(self, items: Sequence[tuple[HealthEvent, bool]]) -> list[bool | SpoolFull]:
        """`append` for each (event, actionable), in order; what `append` returns or raises for each.

        The entries' renames are flushed with one directory flush for the batch, before any of them
        is reported taken: a batch costs one flush of each entry's file and one of the directory.
        """
        encoded = [(event.id, event.model_dump_json().encode(), actionable) for event, actionable in items]
        with self._lock:
            self._write_held()
            written = [self._append_one(event_id, data, actionable) for event_id, data, actionable in encoded]
            return self._synced(encoded, written)

    def _append_one(self, event_id: str, data: bytes, actionable: bool) -> bool | Spooled | SpoolFull:
        try:
            return self._append_fault(event_id, data) if actionable else self._append_droppable(event_id, data)
        except SpoolFull as full:
            return full

    def _synced(
        self, encoded: Sequence[tuple[str, bytes, bool]], written: Sequence[bool | Spooled | SpoolFull]
    ) -> list[bool | SpoolFull]:
        """The batch's outcomes once the directory is flushed for the entries it wrote (a `Spooled`
        in `written`); should the flush fail, each of them still indexed is treated as a write that
        failed after its rename (see `_append_droppable` and `_append_fault`)."""
        error: OSError | None = None
        if any(isinstance(outcome, Spooled) for outcome in written):
            try:
                sync_directory(self.directory)
            except OSError as refused:
                error = refused
        taken: list[bool | SpoolFull] = []
        for (event_id, data, _), outcome in zip(encoded, written, strict=True):
            if not isinstance(outcome, Spooled):
                taken.append(outcome)
            elif error is None or self._entries.get(outcome.seq) is not outcome:  # flushed, or shed since
                taken.append(True)
            else:
                taken.append(self._unsure(event_id, outcome, data, f"the disk refused it ({error})"))
        return taken

    def _unsure(self, event_id: str, entry: Spooled, data: bytes, reason: str) -> bool | SpoolFull:
        """An entry whose rename may not have reached the disk: refused, or a fault held in memory in its place."""
        if not entry.actionable:
            self._delete(entry)
            return self._refuse(event_id, reason)
        if self._held and self._held_bytes + entry.size > self.limits.max_held_bytes:
            self._delete(entry)
            try:
                self._refuse_fault(event_id, reason)
            except SpoolFull as full:
                return full
        held = replace(entry, held=data)
        self._bytes -= entry.size
        self._entries[entry.seq] = held  # keeps its place in the order
        self._held = dict(sorted({**self._held, entry.seq: held}.items()))
        self._held_bytes += entry.size
        self._log_held(event_id, entry, reason)
        return True

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
                    return entry, HealthEvent.model_validate_json(entry.held)
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

    def held_ids(self) -> list[str]:
        """The ids of the events held in memory, oldest first."""
        with self._lock:
            return [
                HealthEvent.model_validate_json(entry.held).id
                for entry in self._held.values()
                if entry.held is not None
            ]

    def _append_droppable(self, event_id: str, data: bytes) -> bool | Spooled:
        """False when refused; the entry written, whose rename waits for the batch's directory flush."""
        if self._held:
            return self._refuse(event_id, f"{len(self._held)} actionable event(s) wait in memory for disk room")
        if not self._make_room(len(data)):
            return self._refuse(event_id, "the spool's budget is taken by actionable events")
        entry = self._new_entry(actionable=False, size=len(data))
        try:
            write_durably(self._path(entry), data, directory_sync=False)
        except OSError as error:
            # A write that failed after its rename left its file: refused, it must not linger unindexed.
            unlink(self._path(entry))
            return self._refuse(event_id, f"the disk refused it ({error})")
        self._add(entry)
        return entry

    def _append_fault(self, event_id: str, data: bytes) -> bool | Spooled:
        """The entry written, whose rename waits for the batch's directory flush; True when held in
        memory instead; `SpoolFull` raised when the hold is full too."""
        entry = self._new_entry(actionable=True, size=len(data))
        if self._held:
            reason = "older actionable events are held in memory"
        elif not self._make_room(entry.size):
            limits = self.limits
            reason = f"no room beside the actionable events in the budget ({limits.max_entries} entries, {limits.max_bytes} bytes)"
        else:
            error = self._write(entry, data, directory_sync=False)
            if error is None:
                self._add(entry)
                return entry
            reason = f"the disk refused it ({error})"
        if self._held and self._held_bytes + entry.size > self.limits.max_held_bytes:
            self._refuse_fault(event_id, reason)
        self._add(replace(entry, held=data))
        self._log_held(event_id, entry, reason)
        return True

    def _log_held(self, event_id: str, entry: Spooled, reason: str) -> None:
        log.error(
            "spool %s: holding actionable event %s in memory as %s (%d held): %s; it is delivered in order, and "
            "written to disk when there is room",
            self.directory,
            event_id,
            entry.name,
            len(self._held),
            reason,
        )

    def _refuse_fault(self, event_id: str, reason: str) -> NoReturn:
        """Raise `SpoolFull`; logged once until the hold has emptied again, since senders retry."""
        self.refused_actionable += 1
        if not self._refusing:
            self._refusing = True
            log.error(
                "spool %s: refusing actionable events (first %s: %s) while %d held events fill the memory hold "
                "(%d bytes); their senders keep them and retry",
                self.directory,
                event_id,
                reason,
                len(self._held),
                self.limits.max_held_bytes,
            )
        raise SpoolFull(f"spool {self.directory} cannot take actionable event {event_id}: {reason}")

    def _write(self, entry: Spooled, data: bytes, *, directory_sync: bool = True) -> OSError | None:
        """Write an actionable entry, shedding non-actionable ones while the disk is full; the error that stayed."""
        while True:
            try:
                write_durably(self._path(entry), data, directory_sync=directory_sync)
            except OSError as error:
                if error.errno in DISK_FULL and self._shed_oldest():
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
            if self._write(entry, entry.held) is not None:
                return
            del self._held[entry.seq]
            self._held_bytes -= entry.size
            self._entries[entry.seq] = replace(entry, held=None)  # keeps its place in the order
            self._bytes += entry.size
            log.info("spool %s: actionable event held in memory is now on disk as %s", self.directory, entry.name)
        self._refusing = False

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
        if not self._droppable:
            return False
        self._delete(self._entries[next(iter(self._droppable))])
        self.shed += 1
        log.warning("spool %s: shed the oldest non-actionable event to make room", self.directory)
        return True

    def _refuse(self, event_id: str, reason: str) -> bool:
        self.refused += 1
        log.warning("spool %s: refused non-actionable event %s: %s", self.directory, event_id, reason)
        return False

    def _new_entry(self, *, actionable: bool, size: int) -> Spooled:
        """An entry for the tail. Its number is used up whatever becomes of it, since a write that
        failed may have left its file."""
        name = EntryName(self._next_seq, actionable)
        self._next_seq += 1
        return Spooled(name.seq, actionable, name.name, size)

    def _path(self, entry: Spooled) -> Path:
        return self.directory / entry.name

    def _add(self, entry: Spooled) -> None:
        self._entries[entry.seq] = entry
        if entry.held is not None:
            self._held[entry.seq] = entry
            self._held_bytes += entry.size
            return
        self._bytes += entry.size
        if not entry.actionable:
            self._droppable[entry.seq] = None

    def _delete(self, entry: Spooled) -> None:
        self._forget(entry)
        # Also for a held entry: a write that failed after its rename may have left the file.
        if (error := unlink(self._path(entry))) is not None:
            log.warning(
                "spool %s: could not delete %s (%s); a restart may deliver it again", self.directory, entry.name, error
            )

    def _forget(self, entry: Spooled) -> None:
        del self._entries[entry.seq]
        self._read_failures.pop(entry.seq, None)
        self._droppable.pop(entry.seq, None)
        if entry.held is not None:
            del self._held[entry.seq]
            self._held_bytes -= entry.size
        else:
            self._bytes -= entry.size

    def _read(self, entry: Spooled) -> HealthEvent | None:
        """The entry's event; None when it was moved aside or is gone; raises when it may be read later."""
        try:
            return HealthEvent.model_validate_json(read_entry(self._path(entry)))
        except FileNotFoundError:
            log.warning("spool %s: entry %s is gone; skipping it", self.directory, entry.name)
            self._forget(entry)
        except OSError as error:
            if error.errno in PROCESS_SHORT or (error.errno not in UNREADABLE and self._keeps_trying(entry, error)):
                raise
            self._move_aside(entry, str(error))
        except (ValidationError, ValueError) as error:  # not JSON, not a health event, not UTF-8
            self._move_aside(entry, f"not a health event: {error}".splitlines()[0])
        return None

    def _keeps_trying(self, entry: Spooled, error: OSError) -> bool:
        """Count a read that failed for no fault of the entry (EIO, …); False once it is time to give
        up: a fault's entry after `read_retry`, any other after `READ_ATTEMPTS` reads."""
        now = self._clock()
        failures = self._read_failures.get(entry.seq)
        if failures is None:
            failures = self._read_failures[entry.seq] = _ReadFailures(now)
            if entry.actionable:
                log.warning(
                    "spool %s: fault entry %s cannot be read (%s); retrying it for up to %.0f s before moving it aside",
                    self.directory,
                    entry.name,
                    error,
                    self.limits.read_retry.total_seconds(),
                )
        failures.count += 1
        if entry.actionable:
            return now - failures.since < self.limits.read_retry.total_seconds()
        return failures.count < READ_ATTEMPTS

    def _move_aside(self, entry: Spooled, reason: str) -> None:
        self._forget(entry)
        # A fault that is not delivered now waits for a person, whether or not the rename works.
        self.faults_aside += entry.actionable
        consequence = (
            "a fault that reaches no remediation until a person acts" if entry.actionable else "the lane goes on"
        )
        aside = entry.name + ASIDE
        try:
            self._path(entry).rename(self.directory / aside)
        except OSError as error:
            log.error(
                "spool %s: entry %s cannot be read (%s) nor moved aside (%s); skipping it until the next start: %s",
                self.directory,
                entry.name,
                reason,
                error,
                consequence,
            )
            return
        self.moved_aside += 1
        log.error(
            "spool %s: entry %s cannot be read (%s); moved aside to %s for a person to inspect: %s",
            self.directory,
            entry.name,
            reason,
            aside,
            consequence,
        )

    def _load(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        found: list[tuple[EntryName, Path]] = []
        aside = 0
        next_seq = 1
        for path in self.directory.iterdir():
            if path.name.endswith(TORN):
                self._remove_torn(path)
            elif path.name.endswith(ASIDE):
                aside += 1
                # Sequence numbers stay unique, so a later entry moved aside never lands on an older one.
                if (name := EntryName.parse(path.name.removesuffix(ASIDE))) is not None:
                    next_seq = max(next_seq, name.seq + 1)
                    self.faults_aside += name.actionable
            elif (name := EntryName.parse(path.name)) is not None:
                found.append((name, path))
                next_seq = max(next_seq, name.seq + 1)
        # Places follow the files' order, by number then name: two files that an earlier version gave
        # one number are both kept, and neither overwrites the other in the index.
        ordered = sorted(found, key=lambda pair: (pair[0].seq, pair[1].name))
        for place, (name, path) in enumerate(ordered, start=1):
            self._add(Spooled(place, name.actionable, path.name, entry_size(path)))
        self._next_seq = max(next_seq, len(ordered) + 1)
        if found:
            log.info("spool %s holds %d events (%d bytes) from before", self.directory, len(found), self._bytes)
        if aside:
            log.warning(
                "spool %s: %d entries that could not be read (%d of them faults) lie there as *%s for a person to "
                "inspect and delete",
                self.directory,
                aside,
                self.faults_aside,
                ASIDE,
            )

    def _remove_torn(self, path: Path) -> None:
        """A write interrupted by a crash; never acknowledged."""
        if (error := unlink(path)) is not None:
            log.warning("spool %s: cannot remove the torn write %s (%s)", self.directory, path.name, error)
