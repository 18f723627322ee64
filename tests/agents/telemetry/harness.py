"""The telemetry intake served on a real unix socket for tests, its faults going to a recording sink."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from gpuheal.agents.sink import SinkFull
from gpuheal.agents.telemetry import LatestMetrics, TelemetryCollector, TelemetryIntakeService, TelemetryServer
from gpuheal.domain.health import HealthEvent
from gpuheal.domain.xid_policy import XidPolicy
from gpuheal.protos import telemetry_pb2 as pb
from gpuheal.protos import telemetry_pb2_grpc as pb_grpc
from tests.agents.telemetry import readings

NODE = "dgx-node-031"
GPU_A = "GPU-5fd4f087-86f3-7a43-b711-4771313afc50"
GPU_B = "GPU-0c1d2e3f-4a5b-6c7d-8e9f-0a1b2c3d4e5f"
XID = "DCGM_FI_DEV_XID_ERRORS"
DBE_VOL = "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"
DBE_AGG = "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL"
REMAP = "DCGM_FI_DEV_ROW_REMAP_FAILURE"


def reading(metric: str, value: str, gpu: str = GPU_A, host: str = NODE, at: int = 0) -> pb.TelemetryMessage:
    """GPU A is nvidia0 and GPU B nvidia1 on this agent's node, unless `host` says another; read `at` s in."""
    return readings.reading(metric, value, gpu=gpu, host=host, gpu_id=0 if gpu == GPU_A else 1, at=at)


class RecordingSink:
    """Keeps the events it takes; refuses the first `full` submissions as a full publisher does."""

    def __init__(self, full: int = 0) -> None:
        self.events: list[HealthEvent] = []
        self.full = full

    async def submit(self, event: HealthEvent) -> None:
        if self.full:
            self.full -= 1
            raise SinkFull("the spool is full")
        self.events.append(event)


@dataclass
class Intake:
    service: TelemetryIntakeService
    server: TelemetryServer
    sink: RecordingSink
    stub: pb_grpc.TelemetryIntakeAsyncStub

    async def publish(self, *messages: pb.TelemetryMessage) -> None:
        for outgoing in messages:
            await self.stub.Publish(outgoing, wait_for_ready=True, timeout=10)

    async def refused(self, outgoing: pb.TelemetryMessage) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await self.stub.Publish(outgoing)
        return refused.value

    def metrics(self) -> str:
        registry = CollectorRegistry()
        registry.register(TelemetryCollector(self.service.store, self.service.outcomes))
        return generate_latest(registry).decode()


@contextlib.asynccontextmanager
async def serve(
    socket_path: Path,
    sink: RecordingSink | None = None,
    store: LatestMetrics | None = None,
    known: set[str] | None = None,
    policy: XidPolicy | None = None,
    state: Path | None = None,
) -> AsyncIterator[Intake]:
    """The intake on `socket_path`; `known` the node's GPUs (None: no GPU list), `state` its state file."""
    sink = sink or RecordingSink()
    known_gpus: Callable[[], Collection[str] | None] = lambda: known  # noqa: E731 - read at each call
    service = TelemetryIntakeService(
        NODE, sink, store or LatestMetrics(), known_gpus=known_gpus, policy=policy, state_path=state
    )
    async with (
        TelemetryServer(socket_path, service) as server,
        grpc.aio.insecure_channel(f"unix:{socket_path}") as channel,
    ):
        yield Intake(service, server, sink, pb_grpc.TelemetryIntakeStub(channel))
