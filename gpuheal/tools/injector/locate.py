"""Finding the injector agent on a node through the Kubernetes API.

The agents are the pods of the injector's DaemonSet, found in its namespace by label selector; the
one on a node is the Running pod with `spec.nodeName` = that node (a field selector, so the API
server sends nothing else), reached at its `status.podIP` on the container port named `http`.
Only `get`/`list` on pods in that namespace is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes.aio import client
from kubernetes.aio.client.models import V1Pod

PORT_NAME = "http"
DEFAULT_SELECTOR = "app.kubernetes.io/component=injector-agent"


class AgentNotFound(LookupError):
    """No injector agent pod is scheduled on the node (or the node does not exist)."""


class AgentNotRunning(LookupError):
    """The node's injector agent exists but cannot be called yet (not Running, no IP or no port)."""


@dataclass(frozen=True, slots=True)
class AgentEndpoint:
    node: str
    pod: str
    url: str


class AgentLocator:
    """The injector agents of one namespace, as the Kubernetes API lists them."""

    def __init__(self, api: client.ApiClient, namespace: str, selector: str = DEFAULT_SELECTOR) -> None:
        self._core = client.CoreV1Api(api)
        self.namespace = namespace
        self.selector = selector

    async def on_node(self, node: str) -> AgentEndpoint:
        """The agent to call on `node`; `AgentNotFound` or `AgentNotRunning` name the node."""
        pods = await self._pods(f"spec.nodeName={node}")
        if not pods:
            raise AgentNotFound(f"no injector agent on node {node!r} (no such node, or the DaemonSet is not there)")
        endpoints = [endpoint for pod in pods if (endpoint := _endpoint(pod)) is not None]
        if not endpoints:
            phases = ", ".join(sorted({str(pod.status.phase if pod.status else "Unknown") for pod in pods}))
            raise AgentNotRunning(f"the injector agent on node {node!r} is not running yet ({phases})")
        return endpoints[0]

    async def running(self) -> list[AgentEndpoint]:
        """Every agent that can be called now, ordered by node."""
        endpoints = [endpoint for pod in await self._pods(None) if (endpoint := _endpoint(pod)) is not None]
        return sorted(endpoints, key=lambda endpoint: (endpoint.node, endpoint.pod))

    async def _pods(self, field_selector: str | None) -> list[V1Pod]:
        listed = await self._core.list_namespaced_pod(
            self.namespace, label_selector=self.selector, field_selector=field_selector
        )
        return sorted(listed.items, key=_name)


def _name(pod: V1Pod) -> str:
    return str(pod.metadata.name) if pod.metadata else ""


def _endpoint(pod: V1Pod) -> AgentEndpoint | None:
    """Where to call the agent in `pod`, if it is Running (not being deleted) with an IP and a port named `http`."""
    status, spec, meta = pod.status, pod.spec, pod.metadata
    if status is None or spec is None or meta is None or meta.deletion_timestamp is not None:
        return None
    if status.phase != "Running" or not status.pod_ip:
        return None
    ports = [port.container_port for c in spec.containers for port in (c.ports or []) if port.name == PORT_NAME]
    if not ports:
        return None
    host = f"[{status.pod_ip}]" if ":" in status.pod_ip else status.pod_ip
    return AgentEndpoint(node=str(spec.node_name), pod=_name(pod), url=f"http://{host}:{ports[0]}")
