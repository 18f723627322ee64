"""Flood control: one event per key (GPU, kind, code) per window, with a count of what it held back.

A failing GPU can write the same XID thousands of times a second. The first occurrence of a key opens
a window and passes; repeats inside the window are counted and dropped; the first occurrence after the
window passes again and carries the count of repeats the previous window dropped, so nothing is lost
from the record, only from the event stream.

A window remembers the last occurrence it dropped and when. `release` ends every window at once
and hands back the last drop of each window that dropped something since a given moment: the
monitor reports those when the node's remediation ends (see `KernelLogMonitor.remediation_ended`).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


@dataclass(slots=True)
class _Window(Generic[T]):
    opened_at: float
    repeats: int = 0
    last: T | None = None  # the last occurrence dropped, and when
    last_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Released(Generic[K, T]):
    """A window `release` ended: its key, the repeats it dropped and the last of them."""

    key: K
    repeats: int
    last: T | None


class Deduper(Generic[K, T]):
    """Admits the first occurrence of a key per `window` seconds of `clock`; an occurrence may carry an
    item (`T`), which the window keeps when it drops it.

    Memory is bounded by `max_keys`: windows are kept in the order they opened and the oldest go first.
    """

    def __init__(
        self, window: float = 60.0, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 10_000
    ) -> None:
        if window < 0:
            raise ValueError("the dedupe window must not be negative")
        self.window = window
        self._clock = clock
        self._max_keys = max(1, max_keys)
        self._windows: OrderedDict[K, _Window[T]] = OrderedDict()

    def admit(self, key: K, item: T | None = None) -> int | None:
        """None when the key repeats inside its window (counted, to be dropped); otherwise the number of
        repeats dropped in the key's previous window (0 for a first sighting), and a new window opens.
        """
        now = self._clock()
        current = self._windows.get(key)
        if current is not None and now - current.opened_at < self.window:
            current.repeats += 1
            current.last, current.last_at = item, now
            return None
        carried = current.repeats if current is not None else 0
        self._windows[key] = _Window[T](now)
        self._windows.move_to_end(key)
        self._prune(now)
        return carried

    def pending(self) -> dict[K, int]:
        """Repeats dropped so far in each key's open or last window (those not yet carried on)."""
        return {key: w.repeats for key, w in self._windows.items() if w.repeats}

    def forget(self, match: Callable[[K], bool]) -> None:
        """Drop the windows of the keys that match, so their next occurrence passes at once."""
        for key in [key for key in self._windows if match(key)]:
            del self._windows[key]

    def clear(self) -> None:
        """Drop every window."""
        self._windows.clear()

    def release(self, since: float) -> list[Released[K, T]]:
        """Drop every window; those that dropped an occurrence at or after `since`, with their last one."""
        released = [
            Released(key, window.repeats, window.last)
            for key, window in self._windows.items()
            if window.repeats and window.last_at >= since
        ]
        self._windows.clear()
        return released

    def __len__(self) -> int:
        return len(self._windows)

    def _prune(self, now: float) -> None:
        # Expired windows with nothing to carry are dead weight; they sit at the front (oldest first).
        while self._windows:
            key, oldest = next(iter(self._windows.items()))
            expired = now - oldest.opened_at >= self.window and not oldest.repeats
            if not expired and len(self._windows) <= self._max_keys:
                return
            del self._windows[key]
