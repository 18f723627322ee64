"""The nodes a worker read a moment ago, for an ask for a permit that follows the read."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from kubernetes.aio.client.models import V1Node

from gpuheal.activities.kube import boot_id_of

# A remediation reads its node (is it on hold?) and asks for its permit in the same workflow task, a
# moment later: the ask reuses that read rather than read the node again (in a storm, a read per
# node the API server and the worker are spared).
FRESH_FOR = timedelta(seconds=5)


@dataclass(frozen=True, slots=True)
class SeenNode:
    """What an ask for a permit needs of its node: its labels (its budget group) and its boot."""

    labels: dict[str, str]
    boot_id: str
    seen_at: float


class RecentNodes:
    """Nodes read within the last `fresh_for`, by name; older reads are forgotten as new ones come."""

    def __init__(self, fresh_for: timedelta = FRESH_FOR, clock: Callable[[], float] = time.monotonic) -> None:
        self._fresh_for = fresh_for.total_seconds()
        self._clock = clock
        # Insertion order is reading order (a node read again moves to the end).
        self._seen: dict[str, SeenNode] = {}

    def remember(self, name: str, node: V1Node | None) -> SeenNode | None:
        """Keep what was read of `name` and return it (a node that does not exist is forgotten)."""
        now = self._clock()
        self._seen.pop(name, None)
        while self._seen and now - next(iter(self._seen.values())).seen_at > self._fresh_for:
            del self._seen[next(iter(self._seen))]
        if node is None:
            return None
        labels = dict((node.metadata.labels if node.metadata else None) or {})
        seen = self._seen[name] = SeenNode(labels=labels, boot_id=boot_id_of(node), seen_at=now)
        return seen

    def recall(self, name: str) -> SeenNode | None:
        """The read of `name` if it is fresh."""
        seen = self._seen.get(name)
        if seen is None or self._clock() - seen.seen_at > self._fresh_for:
            return None
        return seen
