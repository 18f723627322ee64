"""The node lifecycle controller of kube-controller-manager, for what gpuheal meets.

Upstream: ``pkg/controller/nodelifecycle/node_lifecycle_controller.go`` (``doNoScheduleTaintingPass``,
``doNoExecuteTaintingPass``, ``processTaintBaseEviction``, ``monitorNodeHealth``,
``tryUpdateNodeHealth``), ``pkg/controller/util/node/controller_utils.go``
(``SwapNodeControllerTaint``, ``MarkPodsNotReady``) and the taint keys of
``staging/src/k8s.io/api/core/v1/well_known_taints.go``.

* **NoSchedule taints** follow the node on every change: ``node.kubernetes.io/unschedulable`` while
  ``spec.unschedulable`` is true, ``not-ready`` / ``unreachable`` while Ready is False / Unknown,
  ``memory-pressure``, ``disk-pressure``, ``pid-pressure``, ``network-unavailable`` while those
  conditions are True. Only those keys (with effect NoSchedule) are the controller's: it adds the
  missing ones at the end of the list and removes the ones no longer due, and leaves every other
  taint as it is. ``SwapNodeControllerTaint`` stamps every taint it adds with ``timeAdded``, the
  NoSchedule ones included.
* **NoExecute taints** mirror Ready: ``node.kubernetes.io/not-ready`` for False,
  ``node.kubernetes.io/unreachable`` for Unknown (mutually exclusive, swapped in one write), neither
  for True; each with ``timeAdded``.
* **Node health**: the kubelet renews its lease while it runs (``kubelet_posted``). When it stops
  (``kubelet_stopped``: the node went down) and ``grace_seconds`` (``--node-monitor-grace-period``)
  pass without a renewal, the controller sets Ready, MemoryPressure, DiskPressure and PIDPressure to
  Unknown ("NodeStatusUnknown", "Kubelet stopped posting node status.", ``lastTransitionTime`` now,
  ``lastHeartbeatTime`` left as the kubelet last wrote it), records ``NodeNotReady`` and marks the
  node's pods not ready. A node back within the grace never shows Unknown.

The taint passes run on the next loop turn after any node change (upstream: a work queue fed by the
node informer, and the NoExecute pass every 100 ms), so a taint is never later than upstream's.
Left out: the zone disruption modes (an all-NotReady zone stops NoExecute tainting), the NoExecute
rate limiter (``--node-eviction-rate``), ``--node-startup-grace-period`` for nodes that never
posted, the monitor period (the grace is measured exactly from the moment the kubelet stopped), and
label reconciliation.
"""

from __future__ import annotations

from .clock import Timers
from .conditions import find_condition
from .events import EventRecorder
from .jsonvalues import JsonDict, dig
from .registry import Registry
from .store import DELETED, Change
from .timestamps import rfc3339

NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
MEMORY_PRESSURE = "node.kubernetes.io/memory-pressure"
DISK_PRESSURE = "node.kubernetes.io/disk-pressure"
PID_PRESSURE = "node.kubernetes.io/pid-pressure"
NETWORK_UNAVAILABLE = "node.kubernetes.io/network-unavailable"

# nodeConditionToTaintKeyStatusMap: which condition in which status means which NoSchedule taint.
_CONDITION_TAINTS: dict[str, dict[str, str]] = {
    "Ready": {"False": NOT_READY, "Unknown": UNREACHABLE},
    "MemoryPressure": {"True": MEMORY_PRESSURE},
    "DiskPressure": {"True": DISK_PRESSURE},
    "NetworkUnavailable": {"True": NETWORK_UNAVAILABLE},
    "PIDPressure": {"True": PID_PRESSURE},
}
_NO_SCHEDULE_KEYS = frozenset({UNSCHEDULABLE, *(key for m in _CONDITION_TAINTS.values() for key in m.values())})
_NO_EXECUTE = {"False": NOT_READY, "Unknown": UNREACHABLE}
# The conditions the controller turns Unknown when the kubelet stops posting (NetworkUnavailable is
# the network plugin's, not the kubelet's).
KUBELET_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")
STOPPED_POSTING = "Kubelet stopped posting node status."

# The upstream default of --node-monitor-grace-period.
DEFAULT_GRACE_SECONDS = 50.0


