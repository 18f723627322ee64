"""The repair activities: reboot a node through its provider exactly once, describe its machine, and
terminate it where the policy has the machine replaced.

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
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from kubernetes.aio import client
from kubernetes.aio.client.models import V1Node
from pydantic import BaseModel, ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from gpuheal.activities.contract import implements, node_gone
from gpuheal.activities.kube import annotations_of, boot_id_of, merge_patch_node, on_fresh_node, read_node
from gpuheal.activities.metrics import count_reboot
from gpuheal.activities.providers import MachineReplacer, ProviderError, RebootProvider, RebootTarget
from gpuheal.activities.providers.selection import ProviderSet
from gpuheal.domain import contracts, marks
from gpuheal.domain.contracts import FailureType
from gpuheal.domain.steps import MachineRequest, MachineState, RebootRequest, RebootResult, ReplaceRequest

T = TypeVar("T")

# How often a reboot attempt tells Temporal it is alive while the provider's operation runs.
_HEARTBEAT_EVERY = 5.0
# How far the worker's clock may be ahead of the provider's.
_CLOCK_SKEW = timedelta(minutes=1)


class _RebootRecord(BaseModel):
    holder: str
    boot_id: str
    at: datetime
    provider: str = ""
    graceful: bool = False
    # The provider answered that it did not act on this request (throttled, refused): ask again.
    refused: bool = False


class RepairActivities:
    """Reboots nodes through the configured providers."""

    def __init__(self, api: client.ApiClient, providers: ProviderSet) -> None:
        self._core = client.CoreV1Api(api)
        self._providers = providers

    @implements(contracts.REBOOT)
    async def request_reboot(self, request: RebootRequest) -> RebootResult:
        """Reboot the node through its provider unless this remediation already did.

        The whole attempt heartbeats, the provider's reads before a retried call included, so a
        lost worker is noticed quickly and a slow attempt is never mistaken for a lost one.
        """
        return await _heartbeating(self._request_reboot(request))

    async def _request_reboot(self, request: RebootRequest) -> RebootResult:
        async def record(node: V1Node | None) -> tuple[_RebootRecord, RebootTarget, RebootProvider, bool]:
            if node is None:
                raise node_gone(request.node)
            target = reboot_target(node, request.node, graceful=request.graceful)
            provider = self._provider(target, request.provider)
            graceful = request.graceful and provider.supports_graceful
            earlier = _read_record(annotations_of(node))
            if earlier is not None and earlier.holder == request.request_id and not earlier.refused:
                if earlier.graceful == graceful:
                    return earlier, target, provider, await _still_to_call(provider, target, earlier, node)
                if earlier.graceful and boot_id_of(node) != earlier.boot_id:
                    # The graceful restart did happen, only late: forcing one now would reboot twice.
                    return earlier, target, provider, False
            fresh = _RebootRecord(
                holder=request.request_id,
                boot_id=boot_id_of(node),
                at=datetime.now(UTC),
                provider=provider.name,
                graceful=graceful,
            )
            await self._write_record(node, fresh)
            return fresh, target, provider, True

        reboot, target, provider, call = await on_fresh_node(self._core, request.node, record)
        result = RebootResult(
            boot_id_before=reboot.boot_id,
            requested_now=call,
            provider=provider.name,
            detail=f"reboot already requested at {reboot.at.isoformat()}",
            expects_new_boot=provider.expects_new_boot,
            graceful=reboot.graceful,
            requested_at=reboot.at,
        )
        if not call:
            return result
        try:
            detail = await provider.reboot(target)
        except ProviderError as error:
            count_reboot(provider.name, "failed")
            if error.refused:
                await self._mark_refused(request.node, reboot)
            raise _provider_failure(error, final=not error.retryable) from error
        count_reboot(provider.name, "requested")
        activity.logger.info("reboot of %s requested through %s", request.node, provider.name)
        return result.model_copy(update={"detail": detail})

    def _provider(self, target: RebootTarget, name: str) -> RebootProvider:
        """The provider `name` picks for the node; one that none can serve fails the step for good."""
        try:
            return self._providers.choose(target, name)
        except ProviderError as error:
            raise _provider_failure(error, final=True) from error

    async def _write_record(self, node: V1Node, record: _RebootRecord) -> None:
        await merge_patch_node(
            self._core, node, {"metadata": {"annotations": {marks.REBOOT_REQUEST_ANNOTATION: record.model_dump_json()}}}
        )

    async def _mark_refused(self, name: str, record: _RebootRecord) -> None:
        """The provider answered that it did not act: mark the record so the retry asks again."""

        async def mark(node: V1Node | None) -> None:
            if node is not None and _read_record(annotations_of(node)) == record:
                await self._write_record(node, record.model_copy(update={"refused": True}))

        await on_fresh_node(self._core, name, mark)

    @implements(contracts.DESCRIBE_MACHINE)
    async def describe_machine(self, request: MachineRequest) -> MachineState:
        """The provider's view of the node's machine; failures become part of the answer, not errors."""
        node = await read_node(self._core, request.node)
        if node is None:
            return MachineState(provider=request.provider, summary=f"node {request.node} no longer exists")
        target = reboot_target(node, request.node, graceful=False)
        try:
            provider = self._providers.choose(target, request.provider)
        except ProviderError as error:
            return MachineState(provider=request.provider, summary=str(error))
        try:
            summary = await provider.describe(target)
        except ProviderError as error:
            summary = f"state unknown: {error}"
        return MachineState(provider=provider.name, summary=summary)

    @implements(contracts.REPLACE)
    async def replace_machine(self, request: ReplaceRequest) -> MachineState:
        """Terminate the machine behind the node, which its group then replaces; a node already
        deleted is done. Only a node this run still holds cordoned is terminated: one a person took
        back (uncordoned, or marked by another run) is refused for good, and a person is asked."""
        return await _heartbeating(self._replace_machine(request))

    async def _replace_machine(self, request: ReplaceRequest) -> MachineState:
        node = await read_node(self._core, request.node)
        if node is None:
            return MachineState(provider=request.provider, summary=f"node {request.node} was already deleted")
        if annotations_of(node).get(marks.REMEDIATION_ANNOTATION) != request.holder or not (
            node.spec and node.spec.unschedulable
        ):
            raise _provider_failure(
                ProviderError(
                    f"node {request.node} is no longer cordoned by this remediation; its machine was not terminated",
                    retryable=False,
                ),
                final=True,
            )
        boot = boot_id_of(node)
        if request.boot_id and boot and boot != request.boot_id:
            # A recreated machine under the old name: the one asked about is gone, this one is new.
            return MachineState(
                provider=request.provider,
                summary=f"node {request.node} runs on a new machine (boot {boot})",
                boot_id=boot,
            )
        target = reboot_target(node, request.node, graceful=False)
        provider = self._provider(target, request.provider)
        if not isinstance(provider, MachineReplacer):
            raise _provider_failure(
                ProviderError(f"provider {provider.name} cannot terminate machines", retryable=False), final=True
            )
        try:
            summary = await provider.replace(target)
        except ProviderError as error:
            if await read_node(self._core, request.node) is None:  # terminated by an earlier attempt meanwhile
                return MachineState(provider=provider.name, summary=f"node {request.node} was deleted")
            raise _provider_failure(error, final=not error.retryable) from error
        activity.logger.info("machine of %s terminated through %s", request.node, provider.name)
        return MachineState(provider=provider.name, summary=summary, boot_id=boot)


def reboot_target(node: V1Node, name: str, *, graceful: bool) -> RebootTarget:
    """What a provider is asked to reboot: the node, its providerID and annotations."""
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
    # The provider's clock and the worker's may differ: a reset stamped a little before the record
    # still counts as this request's.
    asked = await _provider_call(provider.requested_since(target, record.at - _CLOCK_SKEW))
    return asked is False


async def _provider_call(call: Awaitable[T]) -> T:
    """Await a provider call, turning its ProviderError into the failure Temporal retries or not."""
    try:
        return await call
    except ProviderError as error:
        raise _provider_failure(error, final=not error.retryable) from error


def _provider_failure(error: ProviderError, *, final: bool) -> ApplicationError:
    """The failure the workflow recognises as the provider's (see FailureType.PROVIDER)."""
    return ApplicationError(str(error), non_retryable=final, type=FailureType.PROVIDER.value)


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
