"""Where a detector hands its health events: one shape shared by every source in the agent.

The PlatformConnector intake, the kernel-log monitor and any other monitor all submit converted
`HealthEvent`s to an `EventSink`; the agent wires them to the publisher, so every event takes the
same path to the Device API, the node's conditions and Temporal.
"""

from __future__ import annotations

from typing import Protocol

from gpuheal.domain.health import HealthEvent


class EventSink(Protocol):
    """Accepts health events. `submit` returns once the event is delivered or durably queued."""

    async def submit(self, event: HealthEvent) -> None: ...