class NodeLifecycleController:
    def __init__(
        self,
        registry: Registry,
        timers: Timers,
        recorder: EventRecorder,
        *,
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
        taints: bool = True,
    ) -> None:
        self.registry = registry
        self.store = registry.store
        self.timers = timers
        self.recorder = recorder
        self.grace_seconds = grace_seconds
        self.taints = taints
        self.store.add_listener(self._on_change)

    # --- the kubelet's lease -----------------------------------------------------------------------

    def kubelet_posted(self, node: str) -> None:
        """The node's kubelet posted status / renewed its lease: the grace starts again."""
        self.timers.cancel(("node-grace", node))

    def kubelet_stopped(self, node: str) -> None:
        """The node's kubelet stopped posting: Unknown once the grace passes without a renewal."""
        self.timers.later(("node-grace", node), self.grace_seconds, lambda: self._stopped_posting(node))

    def _stopped_posting(self, name: str) -> None:
        """tryUpdateNodeHealth past the grace: the kubelet's conditions go Unknown."""
        entry = self.store.get("nodes", "", name)
        if entry is None:
            return
        now = rfc3339()
        was_ready = (find_condition(dig(entry.obj, "status", "conditions"), "Ready") or {}).get("status") == "True"
        created = str(entry.obj["metadata"].get("creationTimestamp") or now)

        def unknown(obj: JsonDict) -> bool:
            conditions = obj.setdefault("status", {}).setdefault("conditions", [])
            changed = False
            for ctype in KUBELET_CONDITIONS:
                cond = find_condition(conditions, ctype)
                if cond is None:
                    conditions.append(
                        {
                            "type": ctype,
                            "status": "Unknown",
                            "lastHeartbeatTime": created,
                            "lastTransitionTime": now,
                            "reason": "NodeStatusNeverUpdated",
                            "message": "Kubelet never posted node status.",
                        }
                    )
                    changed = True
                elif cond.get("status") != "Unknown":
                    cond["status"] = "Unknown"
                    cond["lastTransitionTime"] = now
                    cond["reason"] = "NodeStatusUnknown"
                    cond["message"] = STOPPED_POSTING
                    changed = True
            return changed

        updated = self.registry.mutate("nodes", "", name, unknown)
        if updated is None or not was_ready:
            return
        self.recorder.record(
            updated.obj, "Normal", "NodeNotReady", f"Node {name} status is now: NodeNotReady", "node-controller"
        )
        self._mark_pods_not_ready(name, now)

    def _mark_pods_not_ready(self, node: str, now: str) -> None:
        """MarkPodsNotReady: the Ready condition of every pod on the node turns False."""
        for entry in self.store.pods_on_node(node):

            def not_ready(obj: JsonDict) -> bool:
                cond = find_condition(dig(obj, "status", "conditions"), "Ready")
                if cond is None or cond.get("status") == "False":
                    return False
                cond["status"] = "False"
                cond["lastTransitionTime"] = now
                return True

            before = entry.obj
            after = self.registry.mutate("pods", entry.namespace, entry.name, not_ready)
            if after is not None and after.obj is not before:
                self.recorder.record(after.obj, "Warning", "NodeNotReady", "Node is not ready", "node-controller")

    # --- taints ------------------------------------------------------------------------------------

    def _on_change(self, change: Change) -> None:
        if change.key != "nodes":
            return
        name = change.new.name
        if change.type == DELETED:
            self.timers.cancel(("node-grace", name))
            return
        if self.taints:
            self.timers.soon(("node-taints", name), lambda: self.taint_pass(name))

    def taint_pass(self, name: str) -> None:
        """doNoScheduleTaintingPass and the NoExecute taints of processTaintBaseEviction, in one write."""
        entry = self.store.get("nodes", "", name)
        if entry is None:
            return
        node = entry.obj
        statuses = {
            c.get("type"): c.get("status") for c in dig(node, "status", "conditions") or [] if isinstance(c, dict)
        }
        no_schedule = {
            key
            for ctype, status in statuses.items()
            if (key := _CONDITION_TAINTS.get(str(ctype), {}).get(str(status))) is not None
        }
        if dig(node, "spec", "unschedulable"):
            no_schedule.add(UNSCHEDULABLE)
        ready = statuses.get("Ready")
        # No Ready condition: upstream's NoExecute pass retries later and changes nothing.
        no_execute = None if ready is None else _NO_EXECUTE.get(str(ready), "")
        taints = [t for t in dig(node, "spec", "taints") or [] if isinstance(t, dict)]
        keep: list[JsonDict] = []
        for taint in taints:
            key, effect = taint.get("key"), taint.get("effect")
            if effect == "NoSchedule" and key in _NO_SCHEDULE_KEYS and key not in no_schedule:
                continue
            if effect == "NoExecute" and key in _NO_EXECUTE.values() and no_execute is not None and key != no_execute:
                continue
            keep.append(taint)
        present = {(t.get("key"), t.get("effect")) for t in keep}
        now = rfc3339()
        added = [
            {"key": key, "effect": "NoSchedule", "timeAdded": now}
            for key in sorted(no_schedule)
            if (key, "NoSchedule") not in present
        ]
        if no_execute and (no_execute, "NoExecute") not in present:
            added.append({"key": no_execute, "effect": "NoExecute", "timeAdded": now})
        if not added and len(keep) == len(taints):
            return
        new_taints = keep + added

        def swap(obj: JsonDict) -> bool:
            spec = obj.setdefault("spec", {})
            if new_taints:
                spec["taints"] = new_taints
            else:
                spec.pop("taints", None)
            return True

        self.registry.mutate("nodes", "", name, swap)
