"""The drain activity: one pass over the pods of a quarantined node.

A pass evicts what it may, deletes what is overdue, waits a few seconds at most for those pods to
terminate and reports what is left. The workflow sleeps on a durable timer between passes, so a
drain held up for an hour by a PodDisruptionBudget costs timers, not a worker slot, and survives any
worker restart.

A pod a budget refuses is reported with the budget its 429 names, as read then (the workflow
decides whether that budget can ever let the pod go); a pod the API server refuses for another
reason (a 500 for a pod under two budgets, a 403) is reported with the error, and the pass goes on
with the other pods.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass

from kubernetes.aio import client
from kubernetes.aio.client.exceptions import ApiException
from kubernetes.aio.client.models import V1Eviction, V1ObjectMeta, V1Pod, V1PodDisruptionBudget
from temporalio import activity

from gpuheal.activities.contract import implements
from gpuheal.activities.kube import read_node
from gpuheal.activities.metrics import count_evictions
from gpuheal.domain import contracts
from gpuheal.domain.budgets import DisruptionBudget
from gpuheal.domain.policy import DrainMode
from gpuheal.domain.steps import BudgetHold, DrainProgress, DrainRequest, PodFailure, PodRef

_MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
_SETTLE_POLL = 0.1
# The cause of a budget's 429 names it: "The disruption budget NAME needs 3 healthy pods and has 3
# currently" or "The disruption budget NAME is still being processed by the server."
_BUDGET_CAUSE = re.compile(r"^The disruption budget (\S+) ")


@dataclass(frozen=True)
class _Refused:
    """An eviction that did not happen: a budget's 429 (naming the budget, if it did) or an error."""

    budget: str | None = None
    error: str | None = None


class DrainActivities:
    """Evicts and deletes pods through the Kubernetes API."""

    def __init__(self, api: client.ApiClient) -> None:
        self._core = client.CoreV1Api(api)
        self._policy = client.PolicyV1Api(api)

    @implements(contracts.DRAIN)
    async def drain_node(self, request: DrainRequest) -> DrainProgress:
        """Move the node's pods off it, each namespace by its drain mode.

        Immediate pods go through the Eviction API, so PodDisruptionBudgets hold: a 429 leaves the pod
        for a later pass. AllowCompletion pods are left to finish. DeleteAfterTimeout pods are deleted
        once the workflow says the drain is overdue. DaemonSet pods, mirror pods and pods that already
        finished stay where they are. A pod refused for another reason than its budget is reported as
        failed and the pass goes on. Progress is reported through heartbeats.
        """
        node = await read_node(self._core, request.node)
        if node is not None and not (node.spec and node.spec.unschedulable):
            return DrainProgress(uncordoned=True)
        evicted = deleted = 0
        blocked: list[PodRef] = []
        holds: list[BudgetHold] = []
        failed: list[PodFailure] = []
        remaining: list[PodRef] = []
        budgets: dict[tuple[str, str], DisruptionBudget | None] = {}
        movable = await pods_to_move(self._core, request.node)
        for index, pod in enumerate(movable):
            ref = pod_ref(pod)
            remaining.append(ref)
            if pod.metadata and pod.metadata.deletion_timestamp is not None:
                continue  # already terminating: wait for it to go
            mode = request.policy.mode_for(ref.namespace)
            refused: _Refused | None = None
            if mode is DrainMode.IMMEDIATE:
                refused = await self._evict(ref)
                if refused is None:
                    evicted += 1
            elif mode is DrainMode.DELETE_AFTER_TIMEOUT and request.delete_overdue:
                refused = await self._delete(ref)
                if refused is None:
                    deleted += 1
            if refused is not None and refused.error is not None:
                failed.append(PodFailure(pod=ref, error=refused.error))
            elif refused is not None:
                blocked.append(ref)
                budget = await self._budget(ref.namespace, refused.budget, budgets)
                if budget is not None:
                    holds.append(BudgetHold(pod=ref, budget=budget))
            activity.heartbeat(
                {"done": index + 1, "of": len(movable), "evicted": evicted, "deleted": deleted, "failed": len(failed)}
            )
        count_evictions(evicted=evicted, deleted=deleted, blocked=len(blocked), failed=len(failed))
        if evicted or deleted:
            remaining = await self._settle(request.node, request.policy.settle.total_seconds())
        return DrainProgress(
            evicted=evicted,
            deleted=deleted,
            blocked=tuple(blocked),
            holds=tuple(holds),
            failed=tuple(failed),
            remaining=tuple(remaining),
        )

    async def _settle(self, node: str, seconds: float) -> list[PodRef]:
        """Wait up to `seconds` while pods on the node are terminating; return what is still there."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            pods = await pods_to_move(self._core, node)
            terminating = sum(1 for pod in pods if pod.metadata and pod.metadata.deletion_timestamp is not None)
            if not terminating or loop.time() >= deadline:
                return [pod_ref(pod) for pod in pods]
            activity.heartbeat({"terminating": terminating})
            await asyncio.sleep(_SETTLE_POLL)

    async def _evict(self, pod: PodRef) -> _Refused | None:
        """Ask the Eviction API to move a pod; what refused it, or None when it is going (or gone)."""
        eviction = V1Eviction(metadata=V1ObjectMeta(name=pod.name, namespace=pod.namespace))
        try:
            await self._core.create_namespaced_pod_eviction(pod.name, pod.namespace, eviction)
        except ApiException as error:
            if error.status == 429:
                return _Refused(budget=_budget_named(error))
            if error.status != 404:  # a pod that is already gone needs no eviction
                return _Refused(error=_error_text(error))
        return None

    async def _delete(self, pod: PodRef) -> _Refused | None:
        try:
            await self._core.delete_namespaced_pod(pod.name, pod.namespace)
        except ApiException as error:
            if error.status != 404:
                return _Refused(error=_error_text(error))
        return None

    async def _budget(
        self, namespace: str, name: str | None, seen: dict[tuple[str, str], DisruptionBudget | None]
    ) -> DisruptionBudget | None:
        """The budget a 429 named, read once per pass; None when it named none or is gone or unreadable."""
        if name is None:
            return None
        if (namespace, name) not in seen:
            try:
                pdb = await self._policy.read_namespaced_pod_disruption_budget(name, namespace)
            except ApiException as error:
                if error.status != 404:
                    activity.logger.warning(
                        "cannot read PodDisruptionBudget %s/%s: %s", namespace, name, _error_text(error)
                    )
                seen[namespace, name] = None
            else:
                seen[namespace, name] = _budget_of(pdb)
        return seen[namespace, name]


async def pods_to_move(core: client.CoreV1Api, node: str) -> list[V1Pod]:
    """The node's pods a drain has to move (see `_must_leave`)."""
    pods = await core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}")
    return [pod for pod in pods.items if _must_leave(pod)]


