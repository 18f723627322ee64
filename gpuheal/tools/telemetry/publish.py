"""Publishing readings to the agent's telemetry intake through a bounded queue and a few workers.

The queue holds at most `buffer` messages, split evenly between the `workers` tasks that take them
out and call `TelemetryIntake.Publish` on the agent's socket. Each GPU metric (GPU UUID × metric
name) always goes to the same worker, so its readings reach the agent in the file's order, which the
agent's fault rules rely on (a count that grows must not arrive shrinking). A full share makes the
reader wait, so memory stays bounded however slow (or absent) the agent is.

A call that fails for a reason that may pass (the agent is down, restarting or busy: UNAVAILABLE,
DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ...) is counted and tried again with backoff, the worker
holding its message meanwhile; one the agent refuses for what the message says (another node's
reading, a full metrics store) is counted, logged and dropped, since it would be refused again. An
error inside the agent (UNKNOWN, INTERNAL) may pass too, but may as well be the message's doing: it
is tried `UNEXPECTED_TRIES` times, then counted as refused, so one message cannot jam its worker.

A call waits up to `CALL_TIMEOUT_S` for the agent, which answers a fault reading once its event is
handed over; that may take a publisher lane's whole delivery timeout (10 s), so the deadline is well
above it (and a call sent again after a deadline joins the hand-over under way, never a second one).

`close` delivers what is queued before stopping: all of it when the file simply ended (retrying for
as long as the agent is down), or, once `stop` is set (a signal), for up to a grace period longer
than one call; what is left then is counted as `lost` and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import grpc

from gpuheal.domain import telemetry as wire
from gpuheal.protos import telemetry_pb2 as pb
from gpuheal.protos import telemetry_pb2_grpc as pb_grpc
from gpuheal.tools.telemetry.rows import Row

log = logging.getLogger("gpuheal.telemetry")

CALL_TIMEOUT_S = 30.0
UNEXPECTED_TRIES = 5
BACKOFF_INITIAL = timedelta(milliseconds=100)
BACKOFF_MAX = timedelta(seconds=2)
# gRPC's reconnect backoff grows to minutes by default; an agent that restarts must be found again at once.
_CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000)]
_RETRIED = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.ABORTED,
    }
)
_UNEXPECTED = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL})
# Refusals are logged one by one up to this many, then every this-many-th: a CSV of another node's
# readings is refused row after row.
_REFUSALS_LOGGED = 10


def message(row: Row, instance_id: str, now: datetime) -> pb.TelemetryMessage:
    """The message for one row: routing headers, where it was read, and the row as a telemetry point.

    Raises `pydantic.ValidationError` for a row no agent would take (a field over its length limit).
    """
    point = wire.TelemetryPoint(
        gpu_uuid=row.uuid,
        metric_name=row.metric_name,
        value=row.value,
        timestamp=now,
        observed_at=row.timestamp,
        gpu_id=row.gpu_id,
        device=row.device,
        model_name=row.model_name,
        hostname=row.hostname,
        container=row.container,
        pod=row.pod,
        namespace=row.namespace,
        labels_raw=row.labels_raw,
    )
    return pb.TelemetryMessage(
        headers={
            wire.HEADER_INSTANCE_ID: instance_id,
            wire.HEADER_GPU_UUID: row.uuid,
            wire.HEADER_METRIC_NAME: row.metric_name,
        },
        metadata={wire.METADATA_HOSTNAME: row.hostname, wire.METADATA_DEVICE: row.device},
        payload=point.model_dump_json().encode(),
    )


@dataclass
class QueueCounts:
    """What went through the queue."""

    published: int = 0
    delivered: int = 0
    # Calls that failed and were tried again.
    failures: int = 0
    # Messages the agent refused, dropped.
    refused: int = 0
    # Messages still queued or in a call when the drain gave up.
    lost: int = 0
    max_depth: int = 0


class PublishQueue:
    """At most `buffer` messages, drained by `workers` tasks (fewer when the buffer is smaller) into `socket`."""

    def __init__(self, socket: Path, buffer: int, workers: int) -> None:
        self.counts = QueueCounts()
        workers = min(workers, buffer)
        # Each worker's share; together never more than `buffer`.
        self._queues: list[asyncio.Queue[pb.TelemetryMessage]] = [
            asyncio.Queue(maxsize=buffer // workers) for _ in range(workers)
        ]
        self._channel = grpc.aio.insecure_channel(f"unix:{socket.absolute()}", options=_CHANNEL_OPTIONS)
        self._stub = pb_grpc.TelemetryIntakeStub(self._channel)
        self._workers = [
            asyncio.create_task(self._work(queue), name=f"telemetry-worker-{n}") for n, queue in enumerate(self._queues)
        ]
        self._in_flight = 0
        # Failed calls since the agent last took a message: logged when they start and when they end.
        self._failing = 0

    @property
    def depth(self) -> int:
        return sum(queue.qsize() for queue in self._queues)

    async def put(self, message: pb.TelemetryMessage, stop: asyncio.Event) -> bool:
        """Queue `message` for its GPU metric's worker, waiting while that share is full; False (not
        queued) when `stop` is set first."""
        key = (message.headers[wire.HEADER_GPU_UUID], message.headers[wire.HEADER_METRIC_NAME])
        queue = self._queues[hash(key) % len(self._queues)]
        if queue.full():
            putting = asyncio.ensure_future(queue.put(message))
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait((putting, stopping), return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not putting.done():
                putting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await putting
                return False
        else:
            queue.put_nowait(message)
        self.counts.published += 1
        self.counts.max_depth = max(self.counts.max_depth, self.depth)
        return True

    async def close(self, stop: asyncio.Event, grace: timedelta) -> None:
        """Deliver what is queued: all of it, or, once `stop` is set, for up to `grace` more; then stop
        the workers and close the channel."""
        drained = asyncio.ensure_future(asyncio.gather(*(queue.join() for queue in self._queues)))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait((drained, stopping), return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not drained.done():
            await asyncio.wait((drained,), timeout=grace.total_seconds())
        drained.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drained
        self.counts.lost = self.depth + self._in_flight
        if self.counts.lost:
            log.error(
                "stopped before the queue was drained; %d message(s) not delivered",
                self.counts.lost,
                extra={"fields": {"undelivered": self.counts.lost}},
            )
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        await self._channel.close()

    async def _work(self, queue: asyncio.Queue[pb.TelemetryMessage]) -> None:
        while True:
            message = await queue.get()
            self._in_flight += 1
            try:
                await self._deliver(message)
            finally:
                self._in_flight -= 1
                queue.task_done()

    async def _deliver(self, message: pb.TelemetryMessage) -> None:
        """Publish until the agent takes or refuses the message, backing off while it cannot."""
        delay = BACKOFF_INITIAL
        unexpected = 0
        while True:
            try:
                await self._stub.Publish(message, timeout=CALL_TIMEOUT_S)
            except grpc.aio.AioRpcError as error:
                unexpected += error.code() in _UNEXPECTED
                if error.code() not in _RETRIED | _UNEXPECTED or unexpected >= UNEXPECTED_TRIES:
                    self._refused(message, error)
                    return
                if not self._failing:
                    log.warning(
                        "the agent does not take readings (%s: %s); trying again with backoff",
                        error.code().name,
                        error.details(),
                    )
                self._failing += 1
                self.counts.failures += 1
                await asyncio.sleep(delay.total_seconds())
                delay = min(delay * 2, BACKOFF_MAX)
            else:
                self.counts.delivered += 1
                if self._failing:
                    log.info("the agent takes readings again, after %d failed call(s)", self._failing)
                    self._failing = 0
                return

    def _refused(self, message: pb.TelemetryMessage, error: grpc.aio.AioRpcError) -> None:
        self.counts.refused += 1
        if self.counts.refused <= _REFUSALS_LOGGED or self.counts.refused % _REFUSALS_LOGGED**3 == 0:
            log.warning(
                "the agent refused a reading, dropped (%d refused so far): %s: %s",
                self.counts.refused,
                error.code().name,
                error.details(),
                extra={"fields": dict(message.headers)},
            )
