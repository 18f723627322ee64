"""A bounded FIFO of health events on disk, for one dependency that cannot be reached.

Each entry is one JSON file named `<sequence>.<a|n>.json` (`a` for actionable, `n` for not), written
to a temporary name, flushed and renamed, so a crash leaves either the whole entry or none. The
directory listing is the index: a new spool on the same directory (after an agent restart) picks
up where the old one stopped, in the same order.

The bound counts entries. When it is reached, the oldest non-actionable entry makes room; when
every entry is actionable, a new non-actionable event is refused, and a new actionable one is kept
anyway, over the bound: a fault that should start a remediation is never dropped.

Methods block on disk I/O; callers on an event loop run them in a thread. A lock keeps the index
consistent when they do so from several tasks.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from gpuheal.agents.durable_file import write_durably
from gpuheal.domain.health import HealthEvent

log = logging.getLogger(__name__)

_ACTIONABLE = "a"
_DROPPABLE = "n"


@dataclass(frozen=True, slots=True)
class Spooled:
    """One entry of the spool: where it lies and whether it may be dropped."""

    seq: int
    actionable: bool
    path: Path


class Spool:
    """Health events waiting for one dependency, oldest first, bounded by `max_entries`."""

    def __init__(self, directory: Path, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("a spool holds at least one entry")
        self.directory = directory
        self.max_entries = max_entries
        self.dropped = 0
        self.refused = 0
        self._lock = threading.Lock()
        self._entries: dict[int, Spooled] = {}  # in sequence order
        self._droppable: deque[int] = deque()  # non-actionable sequences, oldest first; may hold removed ones
        self._next_seq = 1
        self._load()

    def __len__(self) -> int:
        return len(self._entries)

    def append(self, event: HealthEvent, *, actionable: bool) -> bool:
        """Write the event at the tail; False when it was refused because the bound is full of faults."""
        with self._lock:
            if len(self._entries) >= self.max_entries:
                victim = self._oldest_droppable()
                if victim is not None:
                    self._delete(victim)
                    self.dropped += 1
                    log.warning("spool %s is full: dropped the oldest non-actionable event", self.directory)
                elif not actionable:
                    self.refused += 1
                    log.error(
                        "spool %s is full of actionable events: refused non-actionable event %s",
                        self.directory,
                        event.id,
                    )
                    return False
                else:
                    log.error(
                        "spool %s is full of actionable events: keeping event %s over the bound",
                        self.directory,
                        event.id,
                    )
            entry = Spooled(self._next_seq, actionable, self.directory / _name(self._next_seq, actionable))
            write_durably(entry.path, event.model_dump_json().encode())
            self._next_seq += 1
            self._entries[entry.seq] = entry
            if not actionable:
                self._droppable.append(entry.seq)
            return True

    def head(self) -> tuple[Spooled, HealthEvent] | None:
        """The oldest entry and its event, or None when empty.

        An entry that is gone or does not parse is discarded; any other read error (EMFILE, EIO) is
        raised, because the entry may be an actionable fault and the disk may recover.
        """
        with self._lock:
            while self._entries:
                entry = next(iter(self._entries.values()))
                try:
                    return entry, HealthEvent.model_validate_json(entry.path.read_bytes())
                except (FileNotFoundError, ValidationError, ValueError) as error:
                    log.error("discarding unreadable spool entry %s: %s", entry.path, error)
                    self._delete(entry)
            return None

    def remove(self, entry: Spooled) -> None:
        """Forget a delivered entry (no-op when it was already dropped to make room)."""
        with self._lock:
            if entry.seq in self._entries:
                self._delete(entry)

    def _oldest_droppable(self) -> Spooled | None:
        while self._droppable:
            entry = self._entries.get(self._droppable[0])
            if entry is not None:
                return entry
            self._droppable.popleft()  # removed after delivery
        return None

    def _delete(self, entry: Spooled) -> None:
        del self._entries[entry.seq]
        entry.path.unlink(missing_ok=True)

    def _load(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        found: list[Spooled] = []
        for path in self.directory.iterdir():
            parsed = _parse(path)
            if parsed is not None:
                found.append(parsed)
            elif path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)  # a write interrupted by a crash; never acknowledged
        for entry in sorted(found, key=lambda e: e.seq):
            self._entries[entry.seq] = entry
            if not entry.actionable:
                self._droppable.append(entry.seq)
        if found:
            self._next_seq = max(self._entries) + 1
            log.info("spool %s holds %d events from before", self.directory, len(found))


def _name(seq: int, actionable: bool) -> str:
    return f"{seq:012d}.{_ACTIONABLE if actionable else _DROPPABLE}.json"


def _parse(path: Path) -> Spooled | None:
    parts = path.name.split(".")
    if len(parts) != 3 or parts[2] != "json" or not parts[0].isdigit() or parts[1] not in (_ACTIONABLE, _DROPPABLE):
        return None
    return Spooled(int(parts[0]), parts[1] == _ACTIONABLE, path)
