"""The simulated kube-scheduler: binds pending pods to nodes that can run them.

A node fits a pod when it is Ready, is not cordoned (unless the pod tolerates
``node.kubernetes.io/unschedulable``), carries no NoSchedule/NoExecute taint the pod does not
tolerate, matches the pod's ``nodeSelector`` and required node affinity (including
``matchFields`` on ``metadata.name``, which DaemonSet pods use), and has enough free
``nvidia.com/gpu`` (pods still terminating keep holding theirs). Among fitting nodes the least
GPU-loaded wins (ties by pod count, then name), so replacements spread out. A pod that fits
nowhere gets PodScheduled=False/Unschedulable with a message like the real scheduler's, and is
retried whenever nodes or pods change.
"""

from __future__ import annotations

from collections import Counter

from .clock import Timers
from .gpus import GPU_RESOURCE
from .jsonvalues import JsonDict, dig
from .metadata import labels_of
from .objects import (
    gpu_request,
    is_terminal,
    is_terminating,
    node_is_ready,
    set_scheduled,
    set_unschedulable,
    tolerates,
)
from .registry import Registry
from .selectors import node_selector_matches
from .store import ADDED, DELETED, Change, Entry
from .timestamps import rfc3339

UNSCHEDULABLE_TAINT = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}


def _node_gpus(node: JsonDict) -> int:
    value = (dig(node, "status", "allocatable") or {}).get(GPU_RESOURCE)
    try:
        return int(str(value)) if value is not None else 0
    except ValueError:
        return 0


def misfit(pod: JsonDict, node: JsonDict, used_gpus: int) -> str | None:
    """Why ``node`` cannot run ``pod`` (a reason bucket of the scheduler's message), or None."""
    tolerations = dig(pod, "spec", "tolerations") or []
    if dig(node, "spec", "unschedulable") and not tolerates(tolerations, UNSCHEDULABLE_TAINT):
        return "node(s) were unschedulable"
    for taint in dig(node, "spec", "taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(tolerations, taint):
            return f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value', '')}}}"
    if not node_is_ready(node):
        return "node(s) were not ready"
    labels = labels_of(node)
    for key, value in (dig(pod, "spec", "nodeSelector") or {}).items():
        if labels.get(key) != value:
            return "node(s) didn't match Pod's node affinity/selector"
    required = dig(pod, "spec", "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution")
    if required:
        terms = required.get("nodeSelectorTerms") or []
        if terms and not any(node_selector_matches(t, node) for t in terms):
            return "node(s) didn't match Pod's node affinity/selector"
    wanted = gpu_request(pod)
    if wanted and used_gpus + wanted > _node_gpus(node):
        return f"Insufficient {GPU_RESOURCE}"
    return None


class Scheduler:
    def __init__(self, registry: Registry, timers: Timers) -> None:
        self.registry = registry
        self.store = registry.store
        self.timers = timers
        self.pending: set[tuple[str, str]] = set()
        self.store.add_listener(self._on_change)

    def _on_change(self, change: Change) -> None:
        if change.key == "pods":
            pod = change.new.obj
            ident = (change.new.namespace, change.new.name)
            if change.type == DELETED:
                self.pending.discard(ident)
                if self.pending:
                    self._kick()
                return
            if not dig(pod, "spec", "nodeName") and not is_terminating(pod) and not dig(pod, "spec", "schedulingGates"):
                if change.type == ADDED or ident not in self.pending:
                    self.pending.add(ident)
                    self._kick()
            elif self.pending and (is_terminal(pod) or is_terminating(pod)):
                self._kick()  # resources freed
        elif change.key == "nodes" and self.pending:
            self._kick()

    def _kick(self) -> None:
        self.timers.soon("schedule", self.run)

    def usage(self, node: str) -> int:
        return sum(gpu_request(e.obj) for e in self.store.pods_on_node(node) if not is_terminal(e.obj))

    def run(self) -> None:
        """Try to bind every pending pod (oldest first)."""
        if not self.pending:
            return
        nodes = sorted(self.store.objects("nodes"), key=lambda e: e.name)
        used = {n.name: self.usage(n.name) for n in nodes}
        counts = {n.name: len(self.store.pods_on_node(n.name)) for n in nodes}
        for ns, name in sorted(self.pending):
            entry = self.store.get("pods", ns, name)
            if entry is None or dig(entry.obj, "spec", "nodeName") or is_terminating(entry.obj):
                self.pending.discard((ns, name))
                continue
            chosen, reasons = self._choose(entry, nodes, used, counts)
            now = rfc3339()
            if chosen is None:
                message = self._message(len(nodes), reasons)

                def mark(obj: JsonDict, message: str = message, now: str = now) -> bool:
                    return set_unschedulable(obj, message, now)

                self.registry.mutate("pods", ns, name, mark)
                continue
            self.pending.discard((ns, name))
            used[chosen] += gpu_request(entry.obj)
            counts[chosen] += 1

            def bind(obj: JsonDict, node: str = chosen, now: str = now) -> bool:
                set_scheduled(obj, node, now)
                return True

            self.registry.mutate("pods", ns, name, bind)

    def _choose(
        self, entry: Entry, nodes: list[Entry], used: dict[str, int], counts: dict[str, int]
    ) -> tuple[str | None, Counter[str]]:
        best: tuple[float, int, str] | None = None
        reasons: Counter[str] = Counter()
        for node in nodes:
            why = misfit(entry.obj, node.obj, used[node.name])
            if why is not None:
                reasons[why] += 1
                continue
            capacity = _node_gpus(node.obj) or 1
            score = (used[node.name] / capacity, counts[node.name], node.name)
            if best is None or score < best:
                best = score
        return (best[2] if best else None), reasons

    @staticmethod
    def _message(total: int, reasons: Counter[str]) -> str:
        parts = ", ".join(f"{count} {why}" for why, count in sorted(reasons.items()))
        return (
            f"0/{total} nodes are available: {parts}. preemption: 0/{total} nodes are available: "
            f"{total} Preemption is not helpful for scheduling."
        )
