"""When the remediation holding the agent's node ends, from the node's `gpuheal.io/remediation` mark.

A remediation writes the workflow that holds the node into the `gpuheal.io/remediation` annotation
when it quarantines the node, and removes it with its other marks when it ends resolved or stood
down; an escalated remediation leaves its marks for a person, whose removing them ends it. The agent
follows its own Node (the order watcher's list/watch), and `RemediationHolds.observe` sees every
state of it: when the annotation is gone, or names another remediation, the one before has ended, and
`on_end` runs (on a task of its own) with the moment the node was last seen held.

The kernel-log monitor needs this because its flood-control windows outlive a remediation that ends
without a reboot or a GPU reset (see `KernelLogMonitor.remediation_ended`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from gpuheal.domain.marks import REMEDIATION_ANNOTATION

log = logging.getLogger(__name__)

# Told that the node's remediation ended; the argument is when (monotonic seconds) it was last seen held.
OnEnd = Callable[[float], Coroutine[Any, Any, object]]


class RemediationHolds:
    """Follows which remediation holds the node (see the module docstring)."""

    def __init__(self, on_end: OnEnd, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._on_end = on_end
        self._clock = clock
        self._holder: str | None = None
        self._held_seen_at = 0.0
        self._tasks: set[asyncio.Task[object]] = set()

    @property
    def holder(self) -> str | None:
        """The remediation holding the node as last seen (None: none)."""
        return self._holder

    def observe(self, node: Mapping[str, Any]) -> None:
        """A state of the node, in the order the API server served them; must run on the event loop."""
        annotations = (node.get("metadata") or {}).get("annotations") or {}
        found = annotations.get(REMEDIATION_ANNOTATION) if isinstance(annotations, Mapping) else None
        holder = str(found) if found else None
        now = self._clock()
        previous, held_seen_at = self._holder, self._held_seen_at
        self._holder = holder
        if holder is not None:
            self._held_seen_at = now
        if previous is None or previous == holder:
            return
        log.info("the remediation %s of this node ended (its marks are gone): faults are news again", previous)
        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(
            self._on_end(held_seen_at), name="gpuheal-remediation-ended"
        )
        self._tasks.add(task)
        task.add_done_callback(self._done)

    async def close(self) -> None:
        """Stop what `on_end` is still doing."""
        tasks, self._tasks = self._tasks, set()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):  # a failure was logged by `_done`
                await task

    def _done(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("acting on the end of this node's remediation failed", exc_info=task.exception())
