"""Watch fan-out: every cache write becomes one event that each open watch receives, in order.

A watch starts with what the watcher has not seen yet, then follows live writes:

- without a resource version (or "0"): the current state, one ADDED event per GPU (sorted by name);
- with the cache's current version: nothing, only what happens next;
- with an older version still in the recent history (the last `history_size` writes, and no more
  than `history_bytes` of them): the events after it, replayed in order; older than that (or from
  before a restart, i.e. ahead of the cache) the watch is refused with OUT_OF_RANGE, and the client
  lists again and watches from the list's `ListMeta.resource_version`, as Kubernetes informers do.

A write never waits for a watcher. Each watch has a bounded queue of live events (`queue_size`
events and `queue_bytes` bytes); a write offers its event to every queue without blocking, and a
watch whose queue is full has fallen too far behind: it is dropped on the spot (unsubscribed, its
queue freed) while the writer and every other watcher carry on, and its stream ends with
RESOURCE_EXHAUSTED. The client sees that status after the events already in flight to it (HTTP/2
puts a stream's trailers after its data), then lists and watches again. The starting state does not
count against the queue.

A writer is paced between its calls, as gRPC paces it: a gRPC call takes the writer several turns
of the event loop, in which the watch streams send what was queued, so a watcher that reads as
fast as its stream sends never falls behind. A caller in the server's process (`room`, after each
write) has no transport to pace it, and could write a node's 1,024 GPUs in one turn: one turn is
not enough either (a stream sends an event per completion from gRPC's poller, and falls behind by
about one event in two writes). So it waits while a watch holds more than half its queue, for the
watch to take events, up to what its calls would have cost over gRPC (`PACE_PER_WRITE` each, with
up to `PACE_SAVED` saved for a watcher's pause): a watcher that keeps up with a gRPC writer keeps
up with it too; one slower, or stuck, falls behind as it would over gRPC and is dropped.

Events are built once per write and shared by all queues; they are read-only. Bytes are counted as
the event's serialized size. Since every queue holds a run of the latest writes, the events all
queues hold together stay within `queue_bytes`, as the history stays within `history_bytes`,
however large the writes are: memory is bounded in bytes, not only in events.

A watch's starting state is not copied up front: the watch keeps the cache's stored GPUs (shared,
never mutated) and builds each ADDED event as it is sent, so a watch from version 0 costs a
reference per GPU, not a copy of the cache. (A GPU written since the watch started stays alive in
its old state until that watch has sent it.)

At most `max_watches` watches are served at once (a dropped watch counts until its stream ends);
one more is refused with RESOURCE_EXHAUSTED naming the limit, and the client tries again later.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections import deque
from collections.abc import Iterator, Sequence

from gpuheal.agents.device_api.cache import ADDED, CacheEvent, GpuCache, parse_resource_version
from gpuheal.agents.device_api.errors import (
    ExpiredError,
    ShuttingDownError,
    TooManyWatchesError,
    WatchDroppedError,
)
from gpuheal.protos import gpu_pb2

DEFAULT_QUEUE_SIZE = 4096  # a write to every one of 1,024 GPUs, four times over, before a drop
DEFAULT_HISTORY_SIZE = 4096
DEFAULT_QUEUE_BYTES = 16 * 1024 * 1024
DEFAULT_HISTORY_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_WATCHES = 64  # device plugins, DRA drivers and tools: a handful each
# Seconds a writer in the server's process may wait for the watches per write, about what a gRPC
# call over the local socket costs its caller, and at most saved over writes.
PACE_PER_WRITE = 0.001
PACE_SAVED = 1.0


class WatchState(enum.Enum):
    OPEN = "open"
    DROPPED = "dropped"  # fell behind: its queue overflowed
    CLOSED = "closed"  # ended by the server (shutting down) or by the watcher going away


def _added(gpus: Sequence[gpu_pb2.Gpu]) -> Iterator[gpu_pb2.WatchGpusResponse]:
    """The ADDED event of each GPU, each built when it is asked for."""
    for gpu in gpus:
        yield gpu_pb2.WatchGpusResponse(type=ADDED, object=gpu)


class Subscription:
    """One watcher's view: its starting events, then a bounded queue of live ones.

    The starting events come from `backlog`, `backlog_size` of them, taken one at a time as they
    are sent. `next()` hands out events in order and raises once the watch has ended:
    WatchDroppedError (RESOURCE_EXHAUSTED) when it was dropped, ShuttingDownError (UNAVAILABLE)
    when the server closed it.
    """

    def __init__(
        self,
        backlog: Iterator[gpu_pb2.WatchGpusResponse],
        backlog_size: int,
        capacity: int,
        capacity_bytes: int,
        progress: asyncio.Event,
    ) -> None:
        self._backlog = backlog
        self._backlog_left = backlog_size
        self._live: deque[tuple[gpu_pb2.WatchGpusResponse, int]] = deque()
        self._capacity = capacity
        self._capacity_bytes = capacity_bytes
        self._wakeup = asyncio.Event()
        self._progress = progress  # set whenever it takes a live event or ends: writers may wait on it
        self.state = WatchState.OPEN
        self.queued_bytes = 0  # of the live events queued

    @property
    def pending(self) -> int:
        """Events queued and not yet handed out."""
        return self._backlog_left + len(self._live)

    @property
    def crowded(self) -> bool:
        """More than half its queue is taken (in events or bytes): a writer in the process waits for it."""
        return len(self._live) > self._capacity // 2 or self.queued_bytes > self._capacity_bytes // 2

    def offer(self, event: gpu_pb2.WatchGpusResponse, size: int) -> bool:
        """Queue a live event of `size` bytes without blocking; False (and the watch dropped) if the queue is full."""
        if self.state is not WatchState.OPEN:
            return False
        if len(self._live) >= self._capacity or self.queued_bytes + size > self._capacity_bytes:
            self._end(WatchState.DROPPED)
            return False
        self._live.append((event, size))
        self.queued_bytes += size
        self._wakeup.set()
        return True

    def close(self) -> None:
        """End the watch from the server's side (no effect once ended)."""
        if self.state is WatchState.OPEN:
            self._end(WatchState.CLOSED)

    async def next(self) -> gpu_pb2.WatchGpusResponse:
        """The next event, waiting for one; raises once the watch has ended (see the class doc)."""
        while True:
            if self.state is WatchState.DROPPED:
                raise WatchDroppedError(
                    f"watch dropped: it fell more than {self._capacity} events or {self._capacity_bytes} bytes "
                    "behind; list again and watch from the list's resource_version"
                )
            if self.state is WatchState.CLOSED:
                raise ShuttingDownError("watch closed: the device API server is shutting down")
            if self._backlog_left:
                self._backlog_left -= 1
                return next(self._backlog)
            if self._live:
                event, size = self._live.popleft()
                self.queued_bytes -= size
                self._progress.set()
                return event
            self._wakeup.clear()
            await self._wakeup.wait()

    def _end(self, state: WatchState) -> None:
        self.state = state
        # Free what it held at once: a dropped watcher must not pin memory until its client goes.
        self._backlog, self._backlog_left = iter(()), 0
        self._live.clear()
        self.queued_bytes = 0
        self._wakeup.set()
        self._progress.set()


