"""The repair activity: ask a provider to reboot the node, exactly once per remediation.

The request is recorded on the node (`gpuheal.io/reboot-requested`, with the holder's workflow id,
the bootID at that moment and the time) before the provider is called. A retry that finds its own
record does not call again when the node has already rebooted or the provider confirms it was asked;
only a record that never reached the provider (the worker died in between) leads to a second call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime

from kubernetes.aio import client
from kubernetes.aio.client.models import V1Node
from pydantic import BaseModel, ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from gpuheal.activities.kube import annotations_of, boot_id_of, merge_patch_node, on_fresh_node
from gpuheal.activities.providers import ProviderError, RebootProvider, RebootTarget
from gpuheal.domain import marks
from gpuheal.domain.steps import RebootRequest, RebootResult


class _RebootRecord(BaseModel):
    holder: str
    boot_id: str
    at: datetime


class RepairActivities:
    """Reboots nodes through the configured providers."""

    def __init__(self, api: client.ApiClient, providers: Mapping[str, RebootProvider]) -> None:
        self._core = client.CoreV1Api(api)
        self._providers = dict(providers)

    @activity.defn(name="request_reboot")
    async def request_reboot(self, request: RebootRequest) -> RebootResult:
        """Reboot the node through `request.provider` unless this remediation already did."""
        provider = self._providers.get(request.provider)
        if provider is None:
            raise ApplicationError(
                f"unknown reboot provider {request.provider!r}; configured: {', '.join(sorted(self._providers))}",
                non_retryable=True,
            )

        async def record(node: V1Node | None) -> tuple[_RebootRecord, RebootTarget, bool]:
            if node is None:
                raise ApplicationError(f"node {request.node} no longer exists", non_retryable=True)
            target = RebootTarget(node=request.node, provider_id=(node.spec.provider_id if node.spec else None) or "")
            earlier = _read_record(annotations_of(node))
            if earlier is not None and earlier.holder == request.holder:
                return earlier, target, await _still_to_call(provider, target, earlier, node)
            fresh = _RebootRecord(holder=request.holder, boot_id=boot_id_of(node), at=datetime.now(UTC))
            await merge_patch_node(
                self._core,
                node,
                {"metadata": {"annotations": {marks.REBOOT_REQUEST_ANNOTATION: fresh.model_dump_json(by_alias=True)}}},
            )
            return fresh, target, True

        reboot, target, call = await on_fresh_node(self._core, request.node, record)
        if not call:
            return RebootResult(
                boot_id_before=reboot.boot_id,
                requested_now=False,
                provider=provider.name,
                detail=f"reboot already requested at {reboot.at.isoformat()}",
                expects_new_boot=provider.expects_new_boot,
            )
        try:
            detail = await provider.reboot(target)
        except ProviderError as error:
            raise ApplicationError(str(error), non_retryable=not error.retryable) from error
        activity.logger.info("reboot of %s requested through %s", request.node, provider.name)
        return RebootResult(
            boot_id_before=reboot.boot_id,
            requested_now=True,
            provider=provider.name,
            detail=detail,
            expects_new_boot=provider.expects_new_boot,
        )


async def _still_to_call(provider: RebootProvider, target: RebootTarget, record: _RebootRecord, node: V1Node) -> bool:
    """Whether a recorded request still has to reach the provider: only when it provably never did."""
    if boot_id_of(node) != record.boot_id:
        return False  # the node has rebooted since the request
    try:
        asked = await provider.requested_since(target, record.at)
    except ProviderError as error:
        raise ApplicationError(str(error), non_retryable=not error.retryable) from error
    return asked is False


def _read_record(annotations: Mapping[str, str]) -> _RebootRecord | None:
    raw = annotations.get(marks.REBOOT_REQUEST_ANNOTATION)
    if not raw:
        return None
    try:
        return _RebootRecord.model_validate(json.loads(raw))
    except (ValueError, ValidationError):
        return None  # not ours to interpret; a fresh request overwrites it
