"""`hand_over`: a detector's event waits for a full sink instead of being dropped."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest

from gpuheal.agents.sink import Backoff, SinkFull, hand_over
from gpuheal.domain.health import HealthEvent
from tests.agents.publisher.events import fatal_xid

FAST = Backoff(initial=timedelta(seconds=0.001), maximum=timedelta(seconds=0.004))


class FullFor:
    """A sink that is full for its first `refusals` tries, then takes every event."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.tries = 0
        self.taken: list[str] = []

    async def submit(self, event: HealthEvent) -> None:
        self.tries += 1
        if self.tries <= self.refusals:
            raise SinkFull("no room")
        self.taken.append(event.id)


async def test_an_event_is_tried_until_the_sink_takes_it_and_the_wait_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink, event = FullFor(refusals=12), fatal_xid("n")
    caplog.set_level(logging.INFO, logger="gpuheal.agents.sink")
    assert await hand_over(sink, event, backoff=FAST)
    assert (sink.tries, sink.taken) == (13, [event.id])
    said = [(record.levelno, record.getMessage()) for record in caplog.records]
    assert len(said) == 2, said
    assert said[0][0] == logging.WARNING and event.id in said[0][1] and "sink is full" in said[0][1]
    assert said[1] == (logging.INFO, f"the event sink took event {event.id} after 13 tries")


async def test_a_sink_with_room_takes_the_event_at_once_and_nothing_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = FullFor(refusals=0)
    caplog.set_level(logging.INFO, logger="gpuheal.agents.sink")
    assert await hand_over(sink, fatal_xid("n"), backoff=FAST)
    assert sink.tries == 1 and caplog.records == []


async def test_a_stopping_detector_gives_up_naming_the_event(caplog: pytest.LogCaptureFixture) -> None:
    sink, event, stop = FullFor(refusals=10**9), fatal_xid("n"), asyncio.Event()
    waiting = asyncio.create_task(
        hand_over(sink, event, stop=stop, backoff=Backoff(initial=timedelta(hours=1), maximum=timedelta(hours=1)))
    )
    while not sink.tries:
        await asyncio.sleep(0)
    stop.set()
    assert await asyncio.wait_for(waiting, 10) is False, "not taken"
    assert sink.taken == []
    assert any(r.levelno == logging.ERROR and event.id in r.getMessage() for r in caplog.records)


async def test_any_other_failure_of_the_sink_is_raised() -> None:
    class Broken:
        async def submit(self, event: HealthEvent) -> None:
            raise RuntimeError("a bug in the sink")

    with pytest.raises(RuntimeError, match="a bug in the sink"):
        await hand_over(Broken(), fatal_xid("n"), backoff=FAST)


def test_a_backoff_must_grow_from_a_positive_start() -> None:
    with pytest.raises(ValueError, match="0 < initial <= maximum"):
        Backoff(initial=timedelta(0), maximum=timedelta(seconds=1))
    with pytest.raises(ValueError, match="0 < initial <= maximum"):
        Backoff(initial=timedelta(seconds=2), maximum=timedelta(seconds=1))