class WatchHub:
    """Fans cache writes out to every open watch; register `publish` as a cache listener.

    `open()` and `publish()` never await, so a watch opened between two writes starts exactly
    between them: nothing missed, nothing twice.
    """

    def __init__(
        self,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        history_size: int = DEFAULT_HISTORY_SIZE,
        *,
        queue_bytes: int = DEFAULT_QUEUE_BYTES,
        history_bytes: int = DEFAULT_HISTORY_BYTES,
        max_watches: int = DEFAULT_MAX_WATCHES,
    ) -> None:
        if queue_size < 1 or queue_bytes < 1:
            raise ValueError(f"a watch queue holds at least one event and one byte, not {queue_size}/{queue_bytes}")
        if max_watches < 1:
            raise ValueError(f"max_watches must be at least 1, not {max_watches}")
        self._max_watches = max_watches
        self._queue_size = queue_size
        self._queue_bytes = queue_bytes
        self._history_size = max(history_size, 0)
        self._history_budget = max(history_bytes, 0)
        # (version, event, its size), oldest first, and the sum of the sizes.
        self._history: deque[tuple[int, gpu_pb2.WatchGpusResponse, int]] = deque()
        self.history_bytes = 0
        self._subscriptions: set[Subscription] = set()  # receiving live events
        self._streams: set[Subscription] = set()  # opened and not yet closed by their stream
        self.dropped_total = 0
        self.accepting = True  # False between close_all() and the server starting again
        self._progress = asyncio.Event()  # a watch took a live event or ended
        self._pace_left = PACE_SAVED  # seconds writers may still wait for the watches (see `room`)

    @property
    def watchers(self) -> int:
        """Watches currently receiving events."""
        return len(self._subscriptions)

    @property
    def streams(self) -> int:
        """Watches whose streams have not finished yet (a dropped watch counts until its stream ends)."""
        return len(self._streams)

    def publish(self, event: CacheEvent) -> None:
        """Offer one write to every open watch; drop those that cannot take it."""
        message = gpu_pb2.WatchGpusResponse(type=event.type, object=event.gpu)
        size = message.ByteSize()
        self._history.append((event.resource_version, message, size))
        self.history_bytes += size
        while self._history and (len(self._history) > self._history_size or self.history_bytes > self._history_budget):
            self.history_bytes -= self._history.popleft()[2]
        dropped = [sub for sub in self._subscriptions if not sub.offer(message, size)]
        for sub in dropped:
            self._subscriptions.discard(sub)
            self.dropped_total += 1

    async def room(self) -> None:
        """Pace a writer in the server's process after each write, as its gRPC call would (module docstring).

        One turn of the event loop at least; while a watch holds more than half its queue, waiting
        for the watches to take events, for no longer in all than gRPC calls would have taken.
        """
        self._pace_left = min(self._pace_left + PACE_PER_WRITE, PACE_SAVED)
        if not self._crowded():
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        while self._pace_left > 0 and self._crowded():
            self._progress.clear()
            started = loop.time()
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._pace_left):
                        await self._progress.wait()
            finally:
                self._pace_left = max(self._pace_left - (loop.time() - started), 0.0)

    def _crowded(self) -> bool:
        return any(sub.crowded for sub in self._subscriptions)

    def open(self, cache: GpuCache, resource_version: str = "") -> Subscription:
        """Start a watch from `resource_version` (see the module docstring for what it receives)."""
        if not self.accepting:
            raise ShuttingDownError("the device API server is shutting down")
        if len(self._streams) >= self._max_watches:
            raise TooManyWatchesError(
                f"{len(self._streams)} watches are open, at most {self._max_watches} are served at once "
                "(max_watches); close one or try again later"
            )
        since = parse_resource_version(resource_version, "opts.resource_version")
        current = cache.resource_version
        if since == 0:
            _, gpus = cache.snapshot()
            backlog, size = _added(gpus), len(gpus)
        else:
            replayed = [] if since == current else self._replay(since, current)
            backlog, size = iter(replayed), len(replayed)
        sub = Subscription(backlog, size, self._queue_size, self._queue_bytes, self._progress)
        self._subscriptions.add(sub)
        self._streams.add(sub)
        return sub

    def close(self, sub: Subscription) -> None:
        """Forget a watch (its stream ended); safe to call more than once."""
        sub.close()
        self._subscriptions.discard(sub)
        self._streams.discard(sub)

    def close_all(self) -> None:
        """End every open watch and refuse new ones (until `accepting` is set again)."""
        self.accepting = False
        for sub in list(self._streams):
            sub.close()
        self._subscriptions.clear()

    def _replay(self, since: int, current: int) -> list[gpu_pb2.WatchGpusResponse]:
        oldest = self._history[0][0] if self._history else current + 1
        if since > current or since < oldest - 1:
            kept = f"{oldest}..{current}" if self._history else "none"
            raise ExpiredError(
                f"resource_version {since} is too old or unknown (events kept: {kept}); "
                "list again and watch from the list's resource_version"
            )
        return [message for version, message, _ in self._history if version > since]
