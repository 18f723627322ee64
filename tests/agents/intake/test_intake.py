"""The PlatformConnector intake, driven by the stub generated from the contract over the unix socket."""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
import uuid
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]

from gpuheal.agents.intake import IntakeServer, IntakeSettings
from gpuheal.agents.intake.server import SERVICE_NAME
from gpuheal.agents.unix_socket import SocketInUse, prepare_socket_path
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.health import Entity, HealthEvent, ProcessingStrategy
from gpuheal.protos import health_event_pb2 as pb
from gpuheal.protos import health_event_pb2_grpc as pb_grpc
from tests.agents.intake.conftest import LIMITS, Intake, RecordingSink
from tests.agents.listening import listening_tcp, needs_proc


def xid_event(**fields: object) -> pb.HealthEvent:
    event = pb.HealthEvent(
        version=1,
        agent="syslog-health-monitor",
        componentClass="GPU",
        checkName="SysLogsXIDError",
        isFatal=True,
        isHealthy=False,
        message="XID 79: GPU has fallen off the bus",
        recommendedAction=pb.RESTART_BM,
        errorCode=["79"],
        entitiesImpacted=[
            pb.Entity(entityType="GPU_UUID", entityValue="GPU-0b7e5c1a"),
            pb.Entity(entityType="PCI", entityValue="0000:3b:00"),
        ],
        metadata={"driver": "550.54", "zone": "a"},
        nodeName="gpu-node-1",
        processingStrategy=pb.EXECUTE_REMEDIATION,
        id="evt-1",
    )
    event.generatedTimestamp.FromDatetime(datetime(2025, 3, 1, 12, 0, 5, 250000, tzinfo=UTC))
    for name, value in fields.items():
        setattr(event, name, value)
    return event


async def rpc_error(intake: Intake, *events: pb.HealthEvent) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await intake.stub.HealthEventOccurredV1(pb.HealthEvents(version=1, events=events))
    return caught.value


async def test_a_valid_event_reaches_the_sink_converted(intake: Intake) -> None:
    await intake.stub.HealthEventOccurredV1(pb.HealthEvents(version=1, events=[xid_event()]))

    assert intake.sink.events == [
        HealthEvent(
            id="evt-1",
            node="gpu-node-1",
            agent="syslog-health-monitor",
            component_class="GPU",
            check_name="SysLogsXIDError",
            is_fatal=True,
            is_healthy=False,
            message="XID 79: GPU has fallen off the bus",
            action=RecommendedAction.RESTART_BM,
            error_codes=("79",),
            entities=(Entity(type="GPU_UUID", value="GPU-0b7e5c1a"), Entity(type="PCI", value="0000:3b:00")),
            metadata={"driver": "550.54", "zone": "a"},
            generated_at=datetime(2025, 3, 1, 12, 0, 5, 250000, tzinfo=UTC),
            strategy=ProcessingStrategy.EXECUTE_REMEDIATION,
        )
    ]
    assert intake.sink.events[0].xid == 79
    assert intake.sink.events[0].needs_remediation


async def test_strategy_mapping_fresh_ids_and_custom_actions(intake: Intake) -> None:
    events = [
        xid_event(id="", processingStrategy=pb.UNSPECIFIED),
        xid_event(id="", processingStrategy=pb.STORE_ONLY),
        xid_event(id="keep-me", processingStrategy=pb.STORE_AND_ANALYSE),
        xid_event(recommendedAction=pb.CUSTOM, customRecommendedAction="call the vendor"),
    ]
    events[0].ClearField("generatedTimestamp")
    await intake.stub.HealthEventOccurredV1(pb.HealthEvents(events=events))

    first, second, third, fourth = intake.sink.events
    assert first.strategy is ProcessingStrategy.EXECUTE_REMEDIATION
    assert first.generated_at is None
    assert second.strategy is ProcessingStrategy.STORE_ONLY
    assert not second.changes_the_cluster
    assert third.strategy is ProcessingStrategy.STORE_AND_ANALYSE
    assert third.id == "keep-me"
    # Empty ids become distinct UUIDs.
    assert uuid.UUID(first.id) != uuid.UUID(second.id)
    assert (fourth.action, fourth.custom_action) == (RecommendedAction.CUSTOM, "call the vendor")


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ({"nodeName": ""}, "events[2].nodeName is required"),
        ({"nodeName": "   "}, "events[2].nodeName is required"),
        (
            {"recommendedAction": pb.CUSTOM, "customRecommendedAction": ""},
            "events[2].customRecommendedAction is required when recommendedAction is CUSTOM",
        ),
    ],
)
async def test_an_invalid_event_rejects_the_whole_batch(intake: Intake, bad: dict[str, object], expected: str) -> None:
    error = await rpc_error(intake, xid_event(), xid_event(), xid_event(**bad), xid_event())

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == expected
    assert intake.sink.events == []


