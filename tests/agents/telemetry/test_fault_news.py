"""What the intake reports as a fault, and only once: replays, restarts, slow hand-overs, impossible values."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from gpuheal.agents import durable_file
from gpuheal.agents.publisher.lane import RetrySettings
from gpuheal.agents.telemetry import state as state_module
from gpuheal.domain.health import HealthEvent, ProcessingStrategy
from gpuheal.tools.telemetry import publish
from tests.agents.telemetry import readings
from tests.agents.telemetry.harness import DBE_AGG, DBE_VOL, GPU_A, GPU_B, REMAP, XID, RecordingSink, reading, serve


class SlowSink(RecordingSink):
    """Holds every event of `slow_gpu` until `release` is set, as a publisher lane waiting on Temporal does."""

    def __init__(self, slow_gpu: str) -> None:
        super().__init__()
        self.slow_gpu = slow_gpu
        self.release = asyncio.Event()
        self.submitted: list[HealthEvent] = []

    async def submit(self, event: HealthEvent) -> None:
        self.submitted.append(event)
        if event.gpu_uuids == (self.slow_gpu,):
            await self.release.wait()
        await super().submit(event)


async def test_a_looping_file_of_alternating_xids_reports_each_once(socket_path: Path) -> None:
    async with serve(socket_path) as intake:
        rows = [reading(XID, "0", at=0), reading(XID, "79", at=1), reading(XID, "48", at=2)]
        for _ in range(10):  # a looping streamer replays the same rows, observed at the same times
            await intake.publish(*rows)

        assert [event.xid for event in intake.sink.events] == [79, 48]


async def test_a_restarted_intake_remembers_what_it_reported(socket_path: Path) -> None:
    state = socket_path.parent.parent / "spool" / "telemetry-state.json"
    rows = [reading(XID, "79", at=1), reading(DBE_VOL, "2", at=1), reading(DBE_AGG, "5", at=1)]
    async with serve(socket_path, state=state) as first:
        await first.publish(*rows)
        assert [event.metadata["value"] for event in first.sink.events] == ["79", "2"]
    async with serve(socket_path, state=state) as second:
        await second.publish(*rows, reading(DBE_AGG, "6", at=2))  # the replay, then a lifetime count that grew

        assert [(event.check_name, event.metadata["value"]) for event in second.sink.events] == [
            ("DcgmEccDoubleBitError", "6")
        ]


async def test_the_same_reading_makes_the_same_event_id(socket_path: Path) -> None:
    ids = []
    for _ in range(2):
        async with serve(socket_path) as intake:
            await intake.publish(reading(XID, "79", at=1))
            ids += [event.id for event in intake.sink.events]
    assert len(ids) == 2 and ids[0] == ids[1]


async def test_a_call_that_gives_up_during_a_slow_hand_over_is_not_a_second_event(socket_path: Path) -> None:
    """The streamer's deadline passes while the sink holds the XID; its retry joins the same hand-over,
    and another GPU's fault is not held up meanwhile."""
    sink = SlowSink(GPU_A)
    async with serve(socket_path, sink=sink) as intake:
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError) as gave_up:
                await intake.stub.Publish(reading(XID, "79", at=1), timeout=0.3)
            assert gave_up.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        await intake.publish(reading(XID, "48", gpu=GPU_B, at=1))  # not behind GPU A's slow hand-over
        retry = asyncio.ensure_future(intake.publish(reading(XID, "79", at=1)))
        await asyncio.sleep(0.1)
        sink.release.set()
        await retry

        assert [(event.gpu_uuids, event.xid) for event in sink.submitted] == [((GPU_A,), 79), ((GPU_B,), 48)]
        assert intake.service.outcomes["accepted"] == 2, "a reading counts once, however often it is sent"
    assert RetrySettings().delivery_timeout.total_seconds() < publish.CALL_TIMEOUT_S


async def test_stopping_waits_for_a_hand_over_that_a_call_gave_up_on(socket_path: Path) -> None:
    sink = SlowSink(GPU_A)
    async with serve(socket_path, sink=sink) as intake:
        with pytest.raises(grpc.aio.AioRpcError):
            await intake.stub.Publish(reading(XID, "79", at=1), timeout=0.3)
        stopping = asyncio.ensure_future(intake.server.stop())
        await asyncio.sleep(0.3)
        assert not stopping.done(), "the XID is still being handed over"
        sink.release.set()
        await stopping

        assert [event.xid for event in sink.events] == [79]


