"""Workload controllers: Deployments, ReplicaSets, Jobs, DaemonSets, garbage collection, namespaces.

Each controller watches the store through a listener, marks the objects it must look at, and
reconciles them on the next event-loop turn (many changes in one turn are one reconcile):

* ReplicaSet: keeps ``spec.replicas`` active pods (not terminating, not finished). An evicted pod
  counts as gone at once, so its replacement is created while it terminates; the scheduler puts
  the replacement on a node that can take it. Pods carry a controller ownerReference.
* Deployment: owns one ReplicaSet per pod template (``<name>-<pod-template-hash>``), scales it,
  and reports replicas/ready/available and the Available/Progressing conditions.
* Job: runs ``parallelism`` pods until ``completions`` have Succeeded (pods finish on their own
  after ``sim.gpuheal.io/run-seconds``); a pod deleted before it finished counts as failed and is
  replaced, up to ``backoffLimit``.
* DaemonSet: one pod per eligible node, pinned with node affinity on ``metadata.name`` and given
  the DaemonSet tolerations (cordoned nodes still run it). A deleted DaemonSet pod is recreated on
  the same node, never elsewhere.
* Garbage collector: deleting an owner deletes its dependents; deleting a node deletes the pods
  bound to it; a Terminating namespace is emptied, then removed.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from .clock import Timers
from .conditions import set_condition
from .identity import random_suffix, stable_hash
from .intstr import int_or_percent
from .jsonvalues import JsonDict, clone, dig
from .kubelet import RUN_ANNOTATION
from .metadata import controller_ref, labels_of
from .objects import (
    DAEMONSET_TOLERATIONS,
    is_ready,
    is_terminal,
    is_terminating,
    owner_ref,
    pod_from_template,
    tolerates,
)
from .registry import DeleteOptions, Registry
from .resources import BY_KEY
from .store import DELETED, Change, Entry
from .timestamps import rfc3339

RS = "replicasets.apps"
DEPLOY = "deployments.apps"
DS = "daemonsets.apps"
JOB = "jobs.batch"


class _Reconciler:
    """Dirty-set bookkeeping shared by the controllers."""

    kind_key = ""

    def __init__(self, registry: Registry, timers: Timers) -> None:
        self.registry = registry
        self.store = registry.store
        self.timers = timers
        self._dirty: set[tuple[str, str]] = set()
        self.store.add_listener(self.on_change)

    def on_change(self, change: Change) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def mark(self, namespace: str, name: str) -> None:
        self._dirty.add((namespace, name))
        self.timers.soon(("reconcile", self.kind_key), self._flush)

    def mark_owner(self, entry: Entry, kind: str) -> None:
        ref = controller_ref(entry.obj)
        if ref is not None and ref.get("kind") == kind:
            self.mark(entry.namespace, str(ref.get("name")))

    def _flush(self) -> None:
        todo = sorted(self._dirty)
        self._dirty.clear()
        for ns, name in todo:
            entry = self.store.get(self.kind_key, ns, name)
            if entry is not None and not is_terminating(entry.obj):
                self.reconcile(entry)

    def reconcile(self, entry: Entry) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def owned_pods(self, owner: Entry) -> list[Entry]:
        return [
            e
            for key, e in self.store.owned_by(owner.uid)
            if key == "pods" and (controller_ref(e.obj) or {}).get("uid") == owner.uid
        ]

    def write_status(self, entry: Entry, status: JsonDict) -> None:
        if entry.obj.get("status") != status:
            self.registry.write_status(self.kind_key, entry.namespace, entry.name, status)

    def new_pod(
        self,
        owner: Entry,
        prefix: str,
        extra_labels: dict[str, str] | None = None,
        extra_annotations: dict[str, str] | None = None,
    ) -> JsonDict:
        template = dig(owner.obj, "spec", "template") or {}
        name = f"{prefix}-{random_suffix(self.registry.rng)}"
        while self.store.get("pods", owner.namespace, name) is not None:
            name = f"{prefix}-{random_suffix(self.registry.rng)}"
        return pod_from_template(
            template,
            name=name,
            namespace=owner.namespace,
            owner=owner.obj,
            labels=extra_labels,
            annotations=extra_annotations,
        )


def _int(value: object, default: int) -> int:
    """An integer field, or ``default`` when it is unset or not a number."""
    if value is None or isinstance(value, bool):
        return default
    try:
        return int(str(value))
    except ValueError:
        return default


def _active(pods: list[Entry]) -> list[Entry]:
    return [p for p in pods if not is_terminating(p.obj) and not is_terminal(p.obj)]


def _deletion_rank(entry: Entry) -> tuple[int, int, str]:
    """Which pods a scale-down removes first: unscheduled, pending, not ready, then the newest."""
    pod = entry.obj
    if not dig(pod, "spec", "nodeName"):
        rank = 0
    elif dig(pod, "status", "phase") == "Pending":
        rank = 1
    elif not is_ready(pod):
        rank = 2
    else:
        rank = 3
    return (rank, -entry.rv, entry.name)


class ReplicaSetController(_Reconciler):
    kind_key = RS

    def on_change(self, change: Change) -> None:
        if change.key == RS and change.type != DELETED:
            self.mark(change.new.namespace, change.new.name)
        elif change.key == "pods":
            self.mark_owner(change.new, "ReplicaSet")

    def reconcile(self, entry: Entry) -> None:
        rs = entry.obj
        pods = self.owned_pods(entry)
        active = _active(pods)
        want = int(dig(rs, "spec", "replicas") if dig(rs, "spec", "replicas") is not None else 1)
        if len(active) < want:
            for _ in range(want - len(active)):
                self.registry.create_object("pods", self.new_pod(entry, entry.name))
        elif len(active) > want:
            for victim in sorted(active, key=_deletion_rank)[: len(active) - want]:
                self.registry.delete_pod(victim, None)
        entry = self.store.get(RS, entry.namespace, entry.name) or entry
        active = _active(self.owned_pods(entry))
        ready = sum(1 for p in active if is_ready(p.obj))
        template_labels = dig(rs, "spec", "template", "metadata", "labels") or {}
        status: JsonDict = {
            "replicas": len(active),
            "fullyLabeledReplicas": sum(
                1 for p in active if all(labels_of(p.obj).get(k) == v for k, v in template_labels.items())
            ),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "observedGeneration": entry.obj["metadata"].get("generation", 1),
        }
        status = {k: v for k, v in status.items() if v or k in ("replicas", "observedGeneration")}
        self.write_status(entry, status)


def template_hash(template: JsonDict) -> str:
    return stable_hash(json.dumps(template, sort_keys=True), 10)


class DeploymentController(_Reconciler):
    kind_key = DEPLOY

    def on_change(self, change: Change) -> None:
        if change.key == DEPLOY and change.type != DELETED:
            self.mark(change.new.namespace, change.new.name)
        elif change.key == RS:
            self.mark_owner(change.new, "Deployment")

    def reconcile(self, entry: Entry) -> None:
        dep = entry.obj
        template = dig(dep, "spec", "template") or {}
        phash = template_hash(template)
        replicas = int(dig(dep, "spec", "replicas") if dig(dep, "spec", "replicas") is not None else 1)
        owned = [e for key, e in self.store.owned_by(entry.uid) if key == RS]
        current = next((e for e in owned if labels_of(e.obj).get("pod-template-hash") == phash), None)
        if current is None:
            current = self.registry.create_object(RS, self.replicaset_for(dep, phash, replicas, len(owned) + 1))
        for rs in [*owned, current]:
            want = replicas if rs is current else 0
            if dig(rs.obj, "spec", "replicas") != want:

                def scale(obj: JsonDict, n: int = want) -> bool:
                    obj["spec"]["replicas"] = n
                    return True

                self.registry.mutate(RS, rs.namespace, rs.name, scale)
        owned = [e for key, e in self.store.owned_by(entry.uid) if key == RS]
        total = sum(int(dig(r.obj, "status", "replicas") or 0) for r in owned)
        ready = sum(int(dig(r.obj, "status", "readyReplicas") or 0) for r in owned)
        updated = next((int(dig(r.obj, "status", "replicas") or 0) for r in owned if r.name == current.name), 0)
        max_unavailable = int_or_percent(
            dig(dep, "spec", "strategy", "rollingUpdate", "maxUnavailable") or "25%", replicas, False
        )
        now = rfc3339()
        conditions = [dict(c) for c in dig(dep, "status", "conditions") or []]
        if ready >= replicas - max_unavailable:
            set_condition(
                conditions, "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.", now
            )
        else:
            set_condition(
                conditions,
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
                now,
            )
        set_condition(
            conditions,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            f'ReplicaSet "{current.name}" has successfully progressed.',
            now,
        )
        for cond in conditions:
            cond.setdefault("lastUpdateTime", cond.get("lastTransitionTime"))
        status: JsonDict = {
            "observedGeneration": dep["metadata"].get("generation", 1),
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": max(0, replicas - ready),
            "conditions": conditions,
        }
        status = {k: v for k, v in status.items() if v or k in ("observedGeneration", "conditions")}
        old = dict(dep.get("status") or {})
        if _without_times(old) != _without_times(status):
            self.write_status(entry, status)

    @staticmethod
    def replicaset_for(dep: JsonDict, phash: str, replicas: int, revision: int) -> JsonDict:
        template = clone(dig(dep, "spec", "template") or {})
        template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = phash
        selector = clone(dig(dep, "spec", "selector") or {})
        selector.setdefault("matchLabels", {})["pod-template-hash"] = phash
        name = f"{dep['metadata']['name']}-{phash}"
        return {
            "kind": "ReplicaSet",
            "apiVersion": "apps/v1",
            "metadata": {
                "name": name,
                "namespace": dep["metadata"]["namespace"],
                "labels": dict(template["metadata"]["labels"]),
                "annotations": {
                    "deployment.kubernetes.io/desired-replicas": str(replicas),
                    "deployment.kubernetes.io/max-replicas": str(replicas + max(1, replicas // 4)),
                    "deployment.kubernetes.io/revision": str(revision),
                },
                "ownerReferences": [owner_ref(dep)],
            },
            "spec": {"replicas": replicas, "selector": selector, "template": template},
            "status": {"replicas": 0},
        }


def _without_times(status: JsonDict) -> JsonDict:
    out = dict(status)
    out["conditions"] = [
        {k: v for k, v in c.items() if k not in ("lastUpdateTime", "lastTransitionTime")}
        for c in status.get("conditions") or []
    ]
    return out


class JobController(_Reconciler):
    kind_key = JOB

    def __init__(self, registry: Registry, timers: Timers) -> None:
        super().__init__(registry, timers)
        self._lost: dict[str, set[str]] = {}

    def on_change(self, change: Change) -> None:
        if change.key == JOB and change.type != DELETED:
            self.mark(change.new.namespace, change.new.name)
        elif change.key == JOB:
            self._lost.pop(change.new.uid, None)
        elif change.key == "pods":
            ref = controller_ref(change.new.obj)
            if ref is None or ref.get("kind") != "Job":
                return
            if change.type == DELETED and dig(change.new.obj, "status", "phase") != "Succeeded":
                self._lost.setdefault(str(ref.get("uid")), set()).add(change.new.uid)
            self.mark(change.new.namespace, str(ref.get("name")))

    def reconcile(self, entry: Entry) -> None:
        job = entry.obj
        spec = job.get("spec") or {}
        pods = self.owned_pods(entry)
        succeeded = sum(1 for p in pods if dig(p.obj, "status", "phase") == "Succeeded")
        failed = sum(1 for p in pods if dig(p.obj, "status", "phase") == "Failed") + len(self._lost.get(entry.uid, ()))
        active = _active(pods)
        completions = _int(spec.get("completions"), 1)
        parallelism = _int(spec.get("parallelism"), 1)
        backoff = _int(spec.get("backoffLimit"), 6)
        status = dict(job.get("status") or {})
        now = rfc3339()
        status.setdefault("startTime", now)
        conditions = [dict(c) for c in status.get("conditions") or []]
        finished = any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions)
        if not finished:
            if succeeded >= completions:
                set_condition(
                    conditions,
                    "SuccessCriteriaMet",
                    "True",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    now,
                    probe=False,
                )
                set_condition(
                    conditions,
                    "Complete",
                    "True",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    now,
                )
                status["completionTime"] = now
            elif failed > backoff:
                set_condition(
                    conditions,
                    "FailureTarget",
                    "True",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                    now,
                )
                set_condition(
                    conditions,
                    "Failed",
                    "True",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                    now,
                )
            else:
                want = min(parallelism, completions - succeeded) - len(active)
                annotations = {}
                run = (job["metadata"].get("annotations") or {}).get(RUN_ANNOTATION)
                if run is not None:
                    annotations[RUN_ANNOTATION] = str(run)
                for _ in range(max(0, want)):
                    pod = self.new_pod(entry, entry.name, extra_annotations=annotations)
                    pod["metadata"]["annotations"] = {
                        **annotations,
                        **(pod["metadata"].get("annotations") or {}),
                    }
                    self.registry.create_object("pods", pod)
                active = _active(self.owned_pods(entry))
        for cond in conditions:
            cond.setdefault("lastProbeTime", cond.get("lastTransitionTime"))
        status.update(
            {
                "active": len(active),
                "succeeded": succeeded,
                "failed": failed,
                "ready": sum(1 for p in active if is_ready(p.obj)),
                "terminating": sum(1 for p in pods if is_terminating(p.obj)),
                "uncountedTerminatedPods": {},
            }
        )
        if conditions:
            status["conditions"] = conditions
        status = {k: v for k, v in status.items() if v or k in ("ready", "terminating", "uncountedTerminatedPods")}
        if _without_times(dict(job.get("status") or {})) != _without_times(status):
            self.write_status(entry, status)


def daemonset_eligible(ds: JsonDict, node: JsonDict) -> bool:
    """Whether the DaemonSet should run a pod on ``node`` (selector, affinity, taints)."""
    spec = dig(ds, "spec", "template", "spec") or {}
    labels = labels_of(node)
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    tolerations = list(spec.get("tolerations") or []) + DAEMONSET_TOLERATIONS
    for taint in dig(node, "spec", "taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(tolerations, taint):
            return False
    return True


class DaemonSetController(_Reconciler):
    """One pod per eligible node; node changes are handled per node, not by walking the fleet."""

    kind_key = DS

    def __init__(self, registry: Registry, timers: Timers) -> None:
        super().__init__(registry, timers)
        self._nodes_dirty: set[str] = set()
        self._status_dirty: set[tuple[str, str]] = set()
        # DaemonSet uid -> node -> whether the DaemonSet should run there.
        self._eligible: dict[str, dict[str, bool]] = {}
        # (DaemonSet uid, node) -> the pod created for that node, until the scheduler binds it.
        self._unbound: dict[tuple[str, str], str] = {}

    def on_change(self, change: Change) -> None:
        if change.key == DS:
            if change.type == DELETED:
                self._eligible.pop(change.new.uid, None)
            else:
                self.mark(change.new.namespace, change.new.name)
        elif change.key == "pods":
            ref = controller_ref(change.new.obj)
            if ref is not None and ref.get("kind") == "DaemonSet":
                node = dig(change.new.obj, "spec", "nodeName") or _pinned_node(change.new.obj)
                self._nodes_dirty.add(str(node))
                self._status_dirty.add((change.new.namespace, str(ref.get("name"))))
                self._kick()
        elif change.key == "nodes":
            old = change.old.obj if change.old else None
            new = change.new.obj
            if (
                change.type != "MODIFIED"
                or labels_of(old or {}) != labels_of(new)
                or dig(old, "spec", "taints") != dig(new, "spec", "taints")
            ):
                self._nodes_dirty.add(change.new.name)
                self._kick()

    def _kick(self) -> None:
        self.timers.soon(("reconcile", self.kind_key), self._flush)

    def _flush(self) -> None:
        full = set(self._dirty)
        super()._flush()  # full reconciles (new or changed DaemonSets)
        nodes, self._nodes_dirty = self._nodes_dirty, set()
        status_dirty, self._status_dirty = self._status_dirty, set()
        for entry in list(self.store.objects(DS)):
            ident = (entry.namespace, entry.name)
            if ident in full or is_terminating(entry.obj):
                continue
            if nodes:
                changed = False
                for node in sorted(nodes):
                    changed |= self._ensure(entry, node, self._pods_on(entry, node))
                if changed:
                    status_dirty.add(ident)
            if ident in status_dirty:
                self._write_ds_status(entry)

    def _pods_on(self, entry: Entry, node: str) -> list[Entry]:
        """The DaemonSet's unfinished pods for one node: bound there, or created for it and not bound yet."""
        pods = [
            p
            for p in self.store.pods_on_node(node)
            if not is_terminal(p.obj) and (controller_ref(p.obj) or {}).get("uid") == entry.uid
        ]
        pending = self._unbound.get((entry.uid, node))
        if pending is not None:
            created = self.store.get("pods", entry.namespace, pending)
            if created is None or dig(created.obj, "spec", "nodeName"):
                del self._unbound[(entry.uid, node)]
            else:
                pods.append(created)
        return pods

    def _pods_by_node(self, entry: Entry) -> dict[str, list[Entry]]:
        by_node: dict[str, list[Entry]] = {}
        for pod in self.owned_pods(entry):
            if not is_terminal(pod.obj):
                node = dig(pod.obj, "spec", "nodeName") or _pinned_node(pod.obj)
                by_node.setdefault(str(node), []).append(pod)
        return by_node

    def _ensure(self, entry: Entry, node_name: str, pods: list[Entry]) -> bool:
        """Make one node right for one DaemonSet; True when the node's eligibility changed."""
        eligible_map = self._eligible.setdefault(entry.uid, {})
        node = self.store.get("nodes", "", node_name)
        eligible = node is not None and daemonset_eligible(entry.obj, node.obj)
        changed = eligible_map.get(node_name) != eligible
        if node is None:
            eligible_map.pop(node_name, None)
        else:
            eligible_map[node_name] = eligible
        if eligible and not pods:
            generation = str(entry.obj["metadata"].get("generation", 1))
            revision = template_hash(dig(entry.obj, "spec", "template") or {})
            pod = self.registry.create_object("pods", self.pod_for(entry, node_name, generation, revision))
            self._unbound[(entry.uid, node_name)] = pod.name
            return True
        for extra in sorted(_active(pods), key=lambda e: e.rv)[1:]:
            self.registry.delete_pod(extra, None)
        return changed

    def reconcile(self, entry: Entry) -> None:
        by_node = self._pods_by_node(entry)
        self._eligible[entry.uid] = {}
        for node in sorted(self.store.objects("nodes"), key=lambda e: e.name):
            self._ensure(entry, node.name, by_node.get(node.name, []))
        self._write_ds_status(entry)

    def _write_ds_status(self, entry: Entry) -> None:
        entry = self.store.get(DS, entry.namespace, entry.name) or entry
        eligible = self._eligible.get(entry.uid, {})
        desired = sum(1 for ok in eligible.values() if ok)
        current = ready = 0
        for node, pods in self._pods_by_node(entry).items():
            live = _active(pods)
            if live and node:
                current += 1
                ready += 1 if any(is_ready(p.obj) for p in live) else 0
        status: JsonDict = {
            "currentNumberScheduled": current,
            "numberMisscheduled": 0,
            "desiredNumberScheduled": desired,
            "numberReady": ready,
            "observedGeneration": entry.obj["metadata"].get("generation", 1),
            "updatedNumberScheduled": current,
            "numberAvailable": ready,
        }
        if desired - ready > 0:
            status["numberUnavailable"] = desired - ready
        self.write_status(entry, status)

    def pod_for(self, entry: Entry, node: str, generation: str, revision: str) -> JsonDict:
        pod = self.new_pod(
            entry,
            entry.name,
            {
                "controller-revision-hash": revision,
                "pod-template-generation": generation,
            },
        )
        spec = pod["spec"]
        spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchFields": [
                                {"key": "metadata.name", "operator": "In", "values": [node]},
                            ]
                        }
                    ],
                }
            }
        }
        tolerations = spec.setdefault("tolerations", [])
        for tol in DAEMONSET_TOLERATIONS:
            if tol not in tolerations:
                tolerations.append(dict(tol))
        return pod


