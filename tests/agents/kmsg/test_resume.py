"""The monitor restarted around faults: what was written while it was down is reported once, never twice."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from gpuheal.agents.kmsg.follow import KernelLog, KernelLogFormat, ReadFrom
from gpuheal.agents.kmsg.gpumap import GpuMap
from gpuheal.agents.kmsg.monitor import EventObserver, KernelLogMonitor
from gpuheal.agents.kmsg.parser import KernelEvent
from gpuheal.domain.health import HealthEvent
from tests.agents.kmsg.test_monitor import GPUS, UUID_A, UUID_B, Clock, Sink

BOOT_1 = "1b0c2d3e-0000-4000-8000-00000000000a"
BOOT_2 = "1b0c2d3e-0000-4000-8000-00000000000b"
UUID_LATE = "GPU-aaaaaaaa-0b0e-4f7e-9a43-1c2d3e4f5a6b"  # a GPU the GPU map does not know: named by the log only


class Node:
    """A node's kernel log, boot ID and monitor state, and the sink that outlives every monitor (a spool)."""

    def __init__(self, tmp_path: Path, format: KernelLogFormat) -> None:
        self.log = tmp_path / ("kmsg" if format is KernelLogFormat.KMSG else "kern.log")
        self.log.write_text("")
        self.format = format
        self.boot_id = tmp_path / "boot_id"
        self.boot_id.write_text(BOOT_1 + "\n")
        self.state = tmp_path / "spool" / "kmsg-state.json"
        self.sink = Sink()
        self._seq = 100

    def write(self, text: str) -> None:
        """One kernel message, as /dev/kmsg gives it (a record with the next sequence number) or as a dmesg line."""
        self._seq += 1
        line = f"3,{self._seq},{self._seq * 1000},-;{text}" if self.format is KernelLogFormat.KMSG else f"[ 1.0] {text}"
        with self.log.open("a") as log:
            log.write(line + "\n")

    def reboot(self) -> None:
        """A new boot: a new boot ID, and a ring buffer whose sequence numbers start again."""
        self.boot_id.write_text(BOOT_2 + "\n")
        self.log.write_text("")
        self._seq = 0

    @contextlib.asynccontextmanager
    async def monitor(
        self, read_from: ReadFrom = ReadFrom.RESUME, on_event: EventObserver | None = None
    ) -> AsyncIterator[KernelLogMonitor]:
        """The agent's monitor running on this node until the block ends (the agent stopping)."""
        monitor = KernelLogMonitor(
            "gpu-node-7",
            self.sink,
            gpu_map=GpuMap(GPUS),
            clock=Clock(),  # time stands still: positions are saved after events and at the stop only
            boot_id_path=self.boot_id,
            state_path=self.state,
            on_event=on_event,
        )
        task = asyncio.create_task(
            monitor.run(KernelLog(self.log, self.format, read_from, poll_interval=timedelta(seconds=0.01)))
        )
        try:
            yield monitor
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def write_until_reported(self, text: str, count: int) -> list[HealthEvent]:
        """Write the line again until the sink holds `count` events: a monitor reading from the end may
        open the log after a write. Flood control folds the copies it reads into one event."""
        async with asyncio.timeout(10):
            while True:
                self.write(text)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.2):
                        return await self.reported(count)

    async def reported(self, count: int) -> list[HealthEvent]:
        """Wait (bounded: a hang guard) until the sink holds `count` events; all of them."""
        async with asyncio.timeout(10):
            while len(self.sink.events) < count:
                await asyncio.sleep(0.01)
        return list(self.sink.events)


async def started(monitor: KernelLogMonitor) -> None:
    """Wait (bounded: a hang guard) until the monitor has taken the boot ID and chosen where to read."""
    async with asyncio.timeout(10):
        while monitor.reading_from is None:
            await asyncio.sleep(0.01)


def xid(code: int, pci: str = "0000:3b:00") -> str:
    return f"NVRM: Xid (PCI:{pci}): {code}, pid=1, name=a, fault {code}"


def summary(events: list[HealthEvent]) -> list[tuple[int | None, tuple[str, ...]]]:
    return [(event.xid, event.gpu_uuids) for event in events]


FORMATS = [KernelLogFormat.FILE, KernelLogFormat.KMSG]


