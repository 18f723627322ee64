"""The telemetry intake on a real unix socket: what it keeps, what it exports, what it reports as faults."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from gpuheal.agents.telemetry import LatestMetrics
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.telemetry import TelemetryPoint
from gpuheal.domain.xid_policy import XidPolicy
from gpuheal.protos import telemetry_pb2 as pb
from gpuheal.tools.telemetry.publish import message
from tests.agents.telemetry import readings
from tests.agents.telemetry.harness import (
    DBE_AGG,
    DBE_VOL,
    GPU_A,
    GPU_B,
    NODE,
    REMAP,
    XID,
    Intake,
    RecordingSink,
    reading,
    serve,
)


@pytest.fixture
async def intake(socket_path: Path) -> AsyncIterator[Intake]:
    async with serve(socket_path, known={GPU_A, GPU_B}) as served:
        yield served


async def test_the_latest_value_per_gpu_and_metric_is_exported_with_the_exporter_s_labels(intake: Intake) -> None:
    await intake.publish(
        reading("DCGM_FI_DEV_GPU_UTIL", "75"),
        reading("DCGM_FI_DEV_GPU_UTIL", "80"),
        reading("DCGM_FI_DEV_GPU_UTIL", "12", gpu=GPU_B),
        reading("DCGM_FI_DEV_FB_USED", "40000"),
    )
    late = reading("DCGM_FI_DEV_GPU_UTIL", "5")
    late.payload = late.payload.replace(b'"timestamp":"2', b'"timestamp":"1')  # published long ago
    await intake.publish(late)

    text = intake.metrics()
    labels = 'Hostname="dgx-node-031",UUID="{uuid}",device="{device}",gpu="{gpu}",modelName="NVIDIA H100 80GB HBM3"'
    assert f"DCGM_FI_DEV_GPU_UTIL{{{labels.format(uuid=GPU_A, device='nvidia0', gpu=0)}}} 80.0" in text
    assert f"DCGM_FI_DEV_GPU_UTIL{{{labels.format(uuid=GPU_B, device='nvidia1', gpu=1)}}} 12.0" in text
    assert f"DCGM_FI_DEV_FB_USED{{{labels.format(uuid=GPU_A, device='nvidia0', gpu=0)}}} 40000.0" in text
    assert 'gpuheal_agent_telemetry_readings_total{outcome="accepted"} 5.0' in text
    assert intake.sink.events == [], "utilisation and memory are no faults"


async def test_a_new_xid_is_one_event_classified_like_the_kernel_log_s_and_replays_report_nothing(
    intake: Intake,
) -> None:
    # XID 79, cleared (DCGM restarted), and 79 again: two occurrences, each reported once however
    # often a looping streamer replays the file.
    rows = [reading(XID, "0", at=0), reading(XID, "79", at=1), reading(XID, "0", at=2), reading(XID, "79", at=3)]
    for _ in range(3):
        await intake.publish(*rows)
    await intake.publish(reading(XID, "13", at=4), reading(XID, "13", at=5))

    fatal, again, application = intake.sink.events
    assert again.xid == 79 and again.id != fatal.id
    assert (fatal.check_name, fatal.error_codes, fatal.xid) == ("DcgmXidError", ("79",), 79)
    assert fatal.is_fatal and fatal.action is RecommendedAction.RESTART_BM and fatal.needs_remediation
    assert fatal.node == NODE and fatal.gpu_uuids == (GPU_A,)
    assert fatal.metadata["decided_by"] == "catalog" and fatal.metadata["instance_id"] == "streamer-1"
    assert "XID 79" in fatal.message and fatal.agent == "gpuheal-telemetry"
    assert application.xid == 13 and not application.is_fatal and application.action is RecommendedAction.NONE


async def test_the_operator_s_xid_override_decides(socket_path: Path) -> None:
    policy = XidPolicy(overrides={13: RecommendedAction.RESTART_BM})
    async with serve(socket_path, policy=policy) as intake:
        await intake.publish(reading(XID, "13"))
        [event] = intake.sink.events
        assert event.action is RecommendedAction.RESTART_BM and event.is_fatal
        assert event.metadata["decided_by"] == "policy"


async def test_double_bit_ecc_growth_is_news_and_a_lifetime_count_starts_as_history(intake: Intake) -> None:
    rows = [
        reading(DBE_AGG, "5", gpu=GPU_B, at=0),  # the GPU's history: no event
        reading(DBE_VOL, "0", gpu=GPU_B, at=0),
        reading(DBE_VOL, "2", gpu=GPU_B, at=1),  # one event
        reading(DBE_AGG, "7", gpu=GPU_B, at=1),  # one event
    ]
    await intake.publish(*rows, *rows)  # the replay reports nothing again
    await intake.publish(reading(DBE_VOL, "3", gpu=GPU_B, at=2))  # grew again: one event

    assert [(e.error_codes, e.metadata["previous"], e.metadata["value"]) for e in intake.sink.events] == [
        (("ECC_DBE_VOLATILE",), "0", "2"),
        (("ECC_DBE_AGGREGATE",), "5", "7"),
        (("ECC_DBE_VOLATILE",), "2", "3"),
    ]
    assert all(e.action is RecommendedAction.COMPONENT_RESET and e.needs_remediation for e in intake.sink.events)
    assert {e.check_name for e in intake.sink.events} == {"DcgmEccDoubleBitError"}


async def test_a_row_remap_failure_is_reported_once_each_time_it_is_raised(intake: Intake) -> None:
    rows = [reading(REMAP, value, at=at) for at, value in enumerate(("0", "1", "1", "0", "1"))]
    for _ in range(2):  # and replayed
        await intake.publish(*rows)

    first, second = intake.sink.events
    assert first.check_name == "DcgmRowRemapFailure" and first.action is RecommendedAction.CONTACT_SUPPORT
    assert first.id != second.id, "raised again after it cleared"


async def test_the_same_new_xid_sent_at_once_by_many_workers_is_one_event(intake: Intake) -> None:
    await asyncio.gather(*(intake.publish(reading(XID, "48")) for _ in range(20)))

    assert [e.xid for e in intake.sink.events] == [48]


async def test_a_reading_of_another_node_is_refused_and_changes_nothing(intake: Intake) -> None:
    refused = await intake.refused(reading(XID, "79", host="dgx-node-032"))

    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.details() == "hostname 'dgx-node-032' is not this agent's node 'dgx-node-031'"
    assert intake.sink.events == [] and list(intake.service.store.readings()) == []
    assert 'gpuheal_agent_telemetry_readings_total{outcome="other_node"} 1.0' in intake.metrics()


def _without_header(outgoing: pb.TelemetryMessage) -> pb.TelemetryMessage:
    del outgoing.headers["gpu_uuid"]
    return outgoing


def _disagreeing(outgoing: pb.TelemetryMessage) -> pb.TelemetryMessage:
    outgoing.headers["gpu_uuid"] = GPU_B
    return outgoing


def _not_json(outgoing: pb.TelemetryMessage) -> pb.TelemetryMessage:
    outgoing.payload = b"{"
    return outgoing


@pytest.mark.parametrize(
    ("outgoing", "detail"),
    [
        (_without_header(reading(XID, "79")), "headers.gpu_uuid required"),
        (_disagreeing(reading(XID, "79")), f"headers.gpu_uuid '{GPU_B}' is not the payload's '{GPU_A}'"),
        (_not_json(reading(XID, "79")), "the payload is no telemetry point"),
        (reading("node_load1", "3"), "metric_name 'node_load1' is not a DCGM field name"),
    ],
)
async def test_a_malformed_message_is_refused_naming_the_problem(
    intake: Intake, outgoing: pb.TelemetryMessage, detail: str
) -> None:
    refused = await intake.refused(outgoing)

    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert detail in (refused.details() or "")
    assert intake.sink.events == [] and list(intake.service.store.readings()) == []


async def test_bytes_that_do_not_decode_are_invalid_argument(intake: Intake, socket_path: Path) -> None:
    async with grpc.aio.insecure_channel(f"unix:{socket_path}") as channel:
        publish: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/gpuheal.telemetry.v1.TelemetryIntake/Publish"
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await publish(b"\xff\xff\xff")
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_the_store_is_bounded_and_keeps_updating_what_it_holds(socket_path: Path) -> None:
    async with serve(socket_path, store=LatestMetrics(max_gpus=1, max_metrics=2)) as intake:
        await intake.publish(reading("DCGM_FI_DEV_GPU_UTIL", "1"), reading("DCGM_FI_DEV_GPU_TEMP", "60"))
        another_gpu = await intake.refused(reading("DCGM_FI_DEV_GPU_UTIL", "1", gpu=GPU_B))
        another_metric = await intake.refused(reading("DCGM_FI_DEV_FB_USED", "1"))
        await intake.publish(reading("DCGM_FI_DEV_GPU_UTIL", "99"))

        assert another_gpu.code() is another_metric.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "at most 1 GPUs" in (another_gpu.details() or "")
        latest = intake.service.store.latest(GPU_A, "DCGM_FI_DEV_GPU_UTIL")
        assert latest is not None and latest.value == 99
        assert len(list(intake.service.store.readings())) == 2


async def test_a_fault_waits_for_a_full_sink_and_one_not_taken_is_news_when_sent_again(socket_path: Path) -> None:
    async with serve(socket_path, sink=RecordingSink(full=1)) as intake:
        await intake.publish(reading(XID, "79"))  # taken on the second try
        assert [e.xid for e in intake.sink.events] == [79]

        intake.sink.full = 1_000
        call = asyncio.ensure_future(intake.stub.Publish(reading(XID, "48", at=1)))
        await asyncio.sleep(0.2)
        await intake.server.stop()  # the agent stops while the sink is full
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE

        intake.sink.full = 0
        await intake.server.start()
        await intake.publish(reading(XID, "48", at=1))  # the streamer sends it again
        assert [e.xid for e in intake.sink.events] == [79, 48]


async def test_the_socket_is_0660_and_a_stale_one_is_replaced(socket_path: Path) -> None:
    async with serve(socket_path) as intake:
        assert socket_path.stat().st_mode & 0o777 == 0o660
        await intake.server.stop()
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(socket_path))  # a crashed agent's socket: bound, nobody listening
    async with serve(socket_path) as intake:
        await intake.publish(reading("DCGM_FI_DEV_GPU_UTIL", "1"))
        assert socket_path.stat().st_mode & 0o777 == 0o660


def test_a_reading_s_fields_survive_the_wire() -> None:
    row = readings.row("DCGM_FI_DEV_GPU_UTIL", "75", gpu=GPU_A, host=NODE, pod="job-1", labels_raw='err_msg="a, b"')
    outgoing = message(row, "streamer-1", datetime.now(UTC))

    assert dict(outgoing.headers) == {"instance_id": "streamer-1", "gpu_uuid": GPU_A, "metric_name": row.metric_name}
    assert dict(outgoing.metadata) == {"hostname": NODE, "device": "nvidia0"}
    point = TelemetryPoint.model_validate_json(outgoing.payload)
    assert (point.labels_raw, point.pod, point.number, point.observed_at) == (
        row.labels_raw,
        "job-1",
        75,
        row.timestamp,
    )