def _must_leave(pod: V1Pod) -> bool:
    """Whether draining has to move this pod: not finished, not a DaemonSet's, not a mirror pod."""
    if pod.status and pod.status.phase in ("Succeeded", "Failed"):
        return False
    meta = pod.metadata
    if meta is None:
        return False
    if _MIRROR_ANNOTATION in (meta.annotations or {}):
        return False
    return not any(owner.kind == "DaemonSet" and owner.controller for owner in meta.owner_references or [])


def _budget_named(error: ApiException) -> str | None:
    """The PodDisruptionBudget a 429 names in its ``DisruptionBudget`` cause, if any."""
    try:
        causes = json.loads(str(error.body))["details"]["causes"]
    except (ValueError, KeyError, TypeError):
        return None
    for cause in causes if isinstance(causes, list) else []:
        if isinstance(cause, dict) and cause.get("reason") == "DisruptionBudget":
            found = _BUDGET_CAUSE.match(str(cause.get("message", "")))
            if found:
                return found.group(1)
    return None


def _error_text(error: ApiException) -> str:
    """``HTTP 500: <the Status message>``, or the HTTP reason when the body is not a Status."""
    try:
        message = json.loads(str(error.body))["message"]
    except (ValueError, KeyError, TypeError):
        message = error.reason
    return f"HTTP {error.status}: {message}"


def _budget_of(pdb: V1PodDisruptionBudget) -> DisruptionBudget:
    meta, spec, status = pdb.metadata, pdb.spec, pdb.status
    condition = next((c for c in (status.conditions if status else None) or [] if c.type == "DisruptionAllowed"), None)
    return DisruptionBudget(
        namespace=(meta.namespace if meta else None) or "",
        name=(meta.name if meta else None) or "",
        min_available=spec.min_available if spec else None,
        max_unavailable=spec.max_unavailable if spec else None,
        generation=(meta.generation if meta else None) or 0,
        observed_generation=(status.observed_generation if status else None) or 0,
        expected_pods=status.expected_pods if status else 0,
        desired_healthy=status.desired_healthy if status else 0,
        current_healthy=status.current_healthy if status else 0,
        disruptions_allowed=status.disruptions_allowed if status else 0,
        condition_reason=(condition.reason if condition else None) or "",
        condition_message=(condition.message if condition else None) or "",
    )


def pod_ref(pod: V1Pod) -> PodRef:
    assert pod.metadata is not None
    return PodRef(namespace=pod.metadata.namespace or "default", name=pod.metadata.name or "")
