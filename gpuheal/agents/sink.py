"""Where a detector hands its health events: one shape shared by every source in the agent.

The PlatformConnector intake, the kernel-log monitor and any other monitor all submit converted
`HealthEvent`s to an `EventSink`; the agent wires them to the publisher, so every event takes the
same path to the Device API, the node's conditions and Temporal.

A sink may be full for a while (the publisher's spools cannot take a fault on disk nor in memory):
it then raises `SinkFull`, and the event is still the sender's.
"""

from __future__ import annotations

from typing import Protocol

from gpuheal.domain.health import HealthEvent


class SinkFull(Exception):
    """The sink cannot take the event now; nothing of it was kept, and the sender must try again."""


class EventSink(Protocol):
    """Accepts health events. `submit` returns once the event is delivered or durably queued, and
    raises `SinkFull` when it cannot take it now."""

    async def submit(self, event: HealthEvent) -> None: ...