@pytest.mark.parametrize("format", FORMATS)
async def test_an_xid_written_while_the_agent_was_down_is_reported_once(
    tmp_path: Path, format: KernelLogFormat
) -> None:
    node = Node(tmp_path, format)
    node.write("eth0: link up")
    async with node.monitor():
        node.write(xid(48))
        await node.reported(1)
    node.write(xid(13, "0000:5d:00"))  # while the agent is down
    node.write("eth0: link down")
    async with node.monitor():
        await node.reported(2)
        node.write(xid(74))  # a barrier: anything read again would have come before it
        events = await node.reported(3)
    assert summary(events) == [(48, (UUID_A,)), (13, (UUID_B,)), (74, (UUID_A,))]
    assert len({event.id for event in events}) == 3

    async with node.monitor():  # a restart with nothing new reports nothing
        node.write(xid(31))
        events = await node.reported(4)
    assert summary(events)[3:] == [(31, (UUID_A,))]


@pytest.mark.parametrize("format", FORMATS)
async def test_a_line_replayed_after_a_crash_is_the_same_event(tmp_path: Path, format: KernelLogFormat) -> None:
    """Killed after the event was handed over but before its position was saved: the replay has the
    first event's id, which the workflow counts once."""
    node = Node(tmp_path, format)
    async with node.monitor():
        node.write(xid(48))
        (first,) = await node.reported(1)
    before = node.state.read_bytes()
    async with node.monitor():
        node.write(xid(74))
        await node.reported(2)
    node.state.write_bytes(before)  # the crash: the position after XID 74 never reached the disk
    async with node.monitor():
        node.write(xid(13))
        events = await node.reported(4)
    assert summary(events) == [(48, (UUID_A,)), (74, (UUID_A,)), (74, (UUID_A,)), (13, (UUID_A,))]
    assert events[1].id == events[2].id, "the replay is idempotent"
    assert first.id != events[1].id


async def test_after_a_reboot_the_whole_new_ring_is_read(tmp_path: Path) -> None:
    """Sequence numbers start again with the boot: a saved one of the old boot skips nothing."""
    node = Node(tmp_path, KernelLogFormat.KMSG)
    async with node.monitor():
        node.write(xid(48))
        await node.reported(1)
    node.reboot()
    node.write(xid(74))  # sequence number 1 of the new boot, below the saved 101
    async with node.monitor():
        events = await node.reported(2 + len(GPUS))
    assert [event.xid for event in events[1 : 1 + len(GPUS)]] == [None] * len(GPUS), "healthy after the reboot"
    assert summary(events)[-1] == (74, (UUID_A,))
    assert events[-1].metadata["boot_id"] == BOOT_2


@pytest.mark.parametrize("format", FORMATS)
async def test_reading_from_the_end_or_the_start_by_hand(tmp_path: Path, format: KernelLogFormat) -> None:
    node = Node(tmp_path, format)
    async with node.monitor():
        node.write(xid(48))
        await node.reported(1)
    node.write(xid(13))  # while down
    async with node.monitor(ReadFrom.END):
        events = await node.write_until_reported(xid(74), 2)
    assert summary(events) == [(48, (UUID_A,)), (74, (UUID_A,))], "--from-end skips what came before"
    async with node.monitor(ReadFrom.START):
        events = await node.reported(5)
    assert [event.xid for event in events[2:]] == [48, 13, 74], "--from-start reads everything again"


@pytest.mark.parametrize("format", FORMATS)
async def test_a_corrupt_state_file_is_logged_and_the_log_read_from_its_start(
    tmp_path: Path, format: KernelLogFormat, caplog: pytest.LogCaptureFixture
) -> None:
    node = Node(tmp_path, format)
    node.write(xid(48))
    node.state.parent.mkdir()
    node.state.write_text('{"boot_id": 7, "note": "not ours"}')
    with caplog.at_level(logging.WARNING):
        async with node.monitor():
            events = await node.reported(1)
    assert summary(events) == [(48, (UUID_A,))]
    assert any("ignoring the kernel-log state" in record.message for record in caplog.records)
    assert f'"boot_id":"{BOOT_1}"' in node.state.read_text(), "replaced by a good one"


