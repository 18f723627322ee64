"""`TelemetryIntake.Publish`: one DCGM reading from a streamer, kept as a metric and read for faults.

A message is accepted only whole. It needs the routing headers (`instance_id`, `gpu_uuid`,
`metric_name`) and the metadata (`hostname`, `device`) agreeing with its JSON payload (a
`TelemetryPoint`), a DCGM metric name (`DCGM_…`, which is also its Prometheus name), a fault field's
value an integer such a field can hold (`signals.fault_value`) and, like the PlatformConnector intake,
this agent's node as the hostname (compared regardless of case: dcgm-exporter's `Hostname` must be
the node's name): an agent speaks for its own node only, so a reading of another machine is refused
(INVALID_ARGUMENT) and changes nothing. A reading that would grow the metrics store past its bounds
is refused with FAILED_PRECONDITION, which a streamer does not retry. A reading is counted as
accepted once its call succeeds, so a reading sent again after a failed call counts once.

A fault of a GPU the agent's Device API has never listed during this agent's life is recorded only
(STORE_ONLY, `gpu_known: "never"`, with a warning naming the UUID): nothing would ever report that
GPU healthy again, so acting on it would wait forever and end with a person. A GPU listed once and
no longer (fallen off the bus) is exactly the fault not to drop: it is reported as any other
(`gpu_known: "lost"`). Where the agent has no GPU list (NVML unavailable), every fault is reported
(`gpu_known: "unknown"`).

A reading that is news for a fault field (`signals`) becomes a health event handed to the agent's
event sink (the publisher, the same pipeline as every detector), one at a time per GPU, waiting while
the sink is full. The hand-over runs in a task of its own that a call giving up (its deadline, the
streamer stopping) does not cancel: a call sending the same reading again waits on that task, or
finds it recorded, so one reading is one event however often it is sent. The call answers once the
sink has taken the event, or UNAVAILABLE when the agent stops first, and the streamer sends the
reading again. A hand-over the sink fails is logged here with the reading's GPU and field, since the
call that started it may have given up and no streamer would hear of it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from collections.abc import Callable, Collection
from pathlib import Path

import grpc
import pydantic
from google.protobuf import empty_pb2

from gpuheal.agents.sink import EventSink, hand_over
from gpuheal.agents.telemetry.signals import SIGNALS, Change, FaultSignals, fault_event, fault_value
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

    `known_gpus` answers the UUIDs of the GPUs the Device API lists now, or None when the agent does
    not know them; `state_path` keeps what was reported across restarts (see `signals`).
    """

    def __init__(
        self,
        node: str,
        sink: EventSink,
        store: LatestMetrics,
        *,
        known_gpus: Callable[[], Collection[str] | None] = lambda: None,
        policy: XidPolicy | None = None,
        state_path: Path | None = None,
    ) -> None:
        self.node = node
        self.store = store
        self.outcomes: Counter[str] = Counter()
        self.policy = policy
        self._sink = sink
        self._known_gpus = known_gpus
        self._signals = FaultSignals(state_path)
        # One fault reading of a GPU at a time: two workers sending the same new XID must make one
        # event, and one GPU's slow hand-over must not hold up the others'. Bounded by the store's GPUs.
        self._locks: dict[str, asyncio.Lock] = {}
        # Per GPU, the hand-over under way, which a cancelled call leaves running.
        self._handing_over: dict[str, asyncio.Task[bool]] = {}
        # Every GPU the Device API listed during this agent's life.
        self._ever_known: set[str] = set(known_gpus() or ())
        self._never_known_logged: set[str] = set()
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
        if not await self._report(point, request.headers[wire.HEADER_INSTANCE_ID]):
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the agent is stopping; send the reading again")
        self.outcomes[ACCEPTED] += 1
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
        if point.hostname.casefold() != self.node.casefold():
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
        try:
            fault_value(point)
        except ValueError as error:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "malformed", str(error)) from None
        return point

    async def _report(self, point: TelemetryPoint, instance_id: str) -> bool:
        """Hand over the fault `point` reveals, if any; False when the agent stopped before the sink took it."""
        if point.metric_name not in SIGNALS:
            return True
        gpu = point.gpu_uuid
        if gpu not in self._locks:
            self._locks[gpu] = asyncio.Lock()
        async with self._locks[gpu]:
            earlier = self._handing_over.get(gpu)
            if earlier is not None:  # left running by a call that gave up: this may be its reading again
                await asyncio.wait((earlier,))
            change = await self._signals.change(point)
            if change is None:
                return True
            handing_over = asyncio.create_task(self._hand_over(point, change, instance_id))
            self._handing_over[gpu] = handing_over
            handing_over.add_done_callback(lambda done: self._forget(done, point))
            return await asyncio.shield(handing_over)

    async def settle(self) -> None:
        """Wait for the hand-overs under way (calls that gave up leave them running), and the state
        writes: the agent stops its publisher only after they end, each with its event taken or, the
        sink full, logged as not taken."""
        while self._handing_over:
            await asyncio.wait(list(self._handing_over.values()))
        await self._signals.saved()

    def _forget(self, done: asyncio.Task[bool], point: TelemetryPoint) -> None:
        # Only its own entry: a call may already have started the GPU's next hand-over (done callbacks run late).
        for gpu, task in list(self._handing_over.items()):
            if task is done:
                del self._handing_over[gpu]
        # The call that started it may have given up, leaving nobody else to see the sink's failure.
        error = None if done.cancelled() else done.exception()
        if error is not None:
            log.error(
                "the fault in the %s reading of GPU %s (value %s, observed at %s) was not handed over to the "
                "event sink: %s; the reading is news again when a streamer sends it again",
                point.metric_name,
                point.gpu_uuid,
                point.value,
                point.observed_at.isoformat(),
                error,
                exc_info=error,
                extra={"node": self.node, "gpu": point.gpu_uuid},
            )

    async def _hand_over(self, point: TelemetryPoint, change: Change, instance_id: str) -> bool:
        known = self._known(point.gpu_uuid)
        metadata = {"instance_id": instance_id, "gpu_known": known}
        event = fault_event(self.node, point, change, self.policy, metadata, remediate=known != "never")
        if not await hand_over(self._sink, event, stop=self.stopping):
            return False
        await self._signals.record(change)
        log.info(
            "%s (event %s, from streamer %s)",
            event.message,
            event.id,
            instance_id,
            extra={"node": self.node, "gpu": point.gpu_uuid},
        )
        return True

    def _known(self, gpu_uuid: str) -> str:
        """ "true", "lost" (listed once, no longer), "never" (not during this agent's life), or "unknown"."""
        known = self._known_gpus()
        if known is None:
            return "unknown"
        self._ever_known.update(known)
        if gpu_uuid in known:
            return "true"
        if gpu_uuid in self._ever_known:
            return "lost"
        if gpu_uuid not in self._never_known_logged and len(self._never_known_logged) < self.store.max_gpus:
            self._never_known_logged.add(gpu_uuid)
            log.warning(
                "DCGM reports a fault of GPU %s, which the Device API has never known on this node: "
                "recorded only, not acted on (is the streamer's CSV this node's?)",
                gpu_uuid,
                extra={"node": self.node, "gpu": gpu_uuid},
            )
        return "never"
