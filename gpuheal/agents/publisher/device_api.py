"""GPU health conditions in the Device API (`nvidia.device.v1alpha1.GpuService`), as its client.

Each GPU carries one condition of type `Healthy`, with the check name as its reason, and the
strongest open recommended action in `status.recommended_action`. Conditions of other types,
written by other providers, are kept as they are; the Device API keeps room for `Healthy` in every
status (`gpuheal.agents.device_api.limits`), so this write fits however full others made it.

An event costs one ListGpus, whatever it names: the node's own GPU list says which of the UUIDs
it names are GPUs of this node (compared without regard to case), and a UUID the node does not
have costs nothing more and is not remembered. Each GPU of the node the event concerns is then
written with UpdateGpuStatus at the resource version the list returned; a concurrent writer makes
the server answer ABORTED, and the write is tried again on a fresh GetGpu.

A ListGpus answer larger than the client takes (`max_list_bytes`; by default `MAX_LIST_BYTES`,
which bounds what gpuheal's Device API can answer) will not shrink by asking again: the event is
refused for good, with an error log, instead of blocking every later event of the lane behind it.

The client, `InProcessDeviceApi`, writes to the agent's own Device API server, in the same process:
it runs the server's operations directly (`DeviceApiServer.call`), with no protobuf serialization,
HTTP/2 framing or gRPC call on either side, and meets the same answers, refusals, watch events and
request counts as a gRPC client would (the tests hold it to a gRPC client's outcomes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from itertools import islice
from typing import TYPE_CHECKING, Protocol

import grpc

from gpuheal.agents.device_api.errors import DeviceApiError
from gpuheal.agents.device_api.limits import HEALTH_CONDITION as HEALTH_CONDITION
from gpuheal.agents.device_api.limits import MAX_LIST_BYTES, GpuLimits, worst_list_bytes
from gpuheal.agents.device_api.service import Request, Response
from gpuheal.agents.gpu_identity import gpu_name
from gpuheal.agents.publisher.errors import DependencyUnavailable
from gpuheal.agents.publisher.ledger import OpenFaults, Verdict
from gpuheal.domain.health import HealthEvent
from gpuheal.domain.truncate import truncate
from gpuheal.protos import gpu_pb2

if TYPE_CHECKING:
    from gpuheal.agents.device_api.server import DeviceApiServer

log = logging.getLogger(__name__)

# The longest reason the Device API takes on a condition.
_MAX_REASON_BYTES = GpuLimits().max_condition_reason_bytes
# UUIDs an event names that the node does not have, quoted in the log line that says so.
_SHOWN_STRANGERS = 3


class GpuHealthApi(Protocol):
    """Where per-GPU health goes: the node's GPUs, and a write of one GPU's health."""

    async def list_gpus(self) -> Sequence[gpu_pb2.Gpu]:
        """Every GPU of the node, with its status and resource version: read-only, since they may be
        the Device API's own (what it serves every client) and not copies."""
        ...

    async def set_gpu_health(self, gpu: gpu_pb2.Gpu, verdict: Verdict) -> None: ...


async def publish_gpu_health(client: GpuHealthApi, ledger: OpenFaults, event: HealthEvent) -> None:
    """Apply the event to the ledger and write the verdict of every GPU of the node it concerns.

    An event that names no GPU concerns every GPU of the node. GPUs the node does not have are left
    out of the ledger and the writes, and logged in one line.
    """
    gpus = {gpu_name(gpu.spec.uuid): gpu for gpu in await client.list_gpus()}
    named = dict.fromkeys(gpu_name(uuid) for uuid in event.gpu_uuids)
    concerned = [gpus[uuid] for uuid in named if uuid in gpus] if named else list(gpus.values())
    strangers = len(named) - len(concerned) if named else 0
    if strangers:
        shown = ", ".join(islice((uuid for uuid in named if uuid not in gpus), _SHOWN_STRANGERS))
        log.warning(
            "event %s names %d GPU(s) the Device API does not have (%s, …); their health is not recorded there",
            event.id,
            strangers,
            shown,
        )
    if named and not concerned:
        return
    ledger.apply(event, gpus=tuple(gpu.spec.uuid for gpu in concerned) if named else None)
    for gpu in concerned:
        await client.set_gpu_health(gpu, ledger.gpu_verdict(event.node, gpu.spec.uuid))


def with_health(status: gpu_pb2.GpuStatus, verdict: Verdict, now: datetime) -> gpu_pb2.GpuStatus:
    """`status` with its `Healthy` condition and recommended action set to the verdict."""
    updated = gpu_pb2.GpuStatus(recommended_action=verdict.action.name)
    previous: gpu_pb2.Condition | None = None
    for condition in status.conditions:
        if condition.type == HEALTH_CONDITION:
            previous = condition
        else:
            updated.conditions.append(condition)
    # The reason is a check name: the intake keeps those to 256 bytes; cut here whatever their source.
    condition = updated.conditions.add(
        type=HEALTH_CONDITION,
        status=verdict.status,
        reason=truncate(verdict.reason, _MAX_REASON_BYTES),
        message=verdict.message,
    )
    if previous is not None and previous.status == verdict.status:
        condition.last_transition_time.CopyFrom(previous.last_transition_time)
    else:
        condition.last_transition_time.FromDatetime(now)
    return updated


