"""The repair activities: reboot a node through its provider exactly once, and describe its machine.

The request is recorded on the node (`gpuheal.io/reboot-requested`, with the holder — the workflow id
and run — the provider, the bootID at that moment and the time) before the provider is called. A
retry that finds its own record does not call again when the node has already rebooted, nor when
the provider says it was asked or cannot tell; only a record the provider proves never reached it
(the worker died in between) leads to a second call. Never rebooting twice is worth more than a
reboot lost in that narrow window: the wait for the node then times out and a person is asked.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Mapping
from datetime import UTC, datetime
from typing import TypeVar

from kubernetes.aio import client
from kubernetes.aio.client.models import V1Node
from pydantic import BaseModel, ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from gpuheal.activities.kube import annotations_of, boot_id_of, merge_patch_node, on_fresh_node, read_node
from gpuheal.activities.providers import ProviderError, RebootProvider, RebootTarget
from gpuheal.activities.providers.selection import ProviderSet
from gpuheal.domain import marks
from gpuheal.domain.steps import MachineRequest, MachineState, RebootRequest, RebootResult

T = TypeVar("T")

# How often a reboot attempt tells Temporal it is alive while the provider's operation runs.
_HEARTBEAT_EVERY = 5.0


class _RebootRecord(BaseModel):
    holder: str
    boot_id: str
    at: datetime
    provider: str = ""
    graceful: bool = False


class RepairActivities:
    """Reboots nodes through the configured providers."""

    def __init__(self, api: client.ApiClient, providers: ProviderSet) -> None:
        self._core = client.CoreV1Api(api)
        self._providers = providers

    @activity.defn(name="request_reboot")
    async def request_reboot(self, request: RebootRequest) -> RebootResult:
        """Reboot the node through its provider unless this remediation already did."""

        async def record(node: V1Node | None) -> tuple[_RebootRecord, RebootTarget, RebootProvider, bool]:
            if node is None:
                raise ApplicationError(f"node {request.node} no longer exists", non_retryable=True)
            target = _target(node, request.node, graceful=request.graceful)
            try:
                provider = self._providers.choose(target, request.provider)
            except ProviderError as error:
                raise ApplicationError(str(error), non_retryable=True, type="ProviderError") from error
            graceful = request.graceful and provider.supports_graceful
            earlier = _read_record(annotations_of(node))
            if earlier is not None and earlier.holder == request.holder and earlier.graceful == graceful:
                return earlier, target, provider, await _still_to_call(provider, target, earlier, node)
            fresh = _RebootRecord(
                holder=request.holder,
                boot_id=boot_id_of(node),
                at=datetime.now(UTC),
                provider=provider.name,
                graceful=graceful,
            )
            await merge_patch_node(
                self._core,
                node,
                {"metadata": {"annotations": {marks.REBOOT_REQUEST_ANNOTATION: fresh.model_dump_json()}}},
            )
            return fresh, target, provider, True

        reboot, target, provider, call = await on_fresh_node(self._core, request.node, record)
        result = RebootResult(
            boot_id_before=reboot.boot_id,
            requested_now=call,
            provider=provider.name,
            detail=f"reboot already requested at {reboot.at.isoformat()}",
            expects_new_boot=provider.expects_new_boot,
            graceful=reboot.graceful,
        )
        if not call:
            return result
        detail = await _heartbeating(_provider_call(provider.reboot(target)))
        activity.logger.info("reboot of %s requested through %s", request.node, provider.name)
        return result.model_copy(update={"detail": detail})

    @activity.defn(name="describe_machine")
    async def describe_machine(self, request: MachineRequest) -> MachineState:
        """The provider's view of the node's machine; failures become part of the answer, not errors."""
        node = await read_node(self._core, request.node)
        if node is None:
            return MachineState(provider=request.provider, summary=f"node {request.node} no longer exists")
        target = _target(node, request.node, graceful=False)
        try:
            provider = self._providers.choose(target, request.provider)
        except ProviderError as error:
            return MachineState(provider=request.provider, summary=str(error))
        try:
            summary = await provider.describe(target)
        except ProviderError as error:
            summary = f"state unknown: {error}"
        return MachineState(provider=provider.name, summary=summary)


def _target(node: V1Node, name: str, *, graceful: bool) -> RebootTarget:
    return RebootTarget(
        node=name,
        provider_id=(node.spec.provider_id if node.spec else None) or "",
        annotations=annotations_of(node),
        graceful=graceful,
    )


async def _still_to_call(provider: RebootProvider, target: RebootTarget, record: _RebootRecord, node: V1Node) -> bool:
    """Whether a recorded request still has to reach the provider: only when it provably never did."""
    if boot_id_of(node) != record.boot_id:
        return False  # the node has rebooted since the request
    asked = await _provider_call(provider.requested_since(target, record.at))
    return asked is False


async def _provider_call(call: Awaitable[T]) -> T:
    """Await a provider call, turning its ProviderError into the failure Temporal retries or not."""
    try:
        return await call
    except ProviderError as error:
        raise ApplicationError(str(error), non_retryable=not error.retryable, type="ProviderError") from error


async def _heartbeating(call: Awaitable[T]) -> T:
    """Await `call` while heartbeating, so a long cloud operation is not mistaken for a lost worker."""
    task = asyncio.ensure_future(call)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=_HEARTBEAT_EVERY)
            if done:
                return task.result()
            activity.heartbeat()
    finally:
        task.cancel()


def _read_record(annotations: Mapping[str, str]) -> _RebootRecord | None:
    raw = annotations.get(marks.REBOOT_REQUEST_ANNOTATION)
    if not raw:
        return None
    try:
        return _RebootRecord.model_validate(json.loads(raw))
    except (ValueError, ValidationError):
        return None  # not ours to interpret; a fresh request overwrites it
