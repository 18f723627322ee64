"""Node lifecycle: reboots, readiness, fake-GPU health on the node, and NoExecute taint eviction.

``NodeLifecycle`` keeps the simulator-side truth of every node (boot id, reboot counters, GPUs)
and writes what a kubelet and the node lifecycle controller would write to the Node object:

* a reboot request makes the node NotReady (Ready=Unknown, ``NodeStatusUnknown``, "Kubelet stopped
  posting node status.", the other kubelet conditions Unknown too, and the
  ``node.kubernetes.io/unreachable`` NoSchedule/NoExecute taints), its pods' containers die; after
  ``reboot_seconds`` the node is Ready again with a new ``status.nodeInfo.bootID``, the taints are
  gone, the pods restart and the GPU faults a reboot fixes are cleared. A request while a reboot is
  in progress is counted but starts no second cycle; a repeated ``requestId`` is not counted again.
* injecting a GPU fault sets the ``GpuHealthy`` condition False and lowers allocatable GPUs.
* pods that do not tolerate a NoExecute taint are evicted (after their ``tolerationSeconds``), as
  the taint eviction controller does.
* nodes created through the API get a kubelet too: they turn Ready with a boot id and GPUs from
  their ``nvidia.com/gpu`` capacity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .clock import Timers
from .conditions import find_condition, set_condition
from .events import EventRecorder
from .gpus import CONDITION_TYPE, GPU_RESOURCE, NodeGpus
from .identity import new_uid
from .jsonvalues import JsonDict, dig
from .kubelet import Kubelet
from .objects import is_terminal, is_terminating, node_object, toleration_seconds
from .registry import Registry
from .store import ADDED, DELETED, Change, Entry
from .timestamps import parse_rfc3339, rfc3339, rfc3339_micro, utcnow

UNREACHABLE = "node.kubernetes.io/unreachable"
_KUBELET_CONDITIONS = {
    "MemoryPressure": ("False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    "DiskPressure": ("False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    "PIDPressure": ("False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    "Ready": ("True", "KubeletReady", "kubelet is posting ready status"),
}


class UnknownNode(LookupError):
    pass


@dataclass
class NodeState:
    """The simulator's truth about one node."""

    name: str
    gpus: NodeGpus
    boot_id: str = field(default_factory=new_uid)
    rebooting: bool = False
    reboot_requests: int = 0
    reboots_completed: int = 0
    last_reboot_request_at: str | None = None
    request_ids: dict[str, str] = field(default_factory=dict)

    def as_json(self, ready: bool) -> JsonDict:
        return {
            "name": self.name,
            "bootId": self.boot_id,
            "ready": ready,
            "rebooting": self.rebooting,
            "rebootRequests": self.reboot_requests,
            "rebootsCompleted": self.reboots_completed,
            "lastRebootRequestAt": self.last_reboot_request_at,
            "gpus": [g.as_json() for g in self.gpus.gpus],
        }