class Refused(Exception):
    """A call the Device API refused, with its gRPC status code and message; raised as it is when
    permanent (neither retried nor DependencyUnavailable)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"Device API: {code.name}: {details}")
        self.code = code
        self.details = details


class ListTooLarge(Exception):
    """The Device API's GPU list is larger than this client takes: asking again would get the same."""


class InProcessDeviceApi:
    """`GpuHealthApi` on a Device API server in this process, e.g. the agent's own: its operations,
    run by `DeviceApiServer.call` as a gRPC call runs them, without the transport.

    Refused UNAVAILABLE (retried: DependencyUnavailable) while the server is not serving, as a gRPC
    client is; counted in the server's request metrics as gRPC calls are. `attempts` bounds the
    writes of one GPU that lose races; a list over `max_list_bytes` is refused for good
    (`ListTooLarge`), as a gRPC client's receive limit would refuse it. The server's request size
    limit is gRPC's alone; these writes stay far below it anyway (a stored status, at most 32 KiB,
    with one `Healthy` condition).

    The three calls it makes (`_list`, `_get`, `_update_status`, each through `_call`) return the
    method's response or raise `Refused` with the status code and message the Device API answered;
    retries and what is retryable are decided around them. Only UNAVAILABLE is worth retrying here:
    the server's operations answer nothing else that may change (gRPC's overload and deadlines do
    not arise in process).
    """

    def __init__(self, server: DeviceApiServer, *, attempts: int = 5, max_list_bytes: int = MAX_LIST_BYTES) -> None:
        self._server = server
        self._attempts = attempts
        # Measuring a list re-encodes it (~0.1 s for the largest): only done when the server's
        # cache could answer more than the limit (by default it cannot: the cache refuses limits
        # whose largest list exceeds MAX_LIST_BYTES).
        worst = worst_list_bytes(server.cache.max_gpus, server.cache.limits)
        self._max_list_bytes = max_list_bytes if max_list_bytes < worst else None

    async def list_gpus(self) -> Sequence[gpu_pb2.Gpu]:
        """Every GPU of the node, with its status and resource version: the server's own, read-only."""
        try:
            listed = await self._list()
        except Refused as refusal:
            raise _unavailable_or(refusal) from refusal
        return tuple(listed.gpu_list.items)

    async def set_gpu_health(self, gpu: gpu_pb2.Gpu, verdict: Verdict) -> None:
        """Write the verdict on the GPU as listed; a GPU deleted meanwhile is logged and skipped."""
        name = gpu.metadata.name
        for attempt in range(self._attempts):
            try:
                if attempt:  # another writer got there first: read again
                    gpu = await self._get(name)
                await self._update_status(
                    gpu_pb2.UpdateGpuStatusRequest(
                        name=name,
                        status=with_health(gpu.status, verdict, datetime.now(UTC)),
                        resource_version=gpu.resource_version or int(gpu.metadata.resource_version or 0),
                    )
                )
                return
            except Refused as refusal:
                if refusal.code == grpc.StatusCode.ABORTED:
                    continue
                if refusal.code == grpc.StatusCode.NOT_FOUND:
                    log.warning("GPU %s disappeared from the Device API before its health was written", name)
                    return
                raise _unavailable_or(refusal) from refusal
        raise DependencyUnavailable(f"Device API: {self._attempts} writes of {name} lost races")

    async def _list(self) -> gpu_pb2.ListGpusResponse:
        listed = await self._call(self._server.service.list_gpus, gpu_pb2.ListGpusRequest())
        if self._max_list_bytes is not None and (size := listed.ByteSize()) > self._max_list_bytes:
            raise ListTooLarge(
                "Device API: the GPU list is larger than this client takes: "
                f"it is {size} bytes; at most {self._max_list_bytes} are taken"
            )
        return listed

    async def _get(self, name: str) -> gpu_pb2.Gpu:
        return (await self._call(self._server.service.get_gpu, gpu_pb2.GetGpuRequest(name=name))).gpu

    async def _update_status(self, request: gpu_pb2.UpdateGpuStatusRequest) -> None:
        await self._call(self._server.service.update_gpu_status, request)

    async def _call(self, operation: Callable[[Request], Response], request: Request) -> Response:
        try:
            return await self._server.call(operation, request)
        except DeviceApiError as error:
            raise Refused(error.code, error.message) from error


def _unavailable_or(refusal: Refused) -> Exception:
    """DependencyUnavailable for an answer that may change later (the server not serving, or its
    readiness gate closed); the refusal, permanent, otherwise."""
    if refusal.code == grpc.StatusCode.UNAVAILABLE:
        return DependencyUnavailable(f"Device API: {refusal.code.name}: {refusal.details}")
    return refusal
