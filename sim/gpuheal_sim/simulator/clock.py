"""Keyed timers on the event loop, so simulated delays can be replaced, cancelled and cleaned up.

Every delayed action of the simulation (a pod starting, a grace period ending, a reboot
finishing) is a timer with a key: scheduling the same key again replaces the old timer, and
``cancel_all`` at shutdown leaves nothing behind. ``soon`` runs work on the next loop turn, once
per key however often it is requested in this turn (the controllers' work queue).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable

log = logging.getLogger(__name__)


class Timers:
    def __init__(self) -> None:
        self._handles: dict[Hashable, asyncio.Handle] = {}
        self.closed = False

    def _run(self, key: Hashable, fn: Callable[[], None]) -> None:
        self._handles.pop(key, None)
        try:
            fn()
        except Exception:  # one broken simulated action must not stop the others
            log.exception("simulator timer %r failed", key)

    def later(self, key: Hashable, delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` after ``delay`` seconds, replacing any timer with the same key."""
        if self.closed:
            return
        self.cancel(key)
        loop = asyncio.get_running_loop()
        if delay <= 0:
            self._handles[key] = loop.call_soon(self._run, key, fn)
        else:
            self._handles[key] = loop.call_later(delay, self._run, key, fn)

    def soon(self, key: Hashable, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the next loop turn unless a timer with this key is already pending."""
        if self.closed or key in self._handles:
            return
        self._handles[key] = asyncio.get_running_loop().call_soon(self._run, key, fn)

    @staticmethod
    def now() -> float:
        """The event loop's clock, the one the timers run on."""
        return asyncio.get_running_loop().time()

    def pending(self, key: Hashable) -> bool:
        return key in self._handles

    def cancel(self, key: Hashable) -> None:
        handle = self._handles.pop(key, None)
        if handle is not None:
            handle.cancel()

    def cancel_all(self) -> None:
        self.closed = True
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()
