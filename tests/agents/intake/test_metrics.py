"""The intake's events, counted by kind and by what became of them."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from prometheus_client.registry import CollectorRegistry

from gpuheal.agents.intake import IntakeServer, IntakeSettings
from gpuheal.agents.metrics import AgentMetrics
from gpuheal.agents.sink import SinkFull
from gpuheal.domain.health import HealthEvent
from gpuheal.protos import health_event_pb2 as pb
from gpuheal.protos import health_event_pb2_grpc as pb_grpc
from tests.agents.intake.conftest import RecordingSink
from tests.agents.intake.test_intake import xid_event


class TakesTwo(RecordingSink):
    """Full after two events."""

    async def submit(self, event: HealthEvent) -> None:
        if len(self.events) == 2:
            raise SinkFull("no room")
        await super().submit(event)


async def test_events_are_counted_accepted_rejected_or_refused_by_kind(socket_dir: Path) -> None:
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry)
    healthy = xid_event(isFatal=False, isHealthy=True, id="ok")
    warning = xid_event(isFatal=False, id="warn")
    settings = IntakeSettings(socket_path=socket_dir / "m.sock")
    server = IntakeServer(TakesTwo(), settings, counted=metrics.intake)
    async with server, grpc.aio.insecure_channel(server.socket_target) as channel:
        stub = pb_grpc.PlatformConnectorStub(channel)
        await stub.HealthEventOccurredV1(pb.HealthEvents(events=[healthy, warning]))
        with pytest.raises(grpc.aio.AioRpcError):  # the sink is full: both go back to the sender
            await stub.HealthEventOccurredV1(pb.HealthEvents(events=[xid_event(), healthy]))
        with pytest.raises(grpc.aio.AioRpcError):  # a nameless node: the whole request is rejected
            await stub.HealthEventOccurredV1(pb.HealthEvents(events=[xid_event(nodeName=""), warning]))

    def events(kind: str, result: str) -> float | None:
        return registry.get_sample_value("gpuheal_agent_intake_events_total", {"kind": kind, "result": result})

    assert events("healthy", "accepted") == 1
    assert events("warning", "accepted") == 1
    assert events("fatal", "refused") == 1
    assert events("healthy", "refused") == 1
    assert events("fatal", "rejected") == 1
    assert events("warning", "rejected") == 1
    assert events("fatal", "accepted") is None
