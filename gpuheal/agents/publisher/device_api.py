"""GPU health conditions in the Device API (`nvidia.device.v1alpha1.GpuService`), as a gRPC client.

Each GPU carries one condition of type `Healthy`, with the check name as its reason, and the
strongest open recommended action in `status.recommended_action`. Conditions of other types,
written by other providers, are kept as they are; the Device API keeps room for `Healthy` in every
status (`gpuheal.agents.device_api.limits`), so this write fits however full others made it.

An event costs one ListGpus, whatever it names: the node's own GPU list says which of the UUIDs
it names are GPUs of this node (compared without regard to case), and a UUID the node does not
have costs nothing more and is not remembered. Each GPU of the node the event concerns is then
written with UpdateGpuStatus at the resource version the list returned; a concurrent writer makes
the server answer ABORTED, and the write is tried again on a fresh GetGpu.

A ListGpus answer larger than this client accepts (`MAX_LIST_BYTES`, which bounds what gpuheal's
own Device API can answer) will not shrink by asking again: the event is refused for good, with an
error log, instead of blocking every later event of the lane behind it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import islice
from typing import Protocol

import grpc

from gpuheal.agents.device_api.limits import HEALTH_CONDITION as HEALTH_CONDITION
from gpuheal.agents.device_api.limits import MAX_LIST_BYTES, GpuLimits
from gpuheal.agents.gpu_identity import gpu_name
from gpuheal.agents.publisher.errors import DependencyUnavailable
from gpuheal.agents.publisher.ledger import OpenFaults, Verdict
from gpuheal.domain.health import HealthEvent
from gpuheal.domain.truncate import truncate
from gpuheal.protos import gpu_pb2, gpu_pb2_grpc

log = logging.getLogger(__name__)

# Readiness gate, restarts and overload (its bound on concurrent calls): the Device API will answer later.
_RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)
# How gRPC words a response over the receive limit (RESOURCE_EXHAUSTED, as overload is).
_TOO_LARGE = "Received message larger than max"
# The longest reason the Device API takes on a condition.
_MAX_REASON_BYTES = GpuLimits().max_condition_reason_bytes
# UUIDs an event names that the node does not have, quoted in the log line that says so.
_SHOWN_STRANGERS = 3


class GpuHealthApi(Protocol):
    """Where per-GPU health goes: the node's GPUs, and a write of one GPU's health."""

    async def list_gpus(self) -> Sequence[gpu_pb2.Gpu]: ...

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


class GrpcDeviceApi:
    """`GpuHealthApi` over gRPC, e.g. `GrpcDeviceApi("unix:///var/run/gpuheal/device-api.sock")`.

    `max_list_bytes` is the largest ListGpus answer taken (by default what gpuheal's Device API can give).
    """

    def __init__(
        self, target: str, *, attempts: int = 5, timeout: float = 5.0, max_list_bytes: int = MAX_LIST_BYTES
    ) -> None:
        # A local socket is cheap to redial: gRPC's default backoff (up to 2 minutes) would leave the
        # backlog waiting long after the Device API is back. A private subchannel pool keeps that
        # backoff state from being shared with other channels to the same socket.
        self._channel = grpc.aio.insecure_channel(
            target,
            options=[
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
                ("grpc.use_local_subchannel_pool", 1),
                ("grpc.max_receive_message_length", max_list_bytes),
            ],
        )
        self._stub = gpu_pb2_grpc.GpuServiceStub(self._channel)
        self._attempts = attempts
        self._timeout = timeout

    async def list_gpus(self) -> list[gpu_pb2.Gpu]:
        """Every GPU of the node, with its status and resource version."""
        try:
            listed = await self._stub.ListGpus(gpu_pb2.ListGpusRequest(), timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            raise _unavailable_or(error) from error
        return list(listed.gpu_list.items)

    async def set_gpu_health(self, gpu: gpu_pb2.Gpu, verdict: Verdict) -> None:
        """Write the verdict on the GPU as listed; a GPU deleted meanwhile is logged and skipped."""
        name = gpu.metadata.name
        for attempt in range(self._attempts):
            try:
                if attempt:  # another writer got there first: read again
                    gpu = (await self._stub.GetGpu(gpu_pb2.GetGpuRequest(name=name), timeout=self._timeout)).gpu
                await self._stub.UpdateGpuStatus(
                    gpu_pb2.UpdateGpuStatusRequest(
                        name=name,
                        status=with_health(gpu.status, verdict, datetime.now(UTC)),
                        resource_version=gpu.resource_version or int(gpu.metadata.resource_version or 0),
                    ),
                    timeout=self._timeout,
                )
                return
            except grpc.aio.AioRpcError as error:
                code = error.code()
                if code == grpc.StatusCode.ABORTED:
                    continue
                if code == grpc.StatusCode.NOT_FOUND:
                    log.warning("GPU %s disappeared from the Device API before its health was written", name)
                    return
                raise _unavailable_or(error) from error
        raise DependencyUnavailable(f"Device API: {self._attempts} writes of {name} lost races")

    async def close(self) -> None:
        await self._channel.close()


class ListTooLarge(Exception):
    """The Device API's GPU list is larger than this client takes: asking again would get the same."""


def _unavailable_or(error: grpc.aio.AioRpcError) -> Exception:
    """DependencyUnavailable for an answer that may change later; a permanent error otherwise."""
    code = error.code()
    details = error.details() or ""
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and _TOO_LARGE in details:
        return ListTooLarge(f"Device API: the GPU list is larger than this client takes: {details}")
    if code in _RETRYABLE:
        return DependencyUnavailable(f"Device API: {code.name}: {details}")
    return error
