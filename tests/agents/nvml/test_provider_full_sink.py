"""NvmlProvider in front of a real publisher that cannot take a fault (Temporal down, no room on disk,
room in memory for one): the provider waits and sends again; no fault is dropped."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from gpuheal.agents.device_api import DeviceApiServer
from gpuheal.agents.nvml import NvmlProvider
from gpuheal.agents.publisher import Publisher, PublisherSettings, RetrySettings, SpoolLimits
from gpuheal.agents.sink import Backoff
from gpuheal_sim.fake_nvml import FakeNvml
from tests.agents.publisher.events import fatal_xid
from tests.agents.publisher.test_lane import SwitchableRemediations

from .conftest import NODE, eventually

# Nothing fits on disk, and the memory hold takes one fault: a second fault is refused (SpoolFull).
CRAMPED = PublisherSettings(
    spool=SpoolLimits(max_bytes=1, max_held_bytes=1),
    retry=RetrySettings(
        delivery_timeout=timedelta(seconds=1),
        initial_backoff=timedelta(seconds=0.01),
        max_backoff=timedelta(seconds=0.05),
    ),
)


@pytest.fixture
async def temporal() -> SwitchableRemediations:
    return SwitchableRemediations()


@pytest.fixture
async def publisher(tmp_path: Path, temporal: SwitchableRemediations) -> AsyncIterator[Publisher]:
    async with Publisher(tmp_path / "spool", remediations=temporal, settings=CRAMPED) as started:
        yield started


@pytest.fixture
async def provider(server: DeviceApiServer, publisher: Publisher) -> AsyncIterator[tuple[NvmlProvider, FakeNvml]]:
    nvml = FakeNvml(NODE, count=4)
    provider = NvmlProvider(
        nvml,
        server.socket_path,
        publisher,
        NODE,
        poll_interval=timedelta(hours=1),  # polls only when the test asks
        event_wait=timedelta(seconds=0.05),
        on_registered=lambda _count: server.mark_ready(),
        sink_backoff=Backoff(initial=timedelta(seconds=0.01), maximum=timedelta(seconds=0.05)),
    )
    await provider.start()
    yield provider, nvml
    await provider.stop()


async def test_fatal_xids_wait_for_room_in_the_publisher_and_all_reach_temporal(
    provider: tuple[NvmlProvider, FakeNvml], publisher: Publisher, temporal: SwitchableRemediations
) -> None:
    _, nvml = provider
    for gpu in (0, 1, 2):
        nvml.inject_xid(gpu, 79)
    # The first is held in memory; the second is refused, so the provider waits with it.
    await eventually(lambda: publisher.spool_stats()["temporal"].refused_actionable > 0)
    temporal.up.set()
    await eventually(lambda: len(temporal.accepted) == 3)
    await asyncio.wait_for(publisher.wait_delivered(), 10)
    assert len(set(temporal.accepted)) == 3, "each XID once"


async def test_a_polled_fault_the_publisher_did_not_take_is_sent_by_the_next_poll(
    provider: tuple[NvmlProvider, FakeNvml], publisher: Publisher, temporal: SwitchableRemediations
) -> None:
    nvml_provider, nvml = provider
    earlier = fatal_xid(NODE)
    await publisher.submit(earlier)  # fills the memory hold
    nvml.set_ecc_dbe(1, 2)
    poll = asyncio.create_task(nvml_provider.poll_once())
    await eventually(lambda: publisher.spool_stats()["temporal"].refused_actionable > 0)
    poll.cancel()  # the poll is given up while its fault waits for room
    await asyncio.gather(poll, return_exceptions=True)

    temporal.up.set()
    await asyncio.wait_for(publisher.wait_delivered(), 10)
    assert temporal.accepted == [earlier.id]
    await nvml_provider.poll_once()
    await asyncio.wait_for(publisher.wait_delivered(), 10)
    assert len(temporal.accepted) == 2, "the double-bit ECC fault was sent again and delivered"
