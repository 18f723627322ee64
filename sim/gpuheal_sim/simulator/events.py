"""Kubernetes Events the simulated components emit (node reboots and readiness), kept bounded."""

from __future__ import annotations

import secrets
from collections import deque

from .jsonvalues import JsonDict
from .registry import Registry
from .timestamps import rfc3339


class EventRecorder:
    """Writes core/v1 Events like a component's event recorder; the oldest go beyond ``max_events``."""

    def __init__(self, registry: Registry, max_events: int) -> None:
        self.registry = registry
        self.max_events = max_events
        self._written: deque[tuple[str, str]] = deque()

    def record(self, involved: JsonDict, etype: str, reason: str, message: str, component: str, host: str = "") -> None:
        store = self.registry.store
        m = involved["metadata"]
        namespace = str(m.get("namespace") or "default")
        if store.get("namespaces", "", namespace) is None:
            return
        now = rfc3339()
        name = f"{m['name']}.{secrets.token_hex(8)}"
        source: JsonDict = {"component": component}
        if host:
            source["host"] = host
        event: JsonDict = {
            "kind": "Event",
            "apiVersion": "v1",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {
                "kind": involved.get("kind"),
                "name": m["name"],
                "uid": m.get("uid", m["name"]),
                "apiVersion": involved.get("apiVersion"),
                **({"namespace": m["namespace"]} if m.get("namespace") else {}),
            },
            "reason": reason,
            "message": message,
            "source": source,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "type": etype,
            "eventTime": None,
            "reportingComponent": component,
            "reportingInstance": host,
        }
        self.registry.create_object("events", event)
        self._written.append((namespace, name))
        while len(self._written) > self.max_events:
            ns, old = self._written.popleft()
            if store.get("events", ns, old) is not None:
                store.delete("events", ns, old)
