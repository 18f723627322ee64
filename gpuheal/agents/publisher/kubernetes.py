"""The node's `GpuHealthy` condition and Kubernetes Events, through the API server.

The condition is written with a strategic merge patch of `status.conditions` on `nodes/<name>/status`:
conditions merge by `type`, so the kubelet's conditions stay as they are. Its message names the boot
it was written on and the moment (`gpuheal.domain.gpu_health.stamp_message`), where the reporter
can read the node's boot ID: a remediation accepts GPU health only when it was reported after the
repair, and a condition left from before a reboot must not pass for a fresh one. Events are core/v1 Events
about the Node (as `kubectl describe node` shows them), named after the health event's id so a
redelivered event is not recorded twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp
from kubernetes.aio import client
from kubernetes.aio.client.exceptions import ApiException
from kubernetes.aio.client.models import CoreV1Event, V1EventSource, V1ObjectMeta, V1ObjectReference

from gpuheal.agents.publisher.errors import DependencyUnavailable
from gpuheal.agents.publisher.ledger import Verdict
from gpuheal.domain.gpu_health import stamp_message
from gpuheal.domain.health import HealthEvent
from gpuheal.domain.marks import GPU_HEALTHY_CONDITION

STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
COMPONENT = "gpuheal-agent"
EVENT_REASON = "GpuHealthEvent"
# 408, 429 and 5xx ask to come back later; 401/403 usually mean credentials or RBAC not there yet.
_RETRYABLE = frozenset({401, 403, 408, 429})


class NodeReporter(Protocol):
    """What the publisher writes to the cluster about its node."""

    async def set_gpu_condition(self, node: str, verdict: Verdict) -> None: ...

    async def record_event(self, event: HealthEvent) -> None: ...


class KubernetesReporter:
    """`NodeReporter` on the Kubernetes API (an asyncio `ApiClient`, e.g. from `gpuheal.kubeclient`)."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespace: str = "default",
        component: str = COMPONENT,
        timeout: float = 10.0,
        boot_id: Callable[[], str | None] | None = None,
    ) -> None:
        """`boot_id` reads the node's boot ID now (`/proc/sys/kernel/random/boot_id`); None when unknown."""
        self._core = client.CoreV1Api(api)
        self._namespace = namespace
        self._component = component
        self._timeout = timeout
        self._boot_id = boot_id
        # The status last written per node, so the transition time moves only when the status does.
        self._written: dict[str, str] = {}

    async def set_gpu_condition(self, node: str, verdict: Verdict) -> None:
        """Set `GpuHealthy` on the node to the verdict.

        `lastTransitionTime` is sent when the status differs from the one this reporter wrote last
        (always, on its first write); otherwise the merge keeps the time already there. The message
        names the boot ID read now and the moment of writing, when the boot ID can be read.
        """
        moment = datetime.now(UTC)
        now = _timestamp(moment)
        boot_id = self._boot_id() if self._boot_id is not None else None
        condition = {
            "type": GPU_HEALTHY_CONDITION,
            "status": verdict.status,
            "reason": verdict.reason,
            "message": stamp_message(verdict.message, boot_id, moment) if boot_id else verdict.message,
            "lastHeartbeatTime": now,
        }
        if self._written.get(node) != verdict.status:
            condition["lastTransitionTime"] = now
        await _call(
            self._core.patch_node_status(
                node,
                {"status": {"conditions": [condition]}},
                _content_type=STRATEGIC_MERGE_PATCH,
                _request_timeout=self._timeout,
            )
        )
        self._written[node] = verdict.status

    async def record_event(self, event: HealthEvent) -> None:
        """A Warning (unhealthy) or Normal (healthy) Event on the Node, reason = the check name."""
        when = event.generated_at or datetime.now(UTC)
        body = CoreV1Event(
            metadata=V1ObjectMeta(name=event_name(event), namespace=self._namespace),
            # The kubelet uses the node name as the uid of its node events; `kubectl describe` matches on it.
            involved_object=V1ObjectReference(api_version="v1", kind="Node", name=event.node, uid=event.node),
            reason=event.check_name or EVENT_REASON,
            message=describe(event),
            type="Normal" if event.is_healthy else "Warning",
            source=V1EventSource(component=self._component, host=event.node),
            first_timestamp=when,
            last_timestamp=when,
            count=1,
            reporting_component=self._component,
            reporting_instance=event.node,
        )
        try:
            await _call(self._core.create_namespaced_event(self._namespace, body, _request_timeout=self._timeout))
        except ApiException as error:
            if error.status != 409:  # recorded by an earlier delivery of the same event
                raise


def event_name(event: HealthEvent) -> str:
    """A valid, stable object name for the health event: the node and a digest of its id."""
    # Object names stop at 253 characters; the digest keeps names of long node names distinct.
    return f"{event.node[:236]}.{hashlib.sha256(event.id.encode()).hexdigest()[:16]}"


def describe(event: HealthEvent) -> str:
    """The Event message: the health event's message with the GPUs and error codes it names."""
    details = [f"GPU {gpu}" for gpu in event.gpu_uuids]
    if event.error_codes:
        details.append("codes " + ",".join(event.error_codes))
    text = event.message or event.check_name or "health event"
    return f"{text} ({'; '.join(details)})" if details else text


async def _call(request: Any) -> Any:
    """Await an API request, turning transport failures and "come back later" answers into DependencyUnavailable."""
    try:
        return await request
    except ApiException as error:
        if error.status in _RETRYABLE or (error.status or 0) >= 500:
            raise DependencyUnavailable(f"Kubernetes API: HTTP {error.status} {error.reason}") from error
        raise
    except (aiohttp.ClientError, OSError, TimeoutError) as error:
        raise DependencyUnavailable(f"Kubernetes API unreachable: {error!r}") from error


def _timestamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")
