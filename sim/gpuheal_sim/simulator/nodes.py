"""Node truth, reboots, the kubelet's node status, fake-GPU faults, and NoExecute taint eviction.

``NodeLifecycle`` keeps the simulator-side truth of every node (boot id, reboot counters, GPUs)
and plays the node's own writers, each writing only what it owns, as on a real node:

* the **kubelet** posts Ready, MemoryPressure, DiskPressure and PIDPressure (``lastHeartbeatTime``
  on every post) and ``status.nodeInfo.bootID``. A reboot request stops it (after
  ``reboot_down_seconds``): it posts nothing until the node is back, ``reboot_seconds`` later, and
  the pods' containers die without a word to the API. Its first status after boot carries the new
  bootID with Ready=False (``KubeletNotReady``), then Ready=True ``kubelet_ready_seconds`` later
  (``pkg/kubelet/nodestatus/setters.go``, ``ReadyCondition``); it records ``Rebooted``. The
  conditions turn Unknown, and the unreachable taints come, only from the node lifecycle
  controller (``nodelifecycle``) once the grace passes without the kubelet posting: a reboot
  shorter than the grace never shows NotReady. A request while a reboot is in progress is counted
  but starts no second cycle; a repeated ``requestId`` is not counted again.
* a **terminated** machine stops as a rebooting one does and never comes back: the cloud's node
  controller deletes its Node ``terminate_seconds`` later, and its pods go with it. A reboot
  request after that is counted and does nothing.
* the **GPU agent** (``gpuagent``) writes ``GpuHealthy`` and the allocatable GPUs: an injected fault
  sets it False; after a reboot it reports only once it has started again, so the condition from
  before the reboot lingers until then. The reboot clears the GPU faults a reboot fixes.
* pods that do not tolerate a NoExecute taint are evicted (after their ``tolerationSeconds``), as
  the taint eviction controller does.
* nodes created through the API get a kubelet too: they turn Ready with a boot id and GPUs from
  their ``nvidia.com/gpu`` capacity.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gpuheal.domain.gpu_check import GPU_CHECK

from .clock import Timers
from .conditions import find_condition, post_condition
from .events import EventRecorder
from .gpuagent import SimulatedGpuAgent, gpu_condition
from .gpus import GPU_RESOURCE, NodeGpus
from .identity import new_uid
from .jsonvalues import JsonDict, dig
from .kubelet import Kubelet
from .nodelifecycle import NodeLifecycleController
from .objects import is_terminal, is_terminating, node_object, toleration_seconds
from .registry import Registry
from .store import ADDED, DELETED, Change, Entry
from .timestamps import parse_rfc3339, rfc3339, rfc3339_micro, utcnow

log = logging.getLogger(__name__)

# What the kubelet's Ready condition says before its runtime and PLEG checks have run once.
KUBELET_NOT_READY = "container runtime status check may not have completed yet"
_KUBELET_CONDITIONS = {
    "MemoryPressure": ("False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    "DiskPressure": ("False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    "PIDPressure": ("False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    "Ready": ("True", "KubeletReady", "kubelet is posting ready status"),
}


class UnknownNode(LookupError):
    pass


@dataclass
class MachineTruth:
    """The simulator's truth about one node."""

    name: str
    gpus: NodeGpus
    boot_id: str = field(default_factory=new_uid)
    rebooting: bool = False
    reboot_requests: int = 0
    reboots_completed: int = 0
    last_reboot_request_at: str | None = None
    # When the machine was terminated (it never comes back; its Node is deleted soon after).
    terminated_at: str | None = None
    request_ids: dict[str, str] = field(default_factory=dict)
    # Files a real agent reads the boot id from (its /proc/sys/kernel/random/boot_id).
    boot_id_files: list[Path] = field(default_factory=list)

    def as_json(self, ready: bool) -> JsonDict:
        return {
            "name": self.name,
            "bootId": self.boot_id,
            "ready": ready,
            "rebooting": self.rebooting,
            "rebootRequests": self.reboot_requests,
            "rebootsCompleted": self.reboots_completed,
            "lastRebootRequestAt": self.last_reboot_request_at,
            "terminatedAt": self.terminated_at,
            "gpus": [g.as_json() for g in self.gpus.gpus],
        }