async def test_out_of_range_timestamp_is_invalid(intake: Intake) -> None:
    event = xid_event()
    event.generatedTimestamp.seconds = 10**12
    error = await rpc_error(intake, event)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "events[0].generatedTimestamp is out of range"


async def test_every_problem_is_named(intake: Intake) -> None:
    error = await rpc_error(intake, xid_event(nodeName=""), xid_event(), xid_event(id="i" * 300))
    assert error.details() == "events[0].nodeName is required; events[2].id is 300 bytes; at most 256 are accepted"


async def test_too_many_events_is_resource_exhausted(intake: Intake) -> None:
    error = await rpc_error(intake, *[xid_event() for _ in range(LIMITS.max_events + 1)])
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"at most {LIMITS.max_events}" in (error.details() or "")
    assert intake.sink.events == []
    # The limit itself is fine.
    await intake.stub.HealthEventOccurredV1(pb.HealthEvents(events=[xid_event() for _ in range(LIMITS.max_events)]))
    assert len(intake.sink.events) == LIMITS.max_events


async def test_too_many_bytes_is_resource_exhausted(intake: Intake) -> None:
    error = await rpc_error(intake, xid_event(message="x" * LIMITS.max_message_bytes))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert intake.sink.events == []


async def test_socket_is_0660_and_health_is_served(intake: Intake) -> None:
    path = intake.server.settings.socket_path
    assert stat.S_ISSOCK(path.stat().st_mode)
    assert stat.S_IMODE(path.stat().st_mode) == 0o660

    health = health_pb2_grpc.HealthStub(intake.channel)
    for service in ("", SERVICE_NAME):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert SERVICE_NAME == "datamodels.PlatformConnector"


async def test_stale_socket_is_replaced_and_a_live_one_refused(socket_dir: Path) -> None:
    path = socket_dir / "deeper" / "intake.sock"
    path.parent.mkdir()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays; nobody listens: what a crashed agent leaves behind
    sink = RecordingSink()

    async with IntakeServer(sink, IntakeSettings(socket_path=path)) as server:
        async with grpc.aio.insecure_channel(server.socket_target) as channel:
            await pb_grpc.PlatformConnectorStub(channel).HealthEventOccurredV1(pb.HealthEvents(events=[xid_event()]))
        with pytest.raises(SocketInUse):
            await IntakeServer(RecordingSink(), IntakeSettings(socket_path=path)).start()
    assert len(sink.events) == 1
    assert not path.exists()


@needs_proc
async def test_tcp_only_when_configured_and_on_loopback(socket_dir: Path) -> None:
    sink = RecordingSink()
    before = listening_tcp()
    async with IntakeServer(sink, IntakeSettings(socket_path=socket_dir / "a.sock")) as server:
        assert server.tcp_port is None
        assert listening_tcp() == before  # no TCP listener at all
    async with IntakeServer(sink, IntakeSettings(socket_path=socket_dir / "b.sock", tcp_port=0)) as server:
        port = server.tcp_port
        assert port
        # Bound to loopback only: a wildcard bind (0.0.0.0 or ::) would show up here instead.
        assert listening_tcp() - before == {(ipaddress.IPv4Address("127.0.0.1"), port)}
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await pb_grpc.PlatformConnectorStub(channel).HealthEventOccurredV1(pb.HealthEvents(events=[xid_event()]))
    assert len(sink.events) == 1
    assert listening_tcp() == before  # and the listener is gone with the server


async def test_a_failing_sink_answers_unavailable_naming_the_first_event_not_taken(socket_dir: Path) -> None:
    class Flaky(RecordingSink):
        async def submit(self, event: HealthEvent) -> None:
            if len(self.events) == 1:
                raise OSError("disk full")
            await super().submit(event)

    sink = Flaky()
    async with IntakeServer(sink, IntakeSettings(socket_path=socket_dir / "c.sock")) as server:
        channel = grpc.aio.insecure_channel(server.socket_target)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pb_grpc.PlatformConnectorStub(channel).HealthEventOccurredV1(
                pb.HealthEvents(events=[xid_event(), xid_event()])
            )
        await channel.close()
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "events[1]" in (caught.value.details() or "")
    assert len(sink.events) == 1
    # Only what the sink took counts as taken (the demo's load shows this count as a rate).
    assert server.events_taken == 1


async def test_events_taken_counts_the_events_the_sink_took_not_rejected_batches(intake: Intake) -> None:
    await intake.stub.HealthEventOccurredV1(pb.HealthEvents(version=1, events=[xid_event(), xid_event(id="evt-2")]))
    await rpc_error(intake, xid_event(), xid_event(nodeName=""))

    assert intake.server.events_taken == 2


def test_socket_paths_over_the_kernel_limit_are_refused(socket_dir: Path) -> None:
    long_path = socket_dir / ("x" * 120) / "intake.sock"
    with pytest.raises(ValueError, match="longer than"):
        prepare_socket_path(long_path)
    assert not os.path.exists(long_path.parent)
