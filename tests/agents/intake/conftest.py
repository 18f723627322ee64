"""An intake server on a short unix socket path, a recording sink, and a contract-generated client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from gpuheal.agents.intake import IntakeLimits, IntakeServer, IntakeSettings
from gpuheal.domain.health import HealthEvent
from gpuheal.protos import health_event_pb2_grpc as pb_grpc

LIMITS = IntakeLimits(max_events=10, max_message_bytes=64 * 1024)


class RecordingSink:
    """Keeps what it is given, in order."""

    def __init__(self) -> None:
        self.events: list[HealthEvent] = []

    async def submit(self, event: HealthEvent) -> None:
        self.events.append(event)


@dataclass
class Intake:
    server: IntakeServer
    sink: RecordingSink
    stub: pb_grpc.PlatformConnectorAsyncStub
    channel: grpc.aio.Channel


@pytest.fixture
def socket_dir(short_dir: Path) -> Path:
    return short_dir


@pytest.fixture
async def intake(socket_dir: Path) -> AsyncIterator[Intake]:
    sink = RecordingSink()
    settings = IntakeSettings(socket_path=socket_dir / "run" / "intake.sock", limits=LIMITS)
    async with IntakeServer(sink, settings) as server:
        channel = grpc.aio.insecure_channel(server.socket_target)
        try:
            yield Intake(server, sink, pb_grpc.PlatformConnectorStub(channel), channel)
        finally:
            await channel.close()
