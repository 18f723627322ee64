"""What requests in flight may cost: events converted one at a time, requests served so many at once, a full publisher."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest

from gpuheal.agents.intake import IntakeServer, IntakeSettings
from gpuheal.agents.publisher.spool import SpoolFull
from gpuheal.agents.sink import EventSink, SinkFull
from gpuheal.domain.health import HealthEvent
from gpuheal.protos import health_event_pb2 as pb
from gpuheal.protos import health_event_pb2_grpc as pb_grpc
from tests.agents.intake.test_intake import xid_event

DEFAULT_BOUND = IntakeSettings().max_concurrent_requests


def live_health_events() -> int:
    gc.collect()
    return sum(1 for thing in gc.get_objects() if type(thing) is HealthEvent)


class GatedSink:
    """A sink whose submits wait until the gate opens: a publisher busy delivering."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.waiting = 0
        self._arrivals = asyncio.Condition()

    async def submit(self, event: HealthEvent) -> None:
        async with self._arrivals:
            self.waiting += 1
            self._arrivals.notify_all()
        await self.gate.wait()

    async def reached(self, count: int) -> None:
        async with self._arrivals:
            await self._arrivals.wait_for(lambda: self.waiting >= count)


@asynccontextmanager
async def serving(
    sink: EventSink, socket_dir: Path, max_concurrent_requests: int = DEFAULT_BOUND
) -> AsyncIterator[pb_grpc.PlatformConnectorAsyncStub]:
    """An intake for `sink` and a client connected to it."""
    settings = IntakeSettings(socket_path=socket_dir / "i.sock", max_concurrent_requests=max_concurrent_requests)
    async with IntakeServer(sink, settings) as server:
        channel = grpc.aio.insecure_channel(server.socket_target)
        try:
            yield pb_grpc.PlatformConnectorStub(channel)
        finally:
            await channel.close()


async def test_a_requests_events_are_converted_as_their_turn_comes(socket_dir: Path) -> None:
    class Counting:
        """Counts the domain events alive when the first one arrives (and keeps none)."""

        def __init__(self) -> None:
            self.alive_at_first: int | None = None
            self.taken = 0

        async def submit(self, event: HealthEvent) -> None:
            if self.alive_at_first is None:
                self.alive_at_first = live_health_events() - before
            self.taken += 1

    sink = Counting()
    async with serving(sink, socket_dir) as stub:
        before = live_health_events()
        await stub.HealthEventOccurredV1(pb.HealthEvents(events=[xid_event(id=f"e{i}") for i in range(200)]))
    assert (sink.taken, sink.alive_at_first) == (200, 1)


async def test_requests_past_the_bound_are_refused_while_the_sink_is_busy(socket_dir: Path) -> None:
    sink = GatedSink()
    request = pb.HealthEvents(events=[xid_event()])
    async with serving(sink, socket_dir, max_concurrent_requests=2) as stub:
        held = [asyncio.ensure_future(stub.HealthEventOccurredV1(request)) for _ in range(2)]
        await sink.reached(2)
        third = asyncio.ensure_future(stub.HealthEventOccurredV1(request))
        in_sink = asyncio.ensure_future(sink.reached(3))
        done, _ = await asyncio.wait({third, in_sink}, return_when=asyncio.FIRST_COMPLETED)
        in_sink.cancel()
        assert third in done, "a third request reached the busy sink"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await third
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        sink.gate.set()  # the publisher catches up: the held calls finish, and the sender's retry goes through
        await asyncio.gather(*held)
        await stub.HealthEventOccurredV1(request)
    assert sink.waiting == 3


# Any full sink (`SinkFull`, the sink's own contract), not only the publisher's spool (`SpoolFull`).
@pytest.mark.parametrize("full", [SpoolFull, SinkFull])
async def test_a_full_sink_is_unavailable_in_one_log_line(
    socket_dir: Path, caplog: pytest.LogCaptureFixture, full: type[SinkFull]
) -> None:
    class Full:
        def __init__(self) -> None:
            self.taken: list[str] = []

        async def submit(self, event: HealthEvent) -> None:
            if self.taken:
                raise full(f"spool /var/spool cannot take actionable event {event.id}: the memory hold is full")
            self.taken.append(event.id)

    sink = Full()
    with caplog.at_level(logging.WARNING):
        async with serving(sink, socket_dir) as stub:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.HealthEventOccurredV1(pb.HealthEvents(events=[xid_event(id="e0"), xid_event(id="e1")]))
    assert (caught.value.code(), caught.value.details()) == (
        grpc.StatusCode.UNAVAILABLE,
        "events[1] and later were not accepted; resend them",
    )
    assert sink.taken == ["e0"]
    assert [(r.levelno, r.exc_info, r.getMessage()) for r in caplog.records] == [
        (
            logging.WARNING,
            None,
            "event 1 (e1) not accepted, the sender is told to resend it: "
            "spool /var/spool cannot take actionable event e1: the memory hold is full",
        )
    ]