@pytest.mark.parametrize("format", FORMATS)
async def test_a_boot_an_older_agent_already_read_is_read_from_the_end(tmp_path: Path, format: KernelLogFormat) -> None:
    """Its state names the boot but no position: what is in the log was reported then."""
    node = Node(tmp_path, format)
    node.write(xid(48))
    node.state.parent.mkdir()
    node.state.write_text(f'{{"boot_id": "{BOOT_1}"}}')
    async with node.monitor():
        events = await node.write_until_reported(xid(74), 1)
    assert summary(events) == [(74, (UUID_A,))]


@pytest.mark.parametrize("rotations", [1, 2])
async def test_a_log_rotated_while_down_is_finished_then_the_new_one_read(tmp_path: Path, rotations: int) -> None:
    """Rotated more than once: the files in between are read too, oldest first."""
    node = Node(tmp_path, KernelLogFormat.FILE)
    async with node.monitor():
        node.write(xid(48))
        await node.reported(1)
    written = [48]
    for code in (13, 74)[:rotations]:
        node.write(xid(code))
        written.append(code)
        if (tmp_path / "kern.log.1").exists():  # kern.log.1 → kern.log.2, as logrotate does
            (tmp_path / "kern.log.1").rename(tmp_path / "kern.log.2")
        node.log.rename(tmp_path / "kern.log.1")
        node.log.write_text("")
    node.write(xid(31))
    async with node.monitor():
        events = await node.reported(len(written) + 1)
    assert [event.xid for event in events] == [*written, 31]


@pytest.mark.parametrize("format", FORMATS)
async def test_a_restart_before_the_first_line_still_reads_what_came_meanwhile(
    tmp_path: Path, format: KernelLogFormat
) -> None:
    """Nothing was read yet (the log was empty), so nothing was skipped: the next start reads it all."""
    node = Node(tmp_path, format)
    async with node.monitor() as monitor:
        await started(monitor)
    node.write(xid(48))  # while down
    async with node.monitor():
        events = await node.reported(1)
    assert summary(events) == [(48, (UUID_A,))]


async def test_reading_from_the_end_by_hand_is_kept_until_a_line_is_read(tmp_path: Path) -> None:
    node = Node(tmp_path, KernelLogFormat.FILE)
    node.write(xid(13))  # the history the operator chose to skip
    async with node.monitor(ReadFrom.END) as monitor:
        await started(monitor)
    async with node.monitor():
        events = await node.write_until_reported(xid(48), 1)
    assert summary(events) == [(48, (UUID_A,))]


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize("how", ["--from-end", "an older agent's state"])
async def test_a_restart_after_starting_at_the_end_reads_what_came_meanwhile(
    tmp_path: Path, format: KernelLogFormat, how: str
) -> None:
    """The end is saved as the position it was, not as "the end": a second start before any line was read
    reads on from there, and an XID written while the agent was down is reported."""
    node = Node(tmp_path, format)
    node.write(xid(13))  # the history the operator (or the older agent) skipped
    read_from = ReadFrom.END
    if how != "--from-end":
        node.state.parent.mkdir()
        node.state.write_text(f'{{"boot_id": "{BOOT_1}"}}')
        read_from = ReadFrom.RESUME
    async with node.monitor(read_from) as monitor:
        await started(monitor)
    node.write(xid(48))  # while down
    async with node.monitor():
        events = await node.reported(1)
        node.write(xid(74, "0000:5d:00"))
        events = await node.reported(2)
    assert summary(events) == [(48, (UUID_A,)), (74, (UUID_B,))]


