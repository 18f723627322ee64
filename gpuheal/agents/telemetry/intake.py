"""`TelemetryIntake.Publish`: one DCGM reading from a streamer, kept as a metric and read for faults.

A message is accepted only whole. It needs the routing headers (`instance_id`, `gpu_uuid`,
`metric_name`) and the metadata (`hostname`, `device`) agreeing with its JSON payload (a
`TelemetryPoint`), a DCGM metric name (`DCGM_…`, which is also its Prometheus name) and, like the
PlatformConnector intake, this agent's node as the hostname: an agent speaks for its own node only,
so a reading of another machine is refused (INVALID_ARGUMENT) and changes nothing. A reading that
would grow the metrics store past its bounds is refused with FAILED_PRECONDITION, which a streamer
does not retry.

A GPU UUID this node's NVML does not list is accepted: its metrics are kept and its faults
reported, marked `gpu_known: "false"` (and logged, once per GPU). A GPU the driver no longer lists may be the one that
fell off the bus, which is exactly the fault not to drop; the hostname check keeps other nodes' GPUs
out, and the store's bounds keep a wrong CSV from costing memory. Where the agent has no GPU list
(NVML unavailable), every UUID is taken as it comes.

A reading that is news for a fault field (`signals`) becomes a health event handed to the agent's
event sink (the publisher, the same pipeline as every detector), one at a time, waiting while the
sink is full; the call answers once the sink has taken it, or UNAVAILABLE when the agent stops
first, and the streamer sends the reading again.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from collections.abc import Callable, Collection

import grpc
import pydantic
from google.protobuf import empty_pb2

from gpuheal.agents.sink import EventSink, hand_over
from gpuheal.agents.telemetry.signals import FaultSignals, fault_event
from gpuheal.agents.telemetry.store import LatestMetrics, StoreFull
from gpuheal.domain import telemetry as wire
from gpuheal.domain.telemetry import TelemetryPoint
from gpuheal.domain.xid_policy import XidPolicy
from gpuheal.protos import telemetry_pb2 as pb
from gpuheal.protos import telemetry_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

# DCGM's field names; they are the metrics' Prometheus names too, so nothing else may pass.
METRIC_NAME = re.compile(r"DCGM_[A-Za-z0-9_]+")
ACCEPTED = "accepted"


class Refused(Exception):
    """A message the intake does not take: the status to answer with, and the outcome it is counted as."""

    def __init__(self, code: grpc.StatusCode, outcome: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.outcome = outcome
        self.detail = detail


class TelemetryIntakeService(pb_grpc.TelemetryIntakeServicer):
    """Validates each reading, keeps it in `store` and hands the faults it reveals to `sink`.

    `known_gpus` answers the UUIDs of the node's GPUs, or None when the agent does not know them.
    """

    def __init__(
        self,
        node: str,
        sink: EventSink,
        store: LatestMetrics,
        *,
        known_gpus: Callable[[], Collection[str] | None] = lambda: None,
        policy: XidPolicy | None = None,
    ) -> None:
        self.node = node
        self.store = store
        self.outcomes: Counter[str] = Counter()
        self.policy = policy
        self._sink = sink
        self._known_gpus = known_gpus
        self._signals = FaultSignals()
        # One fault reading at a time: two workers sending the same new XID must make one event.
        self._reporting = asyncio.Lock()
        self._unknown_logged: set[str] = set()
        self.stopping = asyncio.Event()

    async def Publish(  # the contract names it
        self, request: pb.TelemetryMessage, context: grpc.aio.ServicerContext[pb.TelemetryMessage, empty_pb2.Empty]
    ) -> empty_pb2.Empty:
        try:
            point = self._accept(request)
            try:
                self.store.update(point)
            except StoreFull as full:
                raise Refused(grpc.StatusCode.FAILED_PRECONDITION, "store_full", str(full)) from None
        except Refused as refused:
            self.outcomes[refused.outcome] += 1
            await context.abort(refused.code, refused.detail)
        self.outcomes[ACCEPTED] += 1
        if not await self._report(point, request.headers[wire.HEADER_INSTANCE_ID]):
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the agent is stopping; send the reading again")
        return empty_pb2.Empty()

    def _accept(self, request: pb.TelemetryMessage) -> TelemetryPoint:
        missing = [f"headers.{key}" for key in wire.HEADERS if not request.headers.get(key)]
        missing += [f"metadata.{key}" for key in wire.METADATA if key not in request.metadata]
        if missing:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "malformed", f"{', '.join(missing)} required")
        try:
            point = TelemetryPoint.model_validate_json(request.payload)
        except pydantic.ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()[:5])
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT, "malformed", f"the payload is no telemetry point: {problems}"
            ) from None
        routing = {
            f"headers.{wire.HEADER_GPU_UUID}": (request.headers[wire.HEADER_GPU_UUID], point.gpu_uuid),
            f"headers.{wire.HEADER_METRIC_NAME}": (request.headers[wire.HEADER_METRIC_NAME], point.metric_name),
            f"metadata.{wire.METADATA_HOSTNAME}": (request.metadata[wire.METADATA_HOSTNAME], point.hostname),
            f"metadata.{wire.METADATA_DEVICE}": (request.metadata[wire.METADATA_DEVICE], point.device),
        }
        for name, (said, carried) in routing.items():
            if said != carried:
                raise Refused(
                    grpc.StatusCode.INVALID_ARGUMENT, "malformed", f"{name} {said!r} is not the payload's {carried!r}"
                )
        if point.hostname != self.node:
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                "other_node",
                f"hostname {point.hostname!r} is not this agent's node {self.node!r}",
            )
        if not METRIC_NAME.fullmatch(point.metric_name):
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                "malformed",
                f"metric_name {point.metric_name!r} is not a DCGM field name (DCGM_ and letters, digits, _)",
            )
        return point

    async def _report(self, point: TelemetryPoint, instance_id: str) -> bool:
        """Hand over the fault `point` reveals, if any; False when the agent stopped before the sink took it."""
        if self._signals.change(point) is None:
            return True
        async with self._reporting:
            change = self._signals.change(point)  # another call may have reported it meanwhile
            if change is None:
                return True
            metadata = {"instance_id": instance_id, "gpu_known": self._known(point.gpu_uuid)}
            event = fault_event(self.node, point, change, self.policy, metadata)
            if not await hand_over(self._sink, event, stop=self.stopping):
                return False
            self._signals.record(change)
            log.info("%s (event %s, from streamer %s)", event.message, event.id, instance_id)
            return True

    def _known(self, gpu_uuid: str) -> str:
        known = self._known_gpus()
        if known is None:
            return "unknown"
        if gpu_uuid in known:
            return "true"
        if gpu_uuid not in self._unknown_logged and len(self._unknown_logged) < self.store.max_gpus:
            self._unknown_logged.add(gpu_uuid)
            log.warning(
                "DCGM reports a fault of GPU %s, which this node's NVML does not list; reported anyway", gpu_uuid
            )
        return "false"