class NodeLifecycle:
    def __init__(
        self,
        registry: Registry,
        timers: Timers,
        kubelet: Kubelet,
        recorder: EventRecorder,
        *,
        reboot_seconds: float,
        reboot_down_seconds: float = 0.0,
        fault_survives_reboot: bool = False,
        lifecycle_taints: bool = True,
        kubelet_version: str = "v1.33.0",
        gpu_product: str = "NVIDIA-H100-80GB-HBM3",
    ) -> None:
        self.registry = registry
        self.store = registry.store
        self.timers = timers
        self.kubelet = kubelet
        self.recorder = recorder
        self.reboot_seconds = reboot_seconds
        self.reboot_down_seconds = reboot_down_seconds
        self.fault_survives_reboot = fault_survives_reboot
        self.lifecycle_taints = lifecycle_taints
        self.kubelet_version = kubelet_version
        self.gpu_product = gpu_product
        self.nodes: dict[str, NodeState] = {}
        self.store.add_listener(self._on_change)

    # --- registry of node truth --------------------------------------------------------------------

    def register(self, name: str, gpus: int) -> NodeState:
        state = NodeState(name, NodeGpus.create(name, gpus))
        self.nodes[name] = state
        return state

    def state(self, name: str) -> NodeState:
        state = self.nodes.get(name)
        if state is None or self.store.get("nodes", "", name) is None:
            raise UnknownNode(name)
        return state

    def truth(self, name: str) -> JsonDict:
        state = self.state(name)
        node = self.store.get("nodes", "", name)
        ready = (
            node is not None
            and (find_condition(dig(node.obj, "status", "conditions"), "Ready") or {}).get("status") == "True"
        )
        return state.as_json(ready)

    def _on_change(self, change: Change) -> None:
        if change.key == "nodes":
            name = change.new.name
            if change.type == ADDED and name not in self.nodes:
                self.timers.soon(("adopt", name), lambda: self._adopt(name))
            elif change.type == DELETED:
                self.nodes.pop(name, None)
                for key in (("reboot-down", name), ("reboot-up", name)):
                    self.timers.cancel(key)
                self.kubelet.down.discard(name)
                return
            old_taints = dig(change.old.obj, "spec", "taints") if change.old else None
            if old_taints != dig(change.new.obj, "spec", "taints"):
                self.timers.soon(("taints", name), lambda: self.sweep_taints(name))
        elif change.key == "pods" and change.type == ADDED:
            node = dig(change.new.obj, "spec", "nodeName")
            if node and change.old is None:
                node_entry = self.store.get("nodes", "", str(node))
                if node_entry is not None and any(
                    t.get("effect") == "NoExecute" for t in dig(node_entry.obj, "spec", "taints") or []
                ):
                    self.timers.soon(("taints", str(node)), lambda: self.sweep_taints(str(node)))

    def _adopt(self, name: str) -> None:
        """A node created through the API: give it a kubelet (Ready, boot id, GPUs)."""
        entry = self.store.get("nodes", "", name)
        if entry is None or name in self.nodes:
            return
        capacity = (dig(entry.obj, "status", "capacity") or {}).get(GPU_RESOURCE, 0)
        try:
            gpus = int(str(capacity))
        except ValueError:
            gpus = 0
        state = self.register(name, gpus)
        template = node_object(
            name,
            len(self.nodes) + 1000,
            gpus=gpus,
            healthy_gpus=gpus,
            labels={},
            provider_id="",
            gpu_product=self.gpu_product,
            kubelet_version=self.kubelet_version,
            boot_id=state.boot_id,
            gpu_condition=state.gpus.condition(),
            now=rfc3339(),
        )

        def register(obj: JsonDict) -> bool:
            # What a kubelet fills in when it registers a node someone else created.
            labels = obj["metadata"].setdefault("labels", {})
            for key, value in template["metadata"]["labels"].items():
                labels.setdefault(key, value)
            status = obj.setdefault("status", {})
            for key in ("capacity", "allocatable"):
                for resource, value in template["status"][key].items():
                    status.setdefault(key, {}).setdefault(resource, value)
            info = status.setdefault("nodeInfo", {})
            for key, value in template["status"]["nodeInfo"].items():
                info.setdefault(key, value)
            status.setdefault("addresses", template["status"]["addresses"])
            status.setdefault("daemonEndpoints", template["status"]["daemonEndpoints"])
            spec = obj.setdefault("spec", {})
            for key in ("podCIDR", "podCIDRs"):
                spec.setdefault(key, template["spec"][key])
            return True

        self.registry.mutate("nodes", "", name, register)
        self._write_node(name, ready=True, boot_id=state.boot_id)
        self.kubelet.ensure_static_pods(name)

    # --- reboots -----------------------------------------------------------------------------------

    def request_reboot(self, name: str, request_id: str | None = None) -> JsonDict:
        """Record a reboot request and start a reboot cycle unless one is running."""
        state = self.state(name)
        if request_id and request_id in state.request_ids:
            return {
                "node": name,
                "requestedAt": state.request_ids[request_id],
                "rebootRequests": state.reboot_requests,
                "requestId": request_id,
                "duplicate": True,
            }
        now = rfc3339_micro()
        state.reboot_requests += 1
        state.last_reboot_request_at = now
        if request_id:
            state.request_ids[request_id] = now
        receipt: JsonDict = {"node": name, "requestedAt": now, "rebootRequests": state.reboot_requests}
        if request_id:
            receipt["requestId"] = request_id
        if state.rebooting:
            receipt["alreadyRebooting"] = True
            return receipt
        state.rebooting = True
        if self.reboot_down_seconds > 0:
            self.timers.later(("reboot-down", name), self.reboot_down_seconds, lambda: self._go_down(name))
        else:
            self._go_down(name)
        return receipt

    def _go_down(self, name: str) -> None:
        if name not in self.nodes:
            return
        self.kubelet.node_down(name)
        entry = self._write_node(name, ready=False)
        if entry is not None:
            self.recorder.record(
                entry.obj, "Normal", "NodeNotReady", f"Node {name} status is now: NodeNotReady", "node-controller"
            )
        self.timers.later(("reboot-up", name), self.reboot_seconds, lambda: self._come_up(name))

    def _come_up(self, name: str) -> None:
        state = self.nodes.get(name)
        if state is None:
            return
        state.boot_id = new_uid()
        state.gpus.clear(reboot=True, keep_all_on_reboot=self.fault_survives_reboot)
        state.rebooting = False
        state.reboots_completed += 1
        entry = self._write_node(name, ready=True, boot_id=state.boot_id)
        self.kubelet.node_up(name)
        if entry is not None:
            self.recorder.record(
                entry.obj,
                "Warning",
                "Rebooted",
                f"Node {name} has been rebooted, boot id: {state.boot_id}",
                "kubelet",
                name,
            )
            self.recorder.record(
                entry.obj, "Normal", "NodeReady", f"Node {name} status is now: NodeReady", "kubelet", name
            )

    # --- faults ------------------------------------------------------------------------------------

    def inject_fault(
        self, name: str, xid: int, gpu: int | str, message: str | None = None, survives_reboot: bool = False
    ) -> JsonDict:
        state = self.state(name)
        target = state.gpus.inject(xid, gpu, message, survives_reboot)
        self._write_node(name)
        return {"node": name, "xid": xid, "gpu": target.as_json(), "gpuHealthy": state.gpus.healthy}

    def clear_faults(self, name: str) -> None:
        state = self.state(name)
        state.gpus.clear(reboot=False)
        self._write_node(name)

    # --- the Node object ---------------------------------------------------------------------------

    def _write_node(self, name: str, ready: bool | None = None, boot_id: str | None = None) -> Any:
        """Write the node's status (and unreachable taints) from the simulator's truth."""
        state = self.nodes.get(name)
        if state is None:
            return None
        now = rfc3339()

        def update(obj: JsonDict) -> bool:
            status = obj.setdefault("status", {})
            conditions = status.setdefault("conditions", [])
            if ready is not None:
                for ctype, (cstatus, reason, message) in _KUBELET_CONDITIONS.items():
                    if ready:
                        set_condition(conditions, ctype, cstatus, reason, message, now, heartbeat=True)
                    else:
                        set_condition(
                            conditions,
                            ctype,
                            "Unknown",
                            "NodeStatusUnknown",
                            "Kubelet stopped posting node status.",
                            now,
                            heartbeat=True,
                        )
                self._set_unreachable_taints(obj, not ready, now)
            if boot_id is not None:
                status.setdefault("nodeInfo", {})["bootID"] = boot_id
            gstatus, greason, gmessage = state.gpus.condition()
            set_condition(conditions, CONDITION_TYPE, gstatus, greason, gmessage, now, heartbeat=True)
            if state.gpus.gpus:
                status.setdefault("capacity", {})[GPU_RESOURCE] = str(len(state.gpus.gpus))
                status.setdefault("allocatable", {})[GPU_RESOURCE] = str(state.gpus.healthy_count)
            return True

        return self.registry.mutate("nodes", "", name, update)

    def _set_unreachable_taints(self, node: JsonDict, present: bool, now: str) -> None:
        if not self.lifecycle_taints:
            return
        spec = node.setdefault("spec", {})
        taints = [t for t in spec.get("taints") or [] if t.get("key") != UNREACHABLE]
        if present:
            taints.append({"key": UNREACHABLE, "effect": "NoSchedule", "timeAdded": now})
            taints.append({"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": now})
        if taints:
            spec["taints"] = taints
        else:
            spec.pop("taints", None)

    # --- NoExecute taint eviction ------------------------------------------------------------------

    def sweep_taints(self, name: str) -> None:
        """Evict the node's pods that do not tolerate its NoExecute taints (now or after tolerationSeconds)."""
        node = self.store.get("nodes", "", name)
        taints = [t for t in dig(node.obj, "spec", "taints") or [] if t.get("effect") == "NoExecute"] if node else []
        for entry in self.store.pods_on_node(name):
            pod = entry.obj
            key = ("taint-evict", entry.uid)
            if is_terminal(pod) or is_terminating(pod) or not taints:
                self.timers.cancel(key)
                continue
            delay: float | None = None
            tolerations = dig(pod, "spec", "tolerations") or []
            for taint in taints:
                seconds = toleration_seconds(tolerations, taint)
                if seconds is None:
                    continue
                if seconds < 0:
                    delay = 0.0
                    break
                added = taint.get("timeAdded")
                elapsed = (utcnow() - parse_rfc3339(added)).total_seconds() if added else 0.0
                remaining = max(0.0, seconds - elapsed)
                delay = remaining if delay is None else min(delay, remaining)
            if delay is None:
                self.timers.cancel(key)
            else:
                self.timers.later(key, delay, self._evictor(name, entry))

    def _evictor(self, node: str, entry: Entry) -> Callable[[], None]:
        ns, name, uid = entry.namespace, entry.name, entry.uid
        return lambda: self._taint_evict(node, ns, name, uid)

    def _taint_evict(self, node: str, namespace: str, name: str, uid: str) -> None:
        entry = self.store.get("pods", namespace, name)
        if entry is None or entry.uid != uid or is_terminating(entry.obj):
            return
        node_entry = self.store.get("nodes", "", node)
        taints = (
            [t for t in dig(node_entry.obj, "spec", "taints") or [] if t.get("effect") == "NoExecute"]
            if node_entry
            else []
        )
        tolerations = dig(entry.obj, "spec", "tolerations") or []
        if any(toleration_seconds(tolerations, t) is not None for t in taints):
            self.registry.delete_pod(entry, None)