async def test_a_saved_sequence_number_beyond_the_ring_is_not_of_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A well-formed state whose record number the ring never reached would skip the whole boot: it is
    logged and the ring read from its start."""
    node = Node(tmp_path, KernelLogFormat.KMSG)
    node.write(xid(48))
    node.state.parent.mkdir()
    node.state.write_text(f'{{"boot_id": "{BOOT_1}", "kmsg": {{"boot_id": "{BOOT_1}", "seq": 1000000}}}}')
    with caplog.at_level(logging.WARNING):
        async with node.monitor():
            events = await node.reported(1)
            node.write(xid(74, "0000:5d:00"))
            events = await node.reported(2)
    assert summary(events) == [(48, (UUID_A,)), (74, (UUID_B,))]
    assert any("is not of this ring" in record.message for record in caplog.records)


@pytest.mark.parametrize("format", FORMATS)
async def test_a_fallen_off_the_bus_report_split_by_a_restart_is_one_event_naming_its_gpu(
    tmp_path: Path, format: KernelLogFormat
) -> None:
    """The parser's memory goes with the position: the GPU named before the restart, and the XID 79
    line waiting for its "fallen off the bus" twin."""
    node = Node(tmp_path, format)
    node.write(f"NVRM: GPU at PCI:0000:af:00: {UUID_LATE}")
    async with node.monitor():
        node.write("NVRM: Xid (PCI:0000:af:00): 79, pid=1, name=a, GPU has fallen off the bus.")
        await node.reported(1)
    node.write("NVRM: GPU 0000:af:00.0: GPU has fallen off the bus.")  # while down: the same report
    async with node.monitor():
        node.write(xid(74, "0000:af:00"))  # a barrier: the twin, were it reported, would come before it
        events = await node.reported(2)
    assert summary(events) == [(79, (UUID_LATE,)), (74, (UUID_LATE,))]


@pytest.mark.parametrize("format", FORMATS)
async def test_reset_news_of_the_backlog_is_not_shown_to_the_reset_watcher(
    tmp_path: Path, format: KernelLogFormat
) -> None:
    """A reset acknowledgement (or failure) logged before the agent started, read again after a restart,
    must not decide a reset ordered now: only lines read after the follower caught up reach `on_event`."""
    node = Node(tmp_path, format)
    node.write("NVRM: GPU 0000:3b:00.0: GPU reset complete")  # an earlier reset's outcome
    node.write("NVRM: GPU 0000:5d:00.0: GPU reset did not complete")
    seen: list[tuple[str, str | None]] = []

    def observe(event: KernelEvent, gpu_uuid: str | None) -> None:
        seen.append((event.kind, gpu_uuid))

    async with node.monitor(on_event=observe):
        await node.reported(2)  # still reported as events: the log holds them
        assert seen == []
        node.write("NVRM: GPU 0000:5d:00.0: GPU reset complete")  # news
        await node.reported(3)
    assert seen == [("gpu_reset", UUID_B)]


class RefusingSink(Sink):
    """A sink that fails (not full: broken) for the first `refusals` events."""

    def __init__(self, refusals: int) -> None:
        super().__init__()
        self.refusals = refusals

    async def submit(self, event: HealthEvent) -> None:
        if self.refusals:
            self.refusals -= 1
            raise OSError("No space left on device")
        await super().submit(event)


@pytest.mark.parametrize("format", FORMATS)
async def test_a_line_whose_event_the_sink_refused_is_read_again_at_the_next_start(
    tmp_path: Path, format: KernelLogFormat
) -> None:
    node = Node(tmp_path, format)
    node.sink = RefusingSink(1)
    async with node.monitor():
        node.write(xid(48))  # refused
        node.write("eth0: link up")
        node.write(xid(74, "0000:5d:00"))
        (taken,) = await node.reported(1)
    async with node.monitor():
        node.write(xid(31))
        events = await node.reported(4)
    assert summary(events) == [(74, (UUID_B,)), (48, (UUID_A,)), (74, (UUID_B,)), (31, (UUID_A,))]
    assert events[2].id == taken.id, "what followed is read again as the same events"


class SlowToAnswerSink(Sink):
    """A sink that takes the event at once and answers a moment later, as the agent's spool does
    (the entry is on disk before the thread that wrote it hands control back)."""

    async def submit(self, event: HealthEvent) -> None:
        await super().submit(event)
        await asyncio.sleep(0.3)


@pytest.mark.parametrize("format", FORMATS)
async def test_a_stop_while_the_sink_answers_does_not_report_the_line_again(
    tmp_path: Path, format: KernelLogFormat
) -> None:
    node = Node(tmp_path, format)
    node.sink = SlowToAnswerSink()
    async with node.monitor():
        node.write(xid(48))
        await node.reported(1)  # taken, and the monitor is stopped before the sink answers
    async with node.monitor():
        node.write(xid(74, "0000:5d:00"))  # a barrier: the line read again would come before it
        events = await node.reported(2)

    assert summary(events) == [(48, (UUID_A,)), (74, (UUID_B,))]
