"""Ordered, at-least-once delivery of health events to one dependency, spooling while it is away.

While the lane's spool is empty, an event is delivered at once, one at a time, so deliveries keep
the order events were submitted in. When the dependency cannot be reached (`DependencyUnavailable`
or the delivery timeout), or is too slow for the hand-off (an event not delivered within
`hand_off` of its submit, waiting behind the lane's earlier events included), the event goes to
the spool and so does every later event, until a background loop has delivered the spool's
backlog in order, retrying with exponential backoff. So a dependency that slows down under load
costs the senders a spool write each, instead of holding every one of them for its latency times
the number of events ahead of theirs (the intake's throughput fell to a few events per second).
Events on their way to the spool are written in batches: those that arrive while the lane writes
go together in its next write, with one directory flush for the batch (`Spool.append_batch`).
`submit` returns once the event is delivered, spooled (on disk, or held in memory when the disk
refuses a fault), refused by a full spool (non-actionable events only), or dropped after a
permanent failure (logged). It raises `SpoolFull` only for an actionable event that neither the
disk nor the spool's memory hold can take: the caller still has it and must retry.

`close` stops the background loop; what is spooled on disk waits for the next run. Faults held in
memory (the disk refused them) would die with the process, so while any is held `close` goes on
delivering the backlog and trying the disk for up to `shutdown_grace`, and logs each fault
still held after that, by event id, as lost.

A delivery that timed out may still have happened, so it can happen twice: backends must be
idempotent per event (signal-with-start dedupes the event id; patches set a state; Kubernetes
Events are named after the event id).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from gpuheal.agents.publisher.errors import DependencyUnavailable
from gpuheal.agents.publisher.spool import Spool, SpoolStats
from gpuheal.domain.health import HealthEvent

log = logging.getLogger(__name__)

Deliver = Callable[[HealthEvent], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """How long one delivery may take, how long a submitted event may wait for its lane before it is
    spooled instead, how the backlog is retried, and how long `close` goes on for faults held in
    memory (well under the pod's termination grace period)."""

    delivery_timeout: timedelta = timedelta(seconds=10)
    # From `submit` to the event delivered, waiting behind the lane's earlier events included; past
    # it the event is spooled and the backlog delivers it (with `delivery_timeout`). A dependency
    # that slows down under load then costs a sender a spool write, not its latency times the queue.
    # Far above a healthy dependency's answer (tens of ms): a request cut short may have reached the
    # dependency, and the backlog sends it again (delivery is at least once; every dependency takes
    # an event again by its id), so that should be the slow dependency's case, not the common one.
    hand_off: timedelta = timedelta(seconds=1)
    initial_backoff: timedelta = timedelta(seconds=0.5)
    max_backoff: timedelta = timedelta(seconds=30)
    shutdown_grace: timedelta = timedelta(seconds=15)


class Lane:
    """One dependency's delivery queue: direct while healthy, through the spool while not."""

    def __init__(self, name: str, deliver: Deliver, spool: Spool, retry: RetrySettings) -> None:
        self.name = name
        self._deliver = deliver
        self._spool = spool
        self._retry = retry
        self._lock = asyncio.Lock()
        self._backlog: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        # Events to spool, in order, with what their senders wait on; written a batch at a time by `_writer`.
        self._to_write: list[tuple[HealthEvent, bool, asyncio.Future[None]]] = []
        self._writing = 0  # events taken by the writer and not yet written
        self._writer: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Events spooled, or being spooled, and not yet delivered."""
        return self._queued()

    def stats(self) -> SpoolStats:
        """The lane's spool as it stands."""
        return self._spool.stats()

    def start(self) -> None:
        """Resume delivering what a previous run left in the spool."""
        if len(self._spool):
            log.info("%s: resuming delivery of %d spooled events", self.name, len(self._spool))
            self._wake()

    async def submit(self, event: HealthEvent, *, actionable: bool) -> None:
        """Deliver the event now, or spool it behind the backlog; spooled too when it cannot be
        delivered within the hand-off (see `RetrySettings.hand_off`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._retry.hand_off.total_seconds()
        async with self._lock:
            # Waiting for the lock is waiting behind earlier deliveries: it counts against the hand-off.
            if not self._queued() and await self._attempt(event, deadline - loop.time()):
                return
            written = loop.create_future()
            self._to_write.append((event, actionable, written))
            if self._writer is None or self._writer.done():
                self._writer = asyncio.create_task(self._write(), name=f"publisher-{self.name}-spool")
        # Shielded: a sender cancelled while its event is written leaves it to be delivered all the same.
        await asyncio.shield(written)

    def _queued(self) -> int:
        """Events in the spool or on their way to it: a new event goes behind them."""
        return len(self._spool) + len(self._to_write) + self._writing

    async def _write(self) -> None:
        """Spool the events waiting to be written, as one batch each time (one directory flush for
        the lot), and tell their senders; events that arrive meanwhile make the next batch."""
        while self._to_write:
            batch, self._to_write = self._to_write, []
            self._writing = len(batch)
            taken: Sequence[bool | Exception]
            try:
                taken = await asyncio.to_thread(
                    self._spool.append_batch, [(e, actionable) for e, actionable, _ in batch]
                )
            except Exception as error:  # not one of the spool's own outcomes: each sender hears it
                taken = [error for _ in batch]
            finally:
                self._writing = 0
            for (_, _, written), outcome in zip(batch, taken, strict=True):
                if isinstance(outcome, Exception):
                    written.set_exception(outcome)
                else:
                    written.set_result(None)
            if len(self._spool):  # a batch that failed may still have left entries behind
                self._wake()

    async def wait_idle(self) -> None:
        """Return once the spool is empty (everything submitted so far has been delivered)."""
        while len(self._spool):
            await self._idle.wait()
            await asyncio.sleep(0)  # an idle flag not yet cleared by a racing append must not spin the loop

    async def close(self) -> None:
        """Stop the backlog loop; undelivered events stay in the spool for the next run.

        Faults held in memory are delivered or written to disk first, for up to `shutdown_grace`;
        each one still held then is lost, and logged by its event id.
        """
        if self._writer is not None:  # events being written have senders waiting on them: the write
            # goes on to tell them even if `close` is itself cancelled
            await asyncio.gather(asyncio.shield(self._writer), return_exceptions=True)
        if self._spool.stats().held:
            await self._save_held()
        task, self._backlog = self._backlog, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        lost = await asyncio.to_thread(self._spool.held_ids)
        for event_id in lost:
            log.error(
                "%s: actionable event %s held in memory is lost: the agent stops before it was delivered "
                "or written to disk",
                self.name,
                event_id,
            )

    async def _save_held(self) -> None:
        """Deliver the backlog and retry the disk until no fault is held in memory or the grace is over."""
        grace = self._retry.shutdown_grace.total_seconds()
        log.warning(
            "%s: stopping with %d actionable events held in memory; delivering them or writing them to disk for up "
            "to %.0f s",
            self.name,
            self._spool.stats().held,
            grace,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        delay = self._retry.initial_backoff.total_seconds()
        while await asyncio.to_thread(self._spool.write_held):
            self._wake()  # the backlog hands held faults out from memory in their turn
            left = deadline - loop.time()
            if left <= 0:
                return
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, self._retry.max_backoff.total_seconds())

    def _wake(self) -> None:
        self._idle.clear()
        if self._backlog is None or self._backlog.done():
            self._backlog = asyncio.create_task(self._deliver_backlog(), name=f"publisher-{self.name}-backlog")
            self._backlog.add_done_callback(self._report_failure)

    def _report_failure(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "%s: backlog delivery stopped; it resumes with the next event", self.name, exc_info=task.exception()
            )

    async def _deliver_backlog(self) -> None:
        delay = self._retry.initial_backoff.total_seconds()
        # The emptiness check runs on the loop, after every append's bookkeeping: no entry is stranded.
        while len(self._spool):
            try:
                item = await asyncio.to_thread(self._spool.head)
            except OSError as error:
                log.warning("%s: cannot read the spool (%s); retrying", self.name, error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry.max_backoff.total_seconds())
                continue
            if item is None:
                continue
            entry, event = item
            if await self._attempt(event, self._retry.delivery_timeout.total_seconds()):
                await asyncio.to_thread(self._spool.remove, entry)
                delay = self._retry.initial_backoff.total_seconds()
                continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry.max_backoff.total_seconds())
        self._idle.set()
        log.info("%s: backlog delivered", self.name)

    async def _attempt(self, event: HealthEvent, within: float) -> bool:
        """True when the event is done with (delivered, or impossible to deliver); False to retry later.

        `within` seconds bound the delivery (what is left of the hand-off, at most `delivery_timeout`);
        a hand-off that runs out is the dependency's slowness, not its absence, and is logged as such.
        """
        timeout = self._retry.delivery_timeout.total_seconds()
        if within <= 0:
            return self._kept(event, "")
        try:
            async with asyncio.timeout(min(within, timeout)):
                await self._deliver(event)
        except TimeoutError:
            return self._kept(event, "" if within < timeout else "timed out")
        except DependencyUnavailable as error:
            return self._kept(event, str(error) or "unavailable")
        except Exception:
            log.exception(
                "%s refused event %s for good; dropping it there",
                self.name,
                event.id,
                extra={"node": event.node, "gpu": event.gpu_uuids},
            )
        return True

    def _kept(self, event: HealthEvent, unavailable: str) -> bool:
        """Log why the event waits for the backlog (`unavailable`, or the hand-off ran out when empty); False."""
        where = {"node": event.node, "gpu": event.gpu_uuids}
        if unavailable:
            log.warning("%s unavailable, event %s kept for retry: %s", self.name, event.id, unavailable, extra=where)
        else:
            log.info(
                "%s slower than the hand-off (%.2f s): event %s spooled for the backlog to deliver",
                self.name,
                self._retry.hand_off.total_seconds(),
                event.id,
                extra=where,
            )
        return False