class NodeLifecycle:
    def __init__(
        self,
        registry: Registry,
        timers: Timers,
        kubelet: Kubelet,
        recorder: EventRecorder,
        controller: NodeLifecycleController,
        *,
        reboot_seconds: float,
        reboot_down_seconds: float = 0.0,
        terminate_seconds: float = 0.0,
        kubelet_ready_seconds: float = 0.0,
        gpu_agent_start_seconds: float = 0.0,
        fault_survives_reboot: bool = False,
        kubelet_version: str = "v1.33.0",
        gpu_product: str = "NVIDIA-H100-80GB-HBM3",
    ) -> None:
        self.registry = registry
        self.store = registry.store
        self.timers = timers
        self.kubelet = kubelet
        self.recorder = recorder
        self.controller = controller
        self.reboot_seconds = reboot_seconds
        self.reboot_down_seconds = reboot_down_seconds
        self.terminate_seconds = terminate_seconds
        self.kubelet_ready_seconds = kubelet_ready_seconds
        self.fault_survives_reboot = fault_survives_reboot
        self.kubelet_version = kubelet_version
        self.gpu_product = gpu_product
        self.nodes: dict[str, MachineTruth] = {}
        self.gpu_agent = SimulatedGpuAgent(registry, timers, self._gpu_truth, start_seconds=gpu_agent_start_seconds)
        # When each pod's NoExecute eviction is due (loop time), so a later taint never postpones it.
        self._evict_at: dict[str, float] = {}
        self.store.add_listener(self._on_change)

    # --- registry of node truth --------------------------------------------------------------------

    def register(self, name: str, gpus: int) -> MachineTruth:
        state = MachineTruth(name, NodeGpus.create(name, gpus))
        self.nodes[name] = state
        return state

    def state(self, name: str) -> MachineTruth:
        state = self.nodes.get(name)
        if state is None or self.store.get("nodes", "", name) is None:
            raise UnknownNode(name)
        return state

    def _gpu_truth(self, name: str) -> tuple[NodeGpus, str] | None:
        state = self.nodes.get(name)
        return None if state is None else (state.gpus, state.boot_id)

    def gpu_condition(self, name: str) -> tuple[str, str, str]:
        """GpuHealthy as the node's agent first reports it (for building the fleet)."""
        state = self.nodes[name]
        return gpu_condition(state.gpus, state.boot_id)

    def attach_agent(self, name: str, boot_id_file: Path) -> None:
        """A real gpuheal agent runs for this node: it reads the node's boot id from ``boot_id_file``,
        which is kept current across reboots, and the simulated GPU agent leaves GpuHealthy to it."""
        state = self.state(name)
        state.boot_id_files.append(boot_id_file)
        _write_boot_id(boot_id_file, state.boot_id)
        self.gpu_agent.hand_over(name)

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
                for key in (("reboot-down", name), ("reboot-up", name), ("kubelet-ready", name), ("terminate", name)):
                    self.timers.cancel(key)
                self.kubelet.down.discard(name)
                self.gpu_agent.forget(name)
                return
            old_taints = dig(change.old.obj, "spec", "taints") if change.old else None
            if old_taints != dig(change.new.obj, "spec", "taints"):
                self.timers.soon(("taints", name), lambda: self.sweep_taints(name))
            old_order = dig(change.old.obj, "metadata", "annotations", GPU_CHECK.annotation) if change.old else None
            if old_order != dig(change.new.obj, "metadata", "annotations", GPU_CHECK.annotation):
                self.gpu_agent.check_ordered(name)
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
            gpu_condition=gpu_condition(state.gpus, state.boot_id),
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
        self._post_status(name, ready=True, boot_id=state.boot_id)
        self.gpu_agent.report(name)
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
        if state.rebooting or state.terminated_at is not None:
            receipt["alreadyRebooting"] = True
            return receipt
        state.rebooting = True
        if self.reboot_down_seconds > 0:
            self.timers.later(("reboot-down", name), self.reboot_down_seconds, lambda: self._go_down(name))
        else:
            self._go_down(name)
        return receipt

    def _go_down(self, name: str) -> None:
        """The machine goes down: its kubelet and agent stop posting, its containers die unseen."""
        if name not in self.nodes:
            return
        self._stop(name)
        self.timers.later(("reboot-up", name), self.reboot_seconds, lambda: self._come_up(name))

    def _stop(self, name: str) -> None:
        self.timers.cancel(("kubelet-ready", name))
        self.kubelet.node_down(name)
        self.gpu_agent.node_down(name)
        self.controller.kubelet_stopped(name)

    def terminate(self, name: str) -> JsonDict:
        """Terminate the machine, as a cloud does: it stops at once and never comes back, and the
        cloud's node controller deletes its Node `terminate_seconds` later. Terminating it again
        answers with the first termination."""
        state = self.state(name)
        if state.terminated_at is not None:
            return {"node": name, "terminatedAt": state.terminated_at, "alreadyTerminated": True}
        state.terminated_at = rfc3339_micro()
        state.rebooting = False
        for key in (("reboot-down", name), ("reboot-up", name)):
            self.timers.cancel(key)
        self._stop(name)
        self.timers.later(("terminate", name), self.terminate_seconds, lambda: self._delete_terminated(name))
        return {"node": name, "terminatedAt": state.terminated_at}

    def _delete_terminated(self, name: str) -> None:
        """The cloud's node controller deletes the Node of a machine that no longer exists, and the
        pod garbage collector the pods bound to it (pkg/controller/podgc, at once here rather than
        after its 40 s quarantine)."""
        if self.store.get("nodes", "", name) is None:
            return
        bound = [
            (entry.namespace, entry.name)
            for entry in self.store.objects("pods")
            if dig(entry.obj, "spec", "nodeName") == name
        ]
        self.store.delete("nodes", "", name)
        for namespace, pod in bound:
            if self.store.get("pods", namespace, pod) is not None:
                self.store.delete("pods", namespace, pod)

    def _come_up(self, name: str) -> None:
        """The machine booted: the kubelet posts the new boot id, NotReady until its checks pass."""
        state = self.nodes.get(name)
        if state is None:
            return
        state.boot_id = new_uid()
        state.gpus.clear(reboot=True, keep_all_on_reboot=self.fault_survives_reboot)
        state.rebooting = False
        state.reboots_completed += 1
        for path in state.boot_id_files:
            _write_boot_id(path, state.boot_id)
        entry = self._post_status(name, ready=False, boot_id=state.boot_id)
        if entry is not None:
            self.recorder.record(
                entry.obj,
                "Warning",
                "Rebooted",
                f"Node {name} has been rebooted, boot id: {state.boot_id}",
                "kubelet",
                name,
            )
        self.kubelet.node_up(name)
        self.gpu_agent.node_up(name)
        self.timers.later(("kubelet-ready", name), self.kubelet_ready_seconds, lambda: self._kubelet_ready(name))

    def _kubelet_ready(self, name: str) -> None:
        if name not in self.nodes or name in self.kubelet.down:
            return
        self._post_status(name, ready=True)

    # --- faults ------------------------------------------------------------------------------------

    def inject_fault(
        self, name: str, xid: int, gpu: int | str, message: str | None = None, survives_reboot: bool = False
    ) -> JsonDict:
        state = self.state(name)
        target = state.gpus.inject(xid, gpu, message, survives_reboot)
        self.gpu_agent.report(name)
        return {"node": name, "xid": xid, "gpu": target.as_json(), "gpuHealthy": state.gpus.healthy}

    def clear_faults(self, name: str) -> None:
        state = self.state(name)
        state.gpus.clear(reboot=False)
        self.gpu_agent.report(name)

    # --- the kubelet's node status ------------------------------------------------------------------

    def _post_status(self, name: str, *, ready: bool, boot_id: str | None = None) -> Entry | None:
        """One status post of the node's kubelet: its conditions (heartbeat now) and its boot id."""
        if name not in self.nodes:
            return None
        entry = self.store.get("nodes", "", name)
        if entry is None:
            return None
        before = (find_condition(dig(entry.obj, "status", "conditions"), "Ready") or {}).get("status")
        now = rfc3339()

        def post(obj: JsonDict) -> bool:
            status = obj.setdefault("status", {})
            conditions = status.setdefault("conditions", [])
            for ctype, (cstatus, reason, message) in _KUBELET_CONDITIONS.items():
                if ctype == "Ready" and not ready:
                    cstatus, reason, message = "False", "KubeletNotReady", KUBELET_NOT_READY
                post_condition(conditions, ctype, cstatus, reason, message, now)
            if boot_id is not None:
                status.setdefault("nodeInfo", {})["bootID"] = boot_id
            return True

        updated = self.registry.mutate("nodes", "", name, post)
        self.controller.kubelet_posted(name)
        after = "True" if ready else "False"
        if updated is not None and before is not None and before != after:
            reason = "NodeReady" if ready else "NodeNotReady"
            self.recorder.record(updated.obj, "Normal", reason, f"Node {name} status is now: {reason}", "kubelet", name)
        return updated

    # --- NoExecute taint eviction ------------------------------------------------------------------

    def sweep_taints(self, name: str) -> None:
        """Evict the node's pods that do not tolerate its NoExecute taints (now or after tolerationSeconds).

        A toleration's seconds count from the taint's ``timeAdded`` (upstream's taint eviction
        controller counts from when it first saw the taint, never earlier), and an eviction once
        scheduled is never postponed by a later taint (``processPodOnNode`` keeps the earlier one).
        """
        node = self.store.get("nodes", "", name)
        taints = [t for t in dig(node.obj, "spec", "taints") or [] if t.get("effect") == "NoExecute"] if node else []
        loop_now = self.timers.now()
        for entry in self.store.pods_on_node(name):
            pod = entry.obj
            key = ("taint-evict", entry.uid)
            delay: float | None = None
            if not (is_terminal(pod) or is_terminating(pod)):
                delay = _eviction_delay(dig(pod, "spec", "tolerations") or [], taints)
            if delay is None:
                self.timers.cancel(key)
                self._evict_at.pop(entry.uid, None)
                continue
            due = loop_now + delay
            scheduled = self._evict_at.get(entry.uid)
            if scheduled is not None and scheduled <= due and self.timers.pending(key):
                continue
            self._evict_at[entry.uid] = due
            self.timers.later(key, delay, self._evictor(name, entry))

    def _evictor(self, node: str, entry: Entry) -> Callable[[], None]:
        ns, name, uid = entry.namespace, entry.name, entry.uid
        return lambda: self._taint_evict(node, ns, name, uid)

    def _taint_evict(self, node: str, namespace: str, name: str, uid: str) -> None:
        self._evict_at.pop(uid, None)
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


def _eviction_delay(tolerations: list[JsonDict], taints: list[JsonDict]) -> float | None:
    """Seconds until the pod must go for these NoExecute taints; None when it may stay."""
    delay: float | None = None
    for taint in taints:
        seconds = toleration_seconds(tolerations, taint)
        if seconds is None:
            continue
        if seconds < 0:
            return 0.0
        added = taint.get("timeAdded")
        elapsed = (utcnow() - parse_rfc3339(added)).total_seconds() if added else 0.0
        remaining = max(0.0, seconds - elapsed)
        delay = remaining if delay is None else min(delay, remaining)
    return delay


def _write_boot_id(path: Path, boot_id: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{boot_id}\n", "ascii")
    except OSError:
        log.warning("could not write the boot id of a simulated node to %s", path, exc_info=True)
