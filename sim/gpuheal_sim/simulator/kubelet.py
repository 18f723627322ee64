"""The simulated kubelets: they run the pods bound to their node.

One ``Kubelet`` object stands for the kubelets of every node. It reacts to pod changes:

* a pod bound to a node whose kubelet is up goes Pending (ContainerCreating), then Running and
  Ready after the start delay (``pod_start_seconds``, or the pod's ``sim.gpuheal.io/start-seconds``
  annotation);
* a pod carrying ``sim.gpuheal.io/run-seconds`` (Job pods) finishes on its own: phase Succeeded;
* a pod being deleted is removed when its grace period ends, or earlier if its process exits
  first (``sim.gpuheal.io/shutdown-seconds``); a pod on a node that is down stays Terminating until
  the node is back, as with a real unreachable kubelet;
* static pods are mirrored to the API as mirror pods (``kubernetes.io/config.mirror``) and come back
  when deleted.

When a node goes down its pods' containers die, but a kubelet that is down writes nothing: the API
goes on showing them as they were until the node lifecycle controller marks them not ready. When
the node comes back the kubelet reports the restarted containers (``restartCount`` + 1) and they
become Ready after the start delay.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .clock import Timers
from .jsonvalues import JsonDict, clone, dig
from .objects import (
    MIRROR_ANNOTATION,
    is_mirror,
    is_ready,
    is_terminal,
    is_terminating,
    set_creating,
    set_restarting,
    set_running,
    set_running_at_once,
    set_scheduled,
    set_succeeded,
)
from .registry import Registry
from .store import DELETED, Change, Entry
from .timestamps import rfc3339

START_ANNOTATION = "sim.gpuheal.io/start-seconds"
RUN_ANNOTATION = "sim.gpuheal.io/run-seconds"
SHUTDOWN_ANNOTATION = "sim.gpuheal.io/shutdown-seconds"


@dataclass
class StaticPod:
    """A static pod every kubelet runs (its API copy is a mirror pod named ``<name>-<node>``)."""

    name: str
    namespace: str
    template: JsonDict


def _annotation_seconds(pod: JsonDict, key: str) -> float | None:
    value = (dig(pod, "metadata", "annotations") or {}).get(key)
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _waiting(pod: JsonDict) -> bool:
    statuses = dig(pod, "status", "containerStatuses") or []
    return not statuses or any("waiting" in (cs.get("state") or {}) for cs in statuses)


class Kubelet:
    def __init__(self, registry: Registry, timers: Timers, pod_start_seconds: float) -> None:
        self.registry = registry
        self.store = registry.store
        self.timers = timers
        self.pod_start_seconds = pod_start_seconds
        self.static_pods: list[StaticPod] = []
        self.down: set[str] = set()
        self._ip_counter: dict[str, int] = {}
        self._finish_grace: dict[str, float] = {}
        self.store.add_listener(self._on_change)

    # --- reacting to pods --------------------------------------------------------------------------

    def _on_change(self, change: Change) -> None:
        if change.key != "pods":
            return
        pod = change.new.obj
        uid = change.new.uid
        if change.type == DELETED:
            for kind in ("start", "finish", "complete", "sync"):
                self.timers.cancel((kind, uid))
            self._finish_grace.pop(uid, None)
            if MIRROR_ANNOTATION in (dig(pod, "metadata", "annotations") or {}):
                node = str(dig(pod, "spec", "nodeName") or "")
                self.timers.later(
                    ("mirror", node, change.new.namespace, change.new.name),
                    self.pod_start_seconds,
                    lambda: self.ensure_static_pods(node),
                )
            return
        if not dig(pod, "spec", "nodeName"):
            return
        ns, name = change.new.namespace, change.new.name
        self.timers.soon(("sync", uid), lambda: self.sync_pod(ns, name, uid))

    def sync_pod(self, namespace: str, name: str, uid: str) -> None:
        """Move one pod along its lifecycle as far as its node's kubelet would now."""
        entry = self.store.get("pods", namespace, name)
        if entry is None or entry.uid != uid:
            return
        pod = entry.obj
        node = str(dig(pod, "spec", "nodeName") or "")
        if not node or node in self.down:
            return
        if is_terminating(pod):
            if is_mirror(pod):
                # The static pod keeps running; the kubelet drops the mirror and recreates it.
                self.registry.finish_pod(namespace, name, uid)
            else:
                self._schedule_finish(entry)
            return
        if is_terminal(pod):
            return
        phase = dig(pod, "status", "phase")
        if phase == "Pending" and not dig(pod, "status", "containerStatuses"):
            node_entry = self.store.get("nodes", "", node)

            def creating(obj: JsonDict) -> bool:
                set_creating(obj, node_entry.obj if node_entry else None, rfc3339())
                return True

            self.registry.mutate("pods", namespace, name, creating)
        if _waiting(pod) or phase == "Pending":
            if not self.timers.pending(("start", uid)):
                delay = _annotation_seconds(pod, START_ANNOTATION)
                self.timers.later(
                    ("start", uid),
                    self.pod_start_seconds if delay is None else delay,
                    lambda: self._start(namespace, name, uid),
                )
            return
        run = _annotation_seconds(pod, RUN_ANNOTATION)
        if run is not None and phase == "Running" and is_ready(pod) and not self.timers.pending(("complete", uid)):
            self.timers.later(("complete", uid), run, lambda: self._complete(namespace, name, uid))

    def _start(self, namespace: str, name: str, uid: str) -> None:
        entry = self.store.get("pods", namespace, name)
        if entry is None or entry.uid != uid or is_terminating(entry.obj) or is_terminal(entry.obj):
            return
        node = str(dig(entry.obj, "spec", "nodeName") or "")
        if node in self.down:
            return
        ip = str(dig(entry.obj, "status", "podIP") or "") or self._next_ip(node)

        def run(obj: JsonDict) -> bool:
            set_running(obj, ip, rfc3339())
            return True

        self.registry.mutate("pods", namespace, name, run)

    def _complete(self, namespace: str, name: str, uid: str) -> None:
        entry = self.store.get("pods", namespace, name)
        if entry is None or entry.uid != uid or is_terminal(entry.obj):
            return
        if str(dig(entry.obj, "spec", "nodeName") or "") in self.down:
            return

        def succeed(obj: JsonDict) -> bool:
            set_succeeded(obj, rfc3339())
            return True

        self.registry.mutate("pods", namespace, name, succeed)

    def _schedule_finish(self, entry: Entry) -> None:
        pod = entry.obj
        grace = float(dig(pod, "metadata", "deletionGracePeriodSeconds") or 0)
        if grace <= 0 and pod["metadata"].get("finalizers"):
            return  # waiting for finalizers only
        if self._finish_grace.get(entry.uid) == grace and self.timers.pending(("finish", entry.uid)):
            return
        self._finish_grace[entry.uid] = grace
        shutdown = _annotation_seconds(pod, SHUTDOWN_ANNOTATION)
        delay = grace if shutdown is None else min(grace, shutdown)
        ns, name, uid = entry.namespace, entry.name, entry.uid
        self.timers.later(("finish", uid), delay, lambda: self._finish(ns, name, uid))

    def _finish(self, namespace: str, name: str, uid: str) -> None:
        entry = self.store.get("pods", namespace, name)
        if entry is None or entry.uid != uid:
            return
        if str(dig(entry.obj, "spec", "nodeName") or "") in self.down:
            return  # finished when the node is back
        self._finish_grace.pop(uid, None)
        self.registry.finish_pod(namespace, name, uid)

    def _next_ip(self, node: str) -> str:
        count = self._ip_counter.get(node, 0) + 1
        self._ip_counter[node] = count
        node_entry = self.store.get("nodes", "", node)
        cidr = str(dig(node_entry.obj, "spec", "podCIDR") or "10.244.0.0/24") if node_entry else "10.244.0.0/24"
        base = cidr.split("/")[0].rsplit(".", 1)[0]
        return f"{base}.{count % 250 + 2}"

    def assign_ip(self, node: str) -> str:
        return self._next_ip(node)

    # --- node up / down ----------------------------------------------------------------------------

    def node_down(self, node: str) -> None:
        """The node's kubelet stops: its containers die, and nobody tells the API (the node lifecycle
        controller marks the pods not ready once the node's grace has passed)."""
        self.down.add(node)
        for entry in self.store.pods_on_node(node):
            for kind in ("start", "complete", "finish"):
                self.timers.cancel((kind, entry.uid))

    def node_up(self, node: str) -> None:
        """The node's kubelet is back: finish terminating pods, report the others' containers as
        having died with the reboot (restart count + 1) and start them again."""
        self.down.discard(node)
        now = rfc3339()
        for entry in self.store.pods_on_node(node):
            if is_terminating(entry.obj):
                self.registry.finish_pod(entry.namespace, entry.name, entry.uid)
                continue
            if not is_terminal(entry.obj):

                def died(obj: JsonDict) -> bool:
                    set_restarting(obj, now, "")
                    return True

                self.registry.mutate("pods", entry.namespace, entry.name, died)
            self.sync_pod(entry.namespace, entry.name, entry.uid)
        self.ensure_static_pods(node)

    # --- static / mirror pods ----------------------------------------------------------------------

    def ensure_static_pods(self, node: str, running: bool = False) -> None:
        """Create the mirror pods of this node's static pods that are missing."""
        node_entry = self.store.get("nodes", "", node)
        if node_entry is None or node in self.down:
            return
        for static in self.static_pods:
            name = f"{static.name}-{node}"
            if self.store.get("pods", static.namespace, name) is not None:
                continue
            if self.store.get("namespaces", "", static.namespace) is None:
                continue
            self.registry.create_object("pods", self.mirror_pod(static, node_entry.obj, running))

    def mirror_pod(self, static: StaticPod, node: JsonDict, running: bool) -> JsonDict:
        node_name = str(node["metadata"]["name"])
        config_hash = hashlib.sha256(f"{static.namespace}/{static.name}".encode()).hexdigest()[:32]
        tmeta = static.template.get("metadata") or {}
        pod: JsonDict = {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {
                "name": f"{static.name}-{node_name}",
                "namespace": static.namespace,
                "labels": dict(tmeta.get("labels") or {}),
                "annotations": {
                    **(tmeta.get("annotations") or {}),
                    MIRROR_ANNOTATION: config_hash,
                    "kubernetes.io/config.hash": config_hash,
                    "kubernetes.io/config.seen": rfc3339(),
                    "kubernetes.io/config.source": "file",
                },
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "Node",
                        "name": node_name,
                        "uid": node["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": clone(static.template.get("spec") or {}),
            "status": {"phase": "Pending"},
        }
        pod["spec"]["nodeName"] = node_name
        pod["spec"].setdefault("priorityClassName", "system-node-critical")
        pod["spec"].setdefault("priority", 2000001000)
        now = rfc3339()
        if running:
            set_running_at_once(pod, node, self._next_ip(node_name), now)
        else:
            set_scheduled(pod, node_name, now)
        return pod


__all__ = ["RUN_ANNOTATION", "SHUTDOWN_ANNOTATION", "START_ANNOTATION", "Kubelet", "StaticPod"]
