"""Delivery order and failure handling of one lane, with a Temporal stand-in that can be switched off."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
import threading
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from gpuheal.agents.durable_file import write_durably
from gpuheal.agents.publisher import DependencyUnavailable, Publisher, PublisherSettings, RetrySettings
from gpuheal.agents.publisher import spool as spool_module
from gpuheal.agents.publisher.spool import Spool
from gpuheal.domain.faults import Fault
from tests.agents.publisher.disks import BrokenDisk, HealingDisk
from tests.agents.publisher.events import fatal_xid
from tests.agents.publisher.test_spool import drain

SETTINGS = PublisherSettings(
    retry=RetrySettings(
        delivery_timeout=timedelta(seconds=0.2),
        hand_off=timedelta(seconds=0.2),
        initial_backoff=timedelta(seconds=0.02),
        max_backoff=timedelta(seconds=0.05),
    )
)


class SwitchableRemediations:
    """Refuses with DependencyUnavailable until `up` is set; records what it accepted, in order."""

    def __init__(self) -> None:
        self.up = asyncio.Event()
        self.accepted: list[str] = []
        self.hang_once = False
        self.refuse_for_good: set[str] = set()

    async def report(self, fault: Fault) -> None:
        if self.hang_once:
            self.hang_once = False
            await asyncio.sleep(10)
        if fault.event_id in self.refuse_for_good:
            raise ValueError("this fault can never be delivered")
        if not self.up.is_set():
            raise DependencyUnavailable("down")
        await asyncio.sleep(0.005)  # a round trip, so later submits arrive mid-backlog
        self.accepted.append(fault.event_id)


async def test_new_events_never_overtake_the_backlog(tmp_path: Path) -> None:
    backend = SwitchableRemediations()
    faults = [fatal_xid("n") for _ in range(8)]
    async with Publisher(tmp_path, remediations=backend, settings=SETTINGS) as publisher:
        for fault in faults[:3]:
            await publisher.submit(fault)
        assert publisher.pending() == {"temporal": 3}
        assert backend.accepted == []

        backend.up.set()
        for fault in faults[3:]:
            await publisher.submit(fault)
        await asyncio.wait_for(publisher.wait_delivered(), 5)
        # Once the backlog is gone, delivery is direct again.
        late = fatal_xid("n")
        await publisher.submit(late)
        assert publisher.pending() == {"temporal": 0}
    assert backend.accepted == [f.id for f in [*faults, late]]


async def test_a_timeout_counts_as_unavailable_and_a_permanent_failure_does_not_block(tmp_path: Path) -> None:
    backend = SwitchableRemediations()
    backend.up.set()
    backend.hang_once = True
    poison, after = fatal_xid("n"), fatal_xid("n")
    backend.refuse_for_good.add(poison.id)
    async with Publisher(tmp_path, remediations=backend, settings=SETTINGS) as publisher:
        hung = fatal_xid("n")
        await asyncio.wait_for(publisher.submit(hung), 2)  # gives up after delivery_timeout, spooled
        await publisher.submit(poison)
        await publisher.submit(after)
        await asyncio.wait_for(publisher.wait_delivered(), 5)
    assert backend.accepted == [hung.id, after.id]
    assert not list(tmp_path.rglob("*.json"))


async def test_a_disk_that_fails_every_write_loses_no_fault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """EIO on every write: the faults wait in memory, in order, and go straight from there."""
    monkeypatch.setattr(spool_module, "write_durably", BrokenDisk(errno.EIO))
    backend = SwitchableRemediations()
    faults = [fatal_xid("n") for _ in range(3)]
    async with Publisher(tmp_path, remediations=backend, settings=SETTINGS) as publisher:
        for fault in faults:
            await publisher.submit(fault)  # does not raise
        assert publisher.pending() == {"temporal": 3}
        assert publisher.problems() == ["temporal: 3 actionable events held in memory (the disk refused them)"]
        backend.up.set()
        await asyncio.wait_for(publisher.wait_delivered(), 5)
        assert publisher.problems() == []
    assert backend.accepted == [fault.id for fault in faults]


async def test_closing_with_a_held_fault_writes_it_once_the_disk_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rollout stops the agent while a fault waits in memory: close keeps trying the disk."""
    disk = HealingDisk()
    monkeypatch.setattr(spool_module, "write_durably", disk)
    fault = fatal_xid("n")
    publisher = Publisher(tmp_path, remediations=SwitchableRemediations(), settings=SETTINGS)
    await publisher.start()
    await publisher.submit(fault)
    assert publisher.spool_stats()["temporal"].held == 1
    disk.attempted.clear()
    closing = asyncio.create_task(publisher.close())
    assert await asyncio.to_thread(disk.attempted.wait, 10), "close tried the disk"
    disk.healed = True
    await asyncio.wait_for(closing, 10)
    assert drain(Spool(tmp_path / "temporal")) == [fault.id], "on disk for the next run"


