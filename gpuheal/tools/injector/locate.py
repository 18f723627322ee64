"""Finding the injector agent on a node through the Kubernetes API.

The agents are the pods of the injector's DaemonSet, found in its namespace by label selector; the
one on a node is a pod with `spec.nodeName` = that node (a field selector, so the API server sends
nothing else), reached at its `status.podIP` on the container port named `http`. Only a pod that is
Ready (condition Ready=True, so not crash-looping, which keeps phase Running) and not being deleted
is called; during a rolling update a node may have two pods, and the Ready one is taken. A node
whose pods are none of them callable is reported with each pod's state. Only `list` on pods in
that namespace is needed.
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
    """The node's injector agent exists but cannot be called yet (not Ready, terminating, no IP or no port)."""


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
        found = [_endpoint(pod) for pod in pods]
        endpoints = [endpoint for endpoint in found if isinstance(endpoint, AgentEndpoint)]
        if not endpoints:
            states = "; ".join(f"pod {_name(pod)} is {state}" for pod, state in zip(pods, found, strict=True))
            raise AgentNotRunning(f"the injector agent on node {node!r} cannot be called yet: {states}")
        return endpoints[0]

    async def running(self) -> list[AgentEndpoint]:
        """Every node's agent that can be called now (one per node), ordered by node."""
        by_node: dict[str, AgentEndpoint] = {}
        for pod in await self._pods(None):
            if isinstance(endpoint := _endpoint(pod), AgentEndpoint):
                by_node.setdefault(endpoint.node, endpoint)
        return [by_node[node] for node in sorted(by_node)]

    async def _pods(self, field_selector: str | None) -> list[V1Pod]:
        listed = await self._core.list_namespaced_pod(
            self.namespace, label_selector=self.selector, field_selector=field_selector
        )
        return sorted(listed.items, key=_name)


def _name(pod: V1Pod) -> str:
    return str(pod.metadata.name) if pod.metadata else ""


def _endpoint(pod: V1Pod) -> AgentEndpoint | str:
    """Where to call the agent in `pod`; or, when it cannot be called, its state in a few words."""
    status, spec, meta = pod.status, pod.spec, pod.metadata
    if meta is not None and meta.deletion_timestamp is not None:
        return "terminating"
    phase = str(status.phase) if status is not None and status.phase else "Unknown"
    if status is None or spec is None or phase != "Running":
        return phase
    if not any(c.type == "Ready" and c.status == "True" for c in status.conditions or []):
        return "Running but not Ready"
    ports = [port.container_port for c in spec.containers for port in (c.ports or []) if port.name == PORT_NAME]
    if not status.pod_ip or not ports:
        return f"Running without an IP or a port named {PORT_NAME!r}"
    host = f"[{status.pod_ip}]" if ":" in status.pod_ip else status.pod_ip
    return AgentEndpoint(node=str(spec.node_name), pod=_name(pod), url=f"http://{host}:{ports[0]}")
