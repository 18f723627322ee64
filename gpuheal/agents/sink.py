"""Where a detector hands its health events: one shape shared by every source in the agent.

The PlatformConnector intake, the kernel-log monitor and any other monitor all submit converted
`HealthEvent`s to an `EventSink`; the agent wires them to the publisher, so every event takes the
same path to the Device API, the node's conditions and Temporal.

A sink may be full for a while (the publisher's spools cannot take a fault on disk nor in memory):
it then raises `SinkFull`, and the event is still the sender's. A detector in the agent's own
process hands its events over with `hand_over`, which waits until the sink takes the event: while
it waits the detector reads nothing more from its source, so the pressure goes back to the source
(the kernel's ring buffer, NVML's event queue) instead of an event being lost.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from gpuheal.domain.health import HealthEvent

log = logging.getLogger(__name__)


class SinkFull(Exception):
    """The sink cannot take the event now; nothing of it was kept, and the sender must try again."""


class EventSink(Protocol):
    """Accepts health events. `submit` returns once the event is delivered or durably queued, and
    raises `SinkFull` when it cannot take it now."""

    async def submit(self, event: HealthEvent) -> None: ...


@dataclass(frozen=True, slots=True)
class Backoff:
    """The time between tries while the sink is full: `initial`, doubling up to `maximum`."""

    initial: timedelta = timedelta(seconds=0.5)
    maximum: timedelta = timedelta(seconds=30)

    def __post_init__(self) -> None:
        if not timedelta(0) < self.initial <= self.maximum:
            raise ValueError(f"backoff needs 0 < initial <= maximum, not {self.initial} and {self.maximum}")


DEFAULT_BACKOFF = Backoff()


async def hand_over(
    sink: EventSink, event: HealthEvent, *, stop: asyncio.Event | None = None, backoff: Backoff = DEFAULT_BACKOFF
) -> bool:
    """Submit `event` to `sink`, trying again with `backoff` for as long as the sink is full.

    Returns True once the sink has taken the event. Returns False only when `stop` is set while the
    sink is still full (the detector is stopping): the event was not taken, and that is logged with
    its id. A wait for a full sink is logged once, when it starts, and once more when it ends. Any
    other error of the sink is raised; so is a cancellation, with the event not taken.
    """
    delay = backoff.initial
    waited = 0
    while True:
        try:
            await sink.submit(event)
        except SinkFull as full:
            if not waited:
                log.warning(
                    "the event sink is full (%s); holding %s event %s and trying again, up to every %.0f s, "
                    "reading nothing more from its source meanwhile",
                    full,
                    event.agent,
                    event.id,
                    backoff.maximum.total_seconds(),
                    extra={"node": event.node, "gpu": event.gpu_uuids},
                )
        else:
            if waited:
                log.info(
                    "the event sink took event %s after %d tries",
                    event.id,
                    waited + 1,
                    extra={"node": event.node, "gpu": event.gpu_uuids},
                )
            return True
        waited += 1
        if stop is None:
            await asyncio.sleep(delay.total_seconds())
        elif await _stopped(stop, delay):
            log.error(
                "stopping with %s event %s not taken by the full event sink: it is lost (%s on %s: %s)",
                event.agent,
                event.id,
                event.check_name,
                event.node,
                event.message,
                extra={"node": event.node, "gpu": event.gpu_uuids},
            )
            return False
        delay = min(delay * 2, backoff.maximum)


async def _stopped(stop: asyncio.Event, delay: timedelta) -> bool:
    """Wait up to `delay`; True when `stop` is set by then."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=delay.total_seconds())
    except TimeoutError:
        return False
    return True