async def test_closing_with_a_held_fault_delivers_it_once_the_dependency_is_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "write_durably", BrokenDisk(errno.EIO))
    backend = SwitchableRemediations()
    fault = fatal_xid("n")
    publisher = Publisher(tmp_path, remediations=backend, settings=SETTINGS)
    await publisher.start()
    await publisher.submit(fault)
    closing = asyncio.create_task(publisher.close())
    backend.up.set()
    await asyncio.wait_for(closing, 10)
    assert backend.accepted == [fault.id]


async def test_faults_still_held_when_the_grace_is_over_are_logged_by_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(spool_module, "write_durably", BrokenDisk(errno.EIO))
    faults = [fatal_xid("n") for _ in range(2)]
    settings = replace(SETTINGS, retry=replace(SETTINGS.retry, shutdown_grace=timedelta(seconds=0.1)))
    async with Publisher(tmp_path, remediations=SwitchableRemediations(), settings=settings) as publisher:
        for fault in faults:
            await publisher.submit(fault)
        caplog.clear()
    lost = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and "is lost" in r.getMessage()]
    assert [next(f.id for f in faults if f.id in message) for message in lost] == [f.id for f in faults]


class SlowRemediations:
    """A dependency slowed down by load: it answers only once `answer` is set; records what it accepted, in order."""

    def __init__(self) -> None:
        self.answer = asyncio.Event()
        self.accepted: list[str] = []

    async def report(self, fault: Fault) -> None:
        await self.answer.wait()
        self.accepted.append(fault.event_id)


async def test_a_slow_dependency_costs_each_sender_a_spool_write_not_its_latency(tmp_path: Path) -> None:
    """Concurrent senders (the intake's calls) are not held behind a delivery that has not answered:
    past the hand-off their events are spooled, and delivered in order once the dependency answers."""
    backend = SlowRemediations()
    settings = PublisherSettings(
        retry=replace(SETTINGS.retry, delivery_timeout=timedelta(hours=1), hand_off=timedelta(seconds=0.05))
    )
    faults = [fatal_xid("n") for _ in range(5)]
    async with Publisher(tmp_path, remediations=backend, settings=settings) as publisher:
        await asyncio.wait_for(asyncio.gather(*(publisher.submit(fault) for fault in faults)), 30)
        assert backend.accepted == []
        assert publisher.pending() == {"temporal": len(faults)}
        backend.answer.set()
        await asyncio.wait_for(publisher.wait_delivered(), 30)
    assert backend.accepted == [fault.id for fault in faults]


class Fsyncs:
    """Counts the flushes to disk, of files and of directories."""

    def __init__(self) -> None:
        self.files = 0
        self.directories = 0
        self._fsync = os.fsync

    def __call__(self, fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            self.directories += 1
        else:
            self.files += 1
        self._fsync(fd)


class HeldDisk:
    """A disk whose first write waits until `released` (a busy disk), the others going through at once."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self._first = True

    def __call__(self, path: Path, data: bytes, *, directory_sync: bool = True) -> None:
        if self._first:
            self._first = False
            self.released.wait()
        write_durably(path, data, directory_sync=directory_sync)


async def test_events_spooled_together_share_one_directory_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Senders that arrive while the lane writes to its spool are written as the next batch: each
    event costs a flush of its own file, and the batch one flush of the directory, before any
    sender is told its event is taken."""
    fsyncs, disk = Fsyncs(), HeldDisk()
    monkeypatch.setattr(os, "fsync", fsyncs)
    monkeypatch.setattr(spool_module, "write_durably", disk)
    backend = SwitchableRemediations()  # down: every event goes to the spool
    faults = [fatal_xid("n") for _ in range(20)]
    async with Publisher(tmp_path, remediations=backend, settings=SETTINGS) as publisher:
        senders = asyncio.gather(*(publisher.submit(fault) for fault in faults))

        async def queued() -> None:  # the first write holds; the other senders queue behind it
            while publisher.pending() != {"temporal": len(faults)}:
                await asyncio.sleep(0.01)

        try:
            await asyncio.wait_for(queued(), 30)
        finally:
            disk.released.set()
        assert fsyncs.files == fsyncs.directories == 0
        await asyncio.wait_for(senders, 30)
        # One batch, or two when the writer took the first event before the others queued.
        assert fsyncs.files == len(faults)
        assert fsyncs.directories <= 2
        backend.up.set()
        await asyncio.wait_for(publisher.wait_delivered(), 30)
    assert backend.accepted == [fault.id for fault in faults]