async def test_a_double_bit_error_after_a_gpu_reset_is_news(socket_path: Path) -> None:
    async with serve(socket_path) as intake:
        counts = ["0", "2", "0", "1"]  # an error, the GPU reset (the volatile count restarts), another error
        await intake.publish(*(reading(DBE_VOL, count, at=at) for at, count in enumerate(counts)))

        assert [(e.metadata["previous"], e.metadata["value"]) for e in intake.sink.events] == [("0", "2"), ("0", "1")]


@pytest.mark.parametrize(
    ("metric", "value"),
    [(XID, "-1"), (XID, "79.9"), (XID, "1e300"), (XID, "65536"), (DBE_VOL, "1e308"), (REMAP, "0.5")],
)
async def test_an_impossible_fault_value_is_refused_as_malformed(socket_path: Path, metric: str, value: str) -> None:
    async with serve(socket_path) as intake:
        refused = await intake.refused(reading(metric, value))

        assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert f"{metric} {value!r} is not" in (refused.details() or "")
        assert intake.sink.events == [] and list(intake.service.store.readings()) == []
        assert intake.service.outcomes == {"malformed": 1}


async def test_a_fault_of_a_gpu_never_known_is_stored_only_and_one_lost_is_still_reported(
    socket_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stranger = "GPU-00000000-0000-0000-0000-000000000001"
    known = {GPU_A, GPU_B}
    async with serve(socket_path, known=known) as intake:
        known.discard(GPU_B)  # GPU B falls off the bus: the Device API no longer lists it
        await intake.publish(
            reading(XID, "79", gpu=stranger, at=1), reading(XID, "79", gpu=GPU_B, at=1), reading(XID, "79", at=1)
        )

    stored, lost, present = intake.sink.events
    assert stored.gpu_uuids == (stranger,) and stored.strategy is ProcessingStrategy.STORE_ONLY
    assert not stored.needs_remediation and stored.metadata["gpu_known"] == "never"
    assert f"GPU {stranger}" in caplog.text and "never known" in caplog.text
    assert lost.needs_remediation and lost.metadata["gpu_known"] == "lost"
    assert present.needs_remediation and present.metadata["gpu_known"] == "true"


async def test_the_node_name_is_matched_regardless_of_case(socket_path: Path) -> None:
    async with serve(socket_path) as intake:
        await intake.publish(reading("DCGM_FI_DEV_GPU_UTIL", "3", host="DGX-Node-031"))

        assert intake.service.outcomes == {"accepted": 1}


async def test_a_reading_dated_ahead_does_not_hide_the_faults_after_it(socket_path: Path) -> None:
    """A row dated 2099 (a clock set wrong), then a real XID: the XID is news, before and after a restart."""
    state = socket_path.parent.parent / "spool" / "telemetry-state.json"
    ahead = (datetime(2099, 1, 1, tzinfo=UTC) - readings.OBSERVED_AT).total_seconds()
    async with serve(socket_path, state=state) as first:
        await first.publish(reading(XID, "0", at=int(ahead)), reading(XID, "79", at=1))
        assert [event.xid for event in first.sink.events] == [79]
    async with serve(socket_path, state=state) as second:
        await second.publish(reading(XID, "0", at=int(ahead)), reading(XID, "31", at=2))

        assert [event.xid for event in second.sink.events] == [31]


async def test_different_faults_read_at_the_same_second_are_each_news(socket_path: Path) -> None:
    async with serve(socket_path) as intake:
        await intake.publish(reading(XID, "79", at=1), reading(XID, "31", at=1))
        await intake.publish(reading(DBE_VOL, "1", at=1), reading(DBE_VOL, "2", at=1))

        assert [(event.check_name, event.metadata["value"]) for event in intake.sink.events] == [
            ("DcgmXidError", "79"),
            ("DcgmXidError", "31"),
            ("DcgmEccDoubleBitError", "1"),
            ("DcgmEccDoubleBitError", "2"),
        ]


async def test_a_restarted_intake_with_a_looping_streamer_reports_each_xid_once(socket_path: Path) -> None:
    state = socket_path.parent.parent / "spool" / "telemetry-state.json"
    rows = [reading(XID, "0", at=0), reading(XID, "79", at=1), reading(XID, "48", at=2)]
    for _ in range(2):
        async with serve(socket_path, state=state) as intake:
            for _ in range(3):
                await intake.publish(*rows)
            events = [event.xid for event in intake.sink.events]
    assert events == [], "the second agent's replays are all old news"


def _unusable(state: Path, how: str) -> None:
    state.parent.mkdir(parents=True, exist_ok=True)
    if how == "corrupt":
        state.write_text('{"gpus": {"GPU-')
    elif how == "directory":  # an EISDIR read, as an EACCES or EIO read fails
        state.mkdir()
        (state / "inside").write_text("")
    else:
        state.write_text('{"gpus": {}}')
        state.chmod(0)


@pytest.mark.parametrize("how", ["corrupt", "directory", "unreadable"])
async def test_an_unusable_state_file_is_kept_aside_and_nothing_old_is_reported_again(
    socket_path: Path, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    if how == "unreadable" and os.geteuid() == 0:
        pytest.skip("root reads a file of mode 000; the 'directory' case fails the read instead")
    state = socket_path.parent.parent / "spool" / "telemetry-state.json"
    _unusable(state, how)
    async with serve(socket_path, state=state) as intake:
        # A looping streamer's old fault, then a reset volatile count: baselines, not news.
        await intake.publish(reading(XID, "79", at=1), reading(DBE_VOL, "2", at=1), reading(DBE_AGG, "5", at=1))
        # What changes from now on is news.
        await intake.publish(reading(XID, "79", at=1), reading(XID, "48", at=2), reading(DBE_VOL, "3", at=2))

        assert [(event.check_name, event.metadata["value"]) for event in intake.sink.events] == [
            ("DcgmXidError", "48"),
            ("DcgmEccDoubleBitError", "3"),
        ]
    [aside] = state.parent.glob("telemetry-state.json.corrupt-*")
    assert str(aside) in caplog.text
    assert json.loads(state.read_text())["gpus"][GPU_A], "a new file is written where the unusable one was"


async def test_a_state_file_written_by_a_newer_agent_is_still_used(socket_path: Path) -> None:
    state = socket_path.parent.parent / "spool" / "telemetry-state.json"
    async with serve(socket_path, state=state) as first:
        await first.publish(reading(XID, "79", at=1))
    saved = json.loads(state.read_text())
    saved["format"] = 3
    saved["gpus"][GPU_A][XID]["confidence"] = "high"
    state.write_text(json.dumps(saved))
    async with serve(socket_path, state=state) as second:
        await second.publish(reading(XID, "0", at=0), reading(XID, "79", at=1))

        assert second.sink.events == []
    assert not list(state.parent.glob("telemetry-state.json.corrupt-*"))


class FailingSink(SlowSink):
    """Holds GPU A's event until released, then fails it, as a broken publisher would."""

    async def submit(self, event: HealthEvent) -> None:
        self.submitted.append(event)
        await self.release.wait()
        raise OSError(5, "Input/output error")


async def test_a_hand_over_that_fails_after_its_call_gave_up_is_logged_and_retrieved(
    socket_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = FailingSink(GPU_A)
    async with serve(socket_path, sink=sink) as intake:
        with pytest.raises(grpc.aio.AioRpcError):
            await intake.stub.Publish(reading(XID, "79", at=1), timeout=0.3)
        [handing_over] = intake.service._handing_over.values()
        sink.release.set()
        await asyncio.wait((handing_over,))
        await asyncio.sleep(0)  # its done callbacks run
        assert not intake.service._handing_over and sink.events == []
    del handing_over
    gc.collect()  # an exception nobody retrieved is logged when its task is collected

    [failed] = [record for record in caplog.records if record.name == "gpuheal.agents.telemetry.intake"]
    assert f"{XID} reading of GPU {GPU_A}" in failed.getMessage() and "Input/output error" in failed.getMessage()
    # Only this test's task: the collection may find other tests' leftovers too.
    unretrieved = [r.getMessage() for r in caplog.records if "never retrieved" in r.getMessage()]
    assert not [message for message in unretrieved if "Input/output error" in message]


async def test_the_state_is_written_off_the_event_loop_and_in_order(
    socket_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = socket_path.parent.parent / "spool" / "telemetry-state.json"
    writers: list[threading.Thread] = []

    def recording(path: Path, data: bytes) -> None:
        writers.append(threading.current_thread())
        durable_file.write_durably(path, data)

    monkeypatch.setattr(state_module, "write_durably", recording)
    async with serve(socket_path, state=state) as intake:
        await asyncio.gather(*(intake.publish(reading(XID, str(xid), at=xid)) for xid in (13, 31, 43, 48, 79)))
    saved = json.loads(state.read_text())["gpus"][GPU_A][XID]

    assert writers and threading.main_thread() not in writers
    assert saved["previous"] == intake.sink.events[-1].xid, "the last write holds the last reading"
    assert len(saved["reported"]) == len(intake.sink.events)
