"""The monitor end to end: lines in, health events out, flood control, resets and reboots."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gpuheal.agents.kmsg.decide import XidPolicy
from gpuheal.agents.kmsg.gpumap import GpuMap
from gpuheal.agents.kmsg.monitor import CHECK_RESET, HEALTHY_AFTER_REBOOT, KernelLogMonitor
from gpuheal.agents.publisher.ledger import OpenFaults
from gpuheal.agents.sink import EventSink, SinkFull
from gpuheal.domain.actions import RecommendedAction as A
from gpuheal.domain.health import GPU_UUID, PCI, Entity, HealthEvent
from tests.agents.kmsg.samples import FALLEN_OFF_GROUP, UUID

UUID_A = "GPU-6b3a1c3e-0b0e-4f7e-9a43-1c2d3e4f5a6b"
UUID_B = "GPU-0c9d8e7f-1a2b-4c3d-8e9f-a0b1c2d3e4f5"
GPUS = {"0000:3b:00.0": UUID_A, "00000000:5D:00.0": UUID_B}
XID_48_A = "[ 4821.337154] NVRM: Xid (PCI:0000:3b:00): 48, pid='<unknown>', name=<unknown>, DBE"
XID_48_B = "3,812,6085126134786,-;NVRM: Xid (PCI:0000:5d:00): 48, pid='<unknown>', name=<unknown>, DBE"
NOW = datetime(2026, 11, 23, 2, 7, 1, tzinfo=UTC)


class Sink:
    def __init__(self) -> None:
        self.events: list[HealthEvent] = []

    async def submit(self, event: HealthEvent) -> None:
        self.events.append(event)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def boot_id(tmp_path: Path) -> Path:
    path = tmp_path / "boot_id"
    path.write_text("1b0c2d3e-0000-4000-8000-000000000001\n")
    return path


def _monitor(
    sink: EventSink,
    clock: Clock,
    boot_id: Path,
    *,
    policy: XidPolicy | None = None,
    dedupe_window: float = 60.0,
    state_path: Path | None = None,
    boot_check_interval: float = 5.0,
) -> KernelLogMonitor:
    return KernelLogMonitor(
        "gpu-node-7",
        sink,
        policy=policy,
        gpu_map=GpuMap(GPUS, clock=clock),
        dedupe_window=dedupe_window,
        clock=clock,
        now=lambda: NOW,
        boot_id_path=boot_id,
        state_path=state_path,
        boot_check_interval=boot_check_interval,
    )


async def test_an_xid_becomes_a_health_event(boot_id: Path) -> None:
    sink, clock = Sink(), Clock()
    monitor = _monitor(sink, clock, boot_id)
    event = await monitor.feed(XID_48_A)
    assert sink.events == [event]
    assert event is not None
    uuid.UUID(event.id)
    assert (event.node, event.agent, event.component_class, event.check_name) == (
        "gpu-node-7",
        "gpuheal-kmsg",
        "GPU",
        "SysLogsXIDError",
    )
    assert (event.is_fatal, event.is_healthy, event.action) == (True, False, A.COMPONENT_RESET)
    assert event.error_codes == ("48",)
    assert event.xid == 48
    assert event.entities == (Entity(type=GPU_UUID, value=UUID_A), Entity(type=PCI, value="0000:3b:00"))
    assert event.message == "XID 48 (0000:3b:00): DBE"
    assert event.generated_at == NOW
    assert event.metadata["boot_id"] == "1b0c2d3e-0000-4000-8000-000000000001"
    assert event.needs_remediation


async def test_kinds_and_their_checks(boot_id: Path) -> None:
    sink, clock = Sink(), Clock()
    monitor = _monitor(sink, clock, boot_id, policy=XidPolicy(overrides={13: A.RESTART_VM}))
    for line in FALLEN_OFF_GROUP:
        await monitor.feed(line)
    await monitor.feed("nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 20034, Fatal, Link 30 LTSSM Fault Up")
    await monitor.feed("nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 12028, Non-fatal, Link 32 egress")
    await monitor.feed("NVRM: Xid (PCI:0000:5d:00): 13, pid=7, name=python3, Graphics Exception")
    await monitor.feed("NVRM: Xid (PCI:0000:3b:00): 31, pid=7, name=python3, MMU Fault")
    await monitor.feed("NVRM: GPU 0000:3b:00.0: GPU reset complete")
    summary = [(e.check_name, e.error_codes, e.action, e.is_fatal, e.is_healthy, e.gpu_uuids) for e in sink.events]
    assert [e.xid for e in sink.events if e.check_name == "SysLogsSXIDError"] == [None, None], "an SXid is no XID"
    assert summary == [
        ("SysLogsXIDError", ("79",), A.RESTART_BM, True, False, (UUID,)),  # named by the `GPU at PCI` line
        ("SysLogsSXIDError", ("SXID-20034",), A.RESTART_VM, True, False, ()),
        ("SysLogsSXIDError", ("SXID-12028",), A.NONE, False, False, ()),
        ("SysLogsXIDError", ("13",), A.RESTART_VM, True, False, (UUID_B,)),  # the policy's word
        ("SysLogsXIDError", ("31",), A.NONE, False, False, (UUID_A,)),
        ("GpuReset", (), A.NONE, False, True, (UUID_A,)),
    ]
    assert sink.events[1].metadata["nvswitch"] == "nvidia-nvswitch0"
    assert sink.events[3].metadata["process"] == "python3"
    assert sink.events[3].metadata["decided_by"] == "policy"


async def test_floods_become_one_event_per_gpu_and_xid_per_window(boot_id: Path) -> None:
    sink, clock = Sink(), Clock()
    monitor = _monitor(sink, clock, boot_id, dedupe_window=60.0)
    for _ in range(5000):
        await monitor.feed(XID_48_A)
        await monitor.feed(XID_48_B)
        await monitor.feed("NVRM: Xid (PCI:0000:3b:00): 13, pid=1, name=a, Graphics Exception")
    assert [(e.gpu_uuids, e.error_codes) for e in sink.events] == [
        ((UUID_A,), ("48",)),
        ((UUID_B,), ("48",)),
        ((UUID_A,), ("13",)),
    ]
    assert all("repeats" not in e.metadata for e in sink.events)
    clock.now += 60
    event = await monitor.feed(XID_48_A)
    assert event is not None
    assert event.metadata["repeats"] == "4999"
    assert len(sink.events) == 4


async def test_a_reset_opens_the_gpu_for_new_faults(boot_id: Path) -> None:
    sink, clock = Sink(), Clock()
    monitor = _monitor(sink, clock, boot_id)
    assert await monitor.feed(XID_48_A) is not None
    assert await monitor.feed(XID_48_A) is None
    assert await monitor.feed(
        "Nov 23 02:09:12 gpu-node-7 nvidia-smi[4242]: GPU 00000000:3B:00.0 was successfully reset."
    )
    assert await monitor.feed(XID_48_A) is not None  # news again, inside the old window
    assert await monitor.feed(XID_48_B) is not None


RESET_FAILURES = [
    "NVRM: GPU 0000:3b:00.0: GPU reset did not complete",
    "NVRM: GPU 0000:3b:00.0: GPU reset was not successful",
    "NVRM: GPU 0000:3b:00.0: GPU reset timed out before it completed",
    "Nov 23 02:09:12 gpu-node-7 nvidia-smi[4242]: GPU 00000000:3B:00.0 was not successfully reset.",
]


@pytest.mark.parametrize("failure", RESET_FAILURES)
async def test_a_failed_reset_leaves_the_gpus_fault_open(boot_id: Path, failure: str) -> None:
    sink, clock = Sink(), Clock()
    monitor = _monitor(sink, clock, boot_id)
    faults = OpenFaults()
    fault = await monitor.feed(XID_48_A)
    assert fault is not None
    failed = await monitor.feed(failure)
    assert failed is not None
    assert (failed.check_name, failed.is_healthy, failed.is_fatal, failed.action) == (CHECK_RESET, False, False, A.NONE)
    assert failed.gpu_uuids == (UUID_A,)
    assert failed.message.startswith("GPU reset failed (")
    for event in sink.events:
        faults.apply(event)
    verdict = faults.gpu_verdict("gpu-node-7", UUID_A)
    assert (verdict.healthy, verdict.action) == (False, A.COMPONENT_RESET), "the XID is still open"
    assert await monitor.feed(XID_48_A) is None, "the GPU's flood-control window stands: nothing was reset"


async def test_boot_id_change_reports_gpus_healthy_and_forgets_state(boot_id: Path) -> None:
    sink, clock = Sink(), Clock()
    monitor = _monitor(sink, clock, boot_id, boot_check_interval=5.0)
    await monitor.start()
    for line in [*FALLEN_OFF_GROUP[:3], XID_48_A]:
        await monitor.feed(line)
    await monitor.feed("nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 20034, Fatal, Link 30 LTSSM Fault Up")
    assert len(sink.events) == 3
    assert await monitor.feed(XID_48_A) is None
    sink.events.clear()

    boot_id.write_text("1b0c2d3e-0000-4000-8000-000000000002\n")
    clock.now += 1
    assert await monitor.feed("[ 1.0] eth0: link up") is None  # not checked yet: at most every 5 s
    assert sink.events == []
    clock.now += 5
    assert await monitor.feed("[ 2.0] eth0: link up") is None
    healthy = sink.events
    assert {(e.check_name, e.gpu_uuids, next(x.value for x in e.entities if x.type == PCI)) for e in healthy} == {
        ("SysLogsXIDError", (UUID,), "0000:91:00.0"),  # seen in the log only
        ("SysLogsXIDError", (UUID_A,), "0000:3b:00.0"),
        ("SysLogsXIDError", (UUID_B,), "0000:5d:00.0"),  # known from the GPU map only
        ("SysLogsSXIDError", (), "0000:05:00.0"),
    }
    assert all(
        e.is_healthy and not e.is_fatal and e.action is A.NONE and e.message == HEALTHY_AFTER_REBOOT for e in healthy
    )
    assert monitor.boot_id == "1b0c2d3e-0000-4000-8000-000000000002"
    sink.events = []
    after = await monitor.feed(XID_48_A)  # dedupe windows went with the old boot
    assert after is not None
    assert after.metadata["boot_id"] == "1b0c2d3e-0000-4000-8000-000000000002"
    fallen = await monitor.feed(FALLEN_OFF_GROUP[2])
    assert fallen is not None
    assert fallen.gpu_uuids == ()  # the `GPU at PCI` naming was forgotten too


async def test_a_repeat_after_an_unnoticed_reboot_is_not_folded_into_the_old_boots_window(boot_id: Path) -> None:
    """A simulated node reboots under a running agent: before a repeat is dropped, the boot ID is read."""
    sink, clock = Sink(), Clock()
    monitor = _monitor(sink, clock, boot_id, boot_check_interval=5.0)
    await monitor.start()
    assert await monitor.feed(XID_48_A) is not None
    clock.now += 0.05
    assert await monitor.feed(XID_48_A) is None  # a repeat: read the boot ID a moment ago
    boot_id.write_text("1b0c2d3e-0000-4000-8000-000000000005\n")
    clock.now += 0.2  # far from the 5 s boot check, but the boot ID is no longer fresh
    after = await monitor.feed(XID_48_A)
    assert after is not None, "the first fault of the new boot"
    assert after.metadata["boot_id"] == "1b0c2d3e-0000-4000-8000-000000000005"
    assert any(e.message == HEALTHY_AFTER_REBOOT for e in sink.events)


async def test_the_end_of_a_remediation_makes_the_next_fault_news(boot_id: Path) -> None:
    sink, clock = Sink(), Clock()
    monitor = _monitor(sink, clock, boot_id)
    assert await monitor.feed(XID_48_A) is not None
    assert await monitor.feed(XID_48_B) is not None
    assert await monitor.feed(XID_48_A) is None  # folded while the remediation runs
    assert await monitor.remediation_ended(held_seen_at=clock.now + 1) == []  # that drop came before
    again = await monitor.feed(XID_48_A)
    assert again is not None, "inside the old window, but the remediation has ended"
    assert await monitor.feed(XID_48_B) is not None, "every window ended with it"
    assert await monitor.feed(XID_48_A) is None
    assert await monitor.feed(XID_48_B) is None


async def test_a_repeat_dropped_just_before_the_end_was_seen_is_reported_then(boot_id: Path) -> None:
    """The agent learns of the end late: a repeat logged in between may be the repaired node's first fault."""
    sink, clock = Sink(), Clock()
    monitor = _monitor(sink, clock, boot_id)
    assert await monitor.feed(XID_48_A) is not None
    assert await monitor.feed(XID_48_B) is not None
    assert await monitor.feed(XID_48_B) is None  # dropped long before the end was seen
    held_seen_at = clock.now + 1
    clock.now += 120
    assert await monitor.feed(XID_48_A) is not None  # a new window (the old one passed)
    clock.now += 1
    dropped = await monitor.feed(XID_48_A)  # after the node was last seen held
    assert dropped is None
    clock.now += 1
    (reported,) = await monitor.remediation_ended(held_seen_at=held_seen_at)
    assert (reported.xid, reported.gpu_uuids, reported.is_fatal) == (48, (UUID_A,), True)
    assert "repeats" not in reported.metadata, "the only repeat is the one reported"
    assert sink.events[-1] is reported
    assert await monitor.feed(XID_48_A) is None, "its window opened anew"
    assert await monitor.feed(XID_48_B) is not None
    clock.now += 31  # the last drop is older than the 30 s the agent may take to learn of an end
    assert await monitor.remediation_ended(held_seen_at=None) == []