def _pinned_node(pod: JsonDict) -> str:
    terms = (
        dig(
            pod,
            "spec",
            "affinity",
            "nodeAffinity",
            "requiredDuringSchedulingIgnoredDuringExecution",
            "nodeSelectorTerms",
        )
        or []
    )
    for term in terms:
        for expr in term.get("matchFields") or []:
            if expr.get("key") == "metadata.name" and expr.get("values"):
                return str(expr["values"][0])
    return ""


class GarbageCollector:
    """Cascading deletion by ownerReferences, pod GC for deleted nodes, namespace termination."""

    def __init__(self, registry: Registry, timers: Timers) -> None:
        self.registry = registry
        self.store = registry.store
        self.timers = timers
        self._gone: set[str] = set()
        self._nodes: set[str] = set()
        self._namespaces: set[str] = set()
        self.store.add_listener(self._on_change)

    def _on_change(self, change: Change) -> None:
        if change.type == DELETED:
            self._gone.add(change.new.uid)
            if change.key == "nodes":
                self._nodes.add(change.new.name)
            self._kick()
        if change.key == "namespaces" and is_terminating(change.new.obj) and change.type != DELETED:
            self._namespaces.add(change.new.name)
            self._kick()
        elif change.type == DELETED and change.new.namespace in self._namespaces:
            self._kick()

    def _kick(self) -> None:
        self.timers.soon("gc", self.run)

    def run(self) -> None:
        gone, self._gone = self._gone, set()
        for uid in gone:
            for key, dependent in self.store.owned_by(uid):
                refs = dependent.obj["metadata"].get("ownerReferences") or []
                if all(self.store.by_uid(str(r.get("uid"))) is None for r in refs):
                    self._delete(key, dependent, None)
        nodes, self._nodes = self._nodes, set()
        for node in nodes:
            if self.store.get("nodes", "", node) is None:
                for pod in self.store.pods_on_node(node):
                    self.registry.delete_pod(pod, 0)
        for ns in list(self._namespaces):
            self._empty_namespace(ns)

    def _delete(self, key: str, entry: Entry, grace: int | None) -> None:
        if key == "pods":
            self.registry.delete_pod(entry, grace)
            return
        rt = BY_KEY[key]
        if not is_terminating(entry.obj):
            self.registry.delete(rt, entry.namespace, entry.name, DeleteOptions())

    def _empty_namespace(self, ns: str) -> None:
        entry = self.store.get("namespaces", "", ns)
        if entry is None or not is_terminating(entry.obj):
            self._namespaces.discard(ns)
            return
        remaining = 0
        for key, rt in BY_KEY.items():
            if not rt.namespaced:
                continue
            for obj in list(self.store.objects(key, ns)):
                remaining += 1
                self._delete(key, obj, None)
        if remaining == 0 or not any(True for key in BY_KEY for _ in self.store.objects(key, ns)):
            self._namespaces.discard(ns)
            self.store.delete("namespaces", "", ns)


ControllerFactory = Callable[[Registry, Timers], object]
ALL_CONTROLLERS: tuple[ControllerFactory, ...] = (
    ReplicaSetController,
    DeploymentController,
    JobController,
    DaemonSetController,
    GarbageCollector,
)