class RefusingSink(Sink):
    """Fails (broken, not full) while `refusing` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.refusing = False

    async def submit(self, event: HealthEvent) -> None:
        if self.refusing:
            raise OSError("No space left on device")
        await super().submit(event)


async def test_repeats_released_at_the_end_are_kept_when_the_sink_refuses_them(boot_id: Path) -> None:
    sink, clock = RefusingSink(), Clock()
    monitor = _monitor(sink, clock, boot_id)
    for line in (XID_48_A, XID_48_B):
        assert await monitor.feed(line) is not None
        assert await monitor.feed(line) is None  # a repeat after the end (the node last held before)
    sink.refusing = True
    with pytest.raises(OSError, match="No space left"):
        await monitor.remediation_ended(held_seen_at=clock.now - 1)
    assert len(sink.events) == 2
    sink.refusing = False
    again = await monitor.feed(XID_48_A)
    assert again is not None, "the refused repeat's window did not open: the next fault is news"
    assert [event.gpu_uuids for event in sink.events[2:]] == [(UUID_A,), (UUID_B,)], (
        "the repeat of B that was not reported goes with the next event the sink takes"
    )
    assert await monitor.feed(XID_48_B) is None, "its window opened once it was reported"


async def test_a_restarted_monitor_notices_the_reboot_from_its_state_file(boot_id: Path, tmp_path: Path) -> None:
    state = tmp_path / "state" / "kmsg.json"
    sink, clock = Sink(), Clock()
    first = _monitor(sink, clock, boot_id, state_path=state)
    await first.start()
    assert sink.events == []  # nothing to compare with yet
    again = _monitor(sink, clock, boot_id, state_path=state)
    await again.start()
    assert sink.events == []  # same boot: a plain restart of the agent
    boot_id.write_text("1b0c2d3e-0000-4000-8000-000000000003\n")
    after_reboot = _monitor(sink, clock, boot_id, state_path=state)
    await after_reboot.start()
    assert sorted(e.gpu_uuids for e in sink.events) == sorted([(UUID_A,), (UUID_B,)])
    assert '"1b0c2d3e-0000-4000-8000-000000000003"' in state.read_text()


async def test_run_survives_a_failing_sink(boot_id: Path) -> None:
    class Flaky(Sink):
        async def submit(self, event: HealthEvent) -> None:
            if not self.events and event.xid == 48:
                self.events.append(event)
                raise ConnectionError("intake is down")
            self.events.append(event)

    async def lines() -> AsyncIterator[str | bytes]:
        yield XID_48_A
        yield b"\xff\xfe garbage"
        yield XID_48_B.encode()

    sink, clock = Flaky(), Clock()
    await _monitor(sink, clock, boot_id).run(lines())
    assert [e.gpu_uuids for e in sink.events] == [(UUID_A,), (UUID_B,)]


async def test_a_full_sink_delays_a_fault_and_never_loses_it(boot_id: Path) -> None:
    """A publisher that can hold no more faults raises `SinkFull`: the monitor waits and tries the same
    event again (reading no further meanwhile) instead of logging it and moving on to the next line."""

    class Full(Sink):
        def __init__(self) -> None:
            super().__init__()
            self.refusals = 2

        async def submit(self, event: HealthEvent) -> None:
            if self.refusals:
                self.refusals -= 1
                raise SinkFull("the spool holds no more faults")
            self.events.append(event)

    async def lines() -> AsyncIterator[str | bytes]:
        yield XID_48_A
        yield XID_48_B

    sink, clock = Full(), Clock()
    await _monitor(sink, clock, boot_id).run(lines())
    assert [e.gpu_uuids for e in sink.events] == [(UUID_A,), (UUID_B,)]
    assert sink.refusals == 0


async def test_a_running_monitor_notices_a_reboot_without_any_line(boot_id: Path) -> None:
    """A simulated node reboots under a running agent, and its kernel log may stay quiet after."""
    sink, clock = Sink(), Clock()
    quiet = asyncio.Event()

    async def lines() -> AsyncIterator[str | bytes]:
        yield XID_48_A
        await quiet.wait()

    monitor = _monitor(sink, clock, boot_id, boot_check_interval=0.05)
    running = asyncio.create_task(monitor.run(lines()))
    try:
        for _ in range(100):
            if sink.events:
                break
            await asyncio.sleep(0.01)
        boot_id.write_text("1b0c2d3e-0000-4000-8000-000000000004\n")
        clock.now += 1
        for _ in range(200):
            if any(e.is_healthy for e in sink.events):
                break
            await asyncio.sleep(0.01)
    finally:
        quiet.set()
        await running
    assert monitor.boot_id == "1b0c2d3e-0000-4000-8000-000000000004"
    healthy = [e for e in sink.events if e.is_healthy]
    assert (UUID_A,) in {e.gpu_uuids for e in healthy} and all(e.message == HEALTHY_AFTER_REBOOT for e in healthy)
    assert len({e.gpu_uuids for e in healthy}) == len(healthy), "one reboot is reported once"
