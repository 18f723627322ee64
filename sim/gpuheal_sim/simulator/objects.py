"""Builders for object shapes: nodes, pods from templates, and the pod status a kubelet reports.

Everything here produces or edits plain dicts shaped like the real API objects (field names,
condition types, reasons and their order), so clients see what a real cluster would send.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

from .conditions import find_condition, set_condition
from .gpus import GPU_RESOURCE
from .jsonvalues import JsonDict, clone, dig

CONTAINER_RUNTIME = "containerd://1.7.27"
OS_IMAGE = "Ubuntu 22.04.5 LTS"
KERNEL = "5.15.0-139-generic"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"

# Tolerations the DefaultTolerationSeconds admission plugin adds to every pod.
DEFAULT_TOLERATIONS: list[JsonDict] = [
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
]

# Tolerations the DaemonSet controller adds to its pods.
DAEMONSET_TOLERATIONS: list[JsonDict] = [
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
]


def node_object(
    name: str,
    index: int,
    *,
    gpus: int,
    healthy_gpus: int,
    labels: dict[str, str],
    provider_id: str,
    gpu_product: str,
    kubelet_version: str,
    boot_id: str,
    gpu_condition: tuple[str, str, str],
    now: str,
) -> JsonDict:
    """A Ready node as a kubelet registers it, with GPU capacity from the device plugin."""
    third, fourth = divmod(index, 250)
    all_labels = {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": f"sim.gpu.{gpus}x",
    }
    if gpus:
        all_labels["nvidia.com/gpu.count"] = str(gpus)
        all_labels["nvidia.com/gpu.product"] = gpu_product
    all_labels.update(labels)
    capacity = {
        "cpu": "128",
        "ephemeral-storage": "1966788624Ki",
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
        "memory": "2113451232Ki",
        "pods": "110",
    }
    allocatable = dict(capacity, cpu="127500m", memory="2112299232Ki")
    if gpus:
        capacity[GPU_RESOURCE] = str(gpus)
        allocatable[GPU_RESOURCE] = str(healthy_gpus)
    cidr = f"10.{64 + third}.{fourth}.0/24"
    machine = hashlib.md5(name.encode()).hexdigest()  # noqa: S324 - an identifier, not security
    status, reason, message = gpu_condition
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "labels": all_labels,
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr], "providerID": provider_id},
        "status": {
            "capacity": capacity,
            "allocatable": allocatable,
            "conditions": [
                _node_cond(
                    "MemoryPressure",
                    "False",
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                    now,
                ),
                _node_cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure", now),
                _node_cond(
                    "PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available", now
                ),
                _node_cond("Ready", "True", "KubeletReady", "kubelet is posting ready status", now),
                _node_cond("GpuHealthy", status, reason, message, now),
            ],
            "addresses": [
                {"type": "InternalIP", "address": f"10.0.{third}.{fourth + 2}"},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": machine,
                "systemUUID": f"{machine[:8]}-{machine[8:12]}-{machine[12:16]}-{machine[16:20]}-{machine[20:]}",
                "bootID": boot_id,
                "kernelVersion": KERNEL,
                "osImage": OS_IMAGE,
                "containerRuntimeVersion": CONTAINER_RUNTIME,
                "kubeletVersion": kubelet_version,
                "kubeProxyVersion": kubelet_version,
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    }


def _node_cond(ctype: str, status: str, reason: str, message: str, now: str) -> JsonDict:
    return {
        "type": ctype,
        "status": status,
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
        "reason": reason,
        "message": message,
    }


def node_internal_ip(node: JsonDict) -> str:
    for addr in dig(node, "status", "addresses") or []:
        if addr.get("type") == "InternalIP":
            return str(addr.get("address"))
    return ""


def node_is_ready(node: JsonDict) -> bool:
    cond = find_condition(dig(node, "status", "conditions"), "Ready")
    return cond is not None and cond.get("status") == "True"


def owner_ref(owner: JsonDict, *, controller: bool = True) -> JsonDict:
    """An ownerReference to ``owner`` as controllers set it."""
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }


# --- pods ------------------------------------------------------------------------------------------


def apply_pod_defaults(pod: JsonDict) -> None:
    """The defaults and admission-added fields a real API server fills in on pod creation."""
    spec = pod.setdefault("spec", {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec.setdefault("priority", 0)
    tolerations = spec.setdefault("tolerations", [])
    for default in DEFAULT_TOLERATIONS:
        if not any(t.get("key") == default["key"] and t.get("effect") == default["effect"] for t in tolerations):
            tolerations.append(dict(default))
    for container in spec.get("containers") or []:
        container.setdefault("imagePullPolicy", "IfNotPresent")
        container.setdefault("resources", {})
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        resources = container["resources"]
        # Extended resources: requests default to limits.
        for res, value in (resources.get("limits") or {}).items():
            resources.setdefault("requests", {}).setdefault(res, value)


def qos_class(pod: JsonDict) -> str:
    any_resources = any(
        (c.get("resources") or {}).get("requests") or (c.get("resources") or {}).get("limits")
        for c in dig(pod, "spec", "containers") or []
    )
    return "Burstable" if any_resources else "BestEffort"


def pod_from_template(
    template: JsonDict,
    *,
    name: str,
    namespace: str,
    owner: JsonDict | None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> JsonDict:
    """A new pod as a controller creates it from its ``spec.template``."""
    tmeta = template.get("metadata") or {}
    pod_labels = dict(tmeta.get("labels") or {})
    pod_labels.update(labels or {})
    pod_annotations = dict(tmeta.get("annotations") or {})
    pod_annotations.update(annotations or {})
    md: JsonDict = {"name": name, "namespace": namespace}
    if pod_labels:
        md["labels"] = pod_labels
    if pod_annotations:
        md["annotations"] = pod_annotations
    if owner is not None:
        md["ownerReferences"] = [owner_ref(owner)]
    pod: JsonDict = {"kind": "Pod", "apiVersion": "v1", "metadata": md, "spec": clone(template.get("spec") or {})}
    apply_pod_defaults(pod)
    pod["status"] = {"phase": "Pending", "qosClass": qos_class(pod)}
    return pod


def gpu_request(pod: JsonDict) -> int:
    total = 0
    for container in dig(pod, "spec", "containers") or []:
        resources = container.get("resources") or {}
        value = (resources.get("limits") or {}).get(GPU_RESOURCE) or (resources.get("requests") or {}).get(GPU_RESOURCE)
        if value is not None:
            with contextlib.suppress(ValueError):
                total += int(str(value))
    return total


def is_terminal(pod: JsonDict) -> bool:
    return dig(pod, "status", "phase") in ("Succeeded", "Failed")


def is_terminating(obj: JsonDict) -> bool:
    return bool(dig(obj, "metadata", "deletionTimestamp"))


def is_ready(pod: JsonDict) -> bool:
    cond = find_condition(dig(pod, "status", "conditions"), "Ready")
    return cond is not None and cond.get("status") == "True"


def is_mirror(pod: JsonDict) -> bool:
    return MIRROR_ANNOTATION in (dig(pod, "metadata", "annotations") or {})


def is_healthy_for_pdb(pod: JsonDict) -> bool:
    """Counted as healthy by the disruption controller: Running, Ready and not being deleted."""
    return dig(pod, "status", "phase") == "Running" and is_ready(pod) and not is_terminating(pod)


def tolerates(tolerations: list[Any], taint: JsonDict) -> bool:
    """Whether any toleration matches ``taint`` (key, operator, value and effect)."""
    for tol in tolerations or []:
        if not isinstance(tol, dict):
            continue
        effect = tol.get("effect")
        if effect and effect != taint.get("effect"):
            continue
        key = tol.get("key")
        op = tol.get("operator") or "Equal"
        if not key:
            if op == "Exists":
                return True
            continue
        if key != taint.get("key"):
            continue
        if op == "Exists" or (tol.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def toleration_seconds(tolerations: list[Any], taint: JsonDict) -> float | None:
    """For a tolerated NoExecute taint: how long the pod may stay (``None`` = forever)."""
    best: float | None = -1.0
    for tol in tolerations or []:
        if tolerates([tol], taint):
            seconds = tol.get("tolerationSeconds")
            if seconds is None:
                return None
            best = max(best or 0.0, float(seconds))
    return best


def _pod_conditions(pod: JsonDict) -> list[JsonDict]:
    status = pod.setdefault("status", {})
    conds = status.get("conditions")
    if not isinstance(conds, list):
        conds = []
        status["conditions"] = conds
    return conds


_COND_ORDER = ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")


def _sort_conditions(pod: JsonDict) -> None:
    conds = _pod_conditions(pod)
    conds.sort(key=lambda c: _COND_ORDER.index(c["type"]) if c.get("type") in _COND_ORDER else len(_COND_ORDER))


def set_scheduled(pod: JsonDict, node: str, now: str) -> None:
    """What a binding does: set ``spec.nodeName`` and PodScheduled=True."""
    pod.setdefault("spec", {})["nodeName"] = node
    set_condition(_pod_conditions(pod), "PodScheduled", "True", "", "", now, probe=True)
    for cond in _pod_conditions(pod):
        if cond["type"] == "PodScheduled":
            cond.pop("reason", None)
            cond.pop("message", None)
    _sort_conditions(pod)


def set_unschedulable(pod: JsonDict, message: str, now: str) -> bool:
    return set_condition(_pod_conditions(pod), "PodScheduled", "False", "Unschedulable", message, now, probe=True)


def set_creating(pod: JsonDict, node: JsonDict | None, now: str) -> None:
    """Pending on a node: containers being created, not ready yet."""
    status = pod.setdefault("status", {})
    status["phase"] = "Pending"
    if node is not None:
        ip = node_internal_ip(node)
        status["hostIP"] = ip
        status["hostIPs"] = [{"ip": ip}]
    status.setdefault("startTime", now)
    conds = _pod_conditions(pod)
    set_condition(conds, "PodReadyToStartContainers", "False", "", "", now, probe=True)
    set_condition(conds, "Initialized", "True", "", "", now, probe=True)
    not_ready = "containers with unready status: [" + " ".join(_container_names(pod)) + "]"
    set_condition(conds, "Ready", "False", "ContainersNotReady", not_ready, now, probe=True)
    set_condition(conds, "ContainersReady", "False", "ContainersNotReady", not_ready, now, probe=True)
    _strip_empty_reasons(conds)
    _sort_conditions(pod)
    status["containerStatuses"] = [
        {
            "name": c.get("name", "main"),
            "state": {"waiting": {"reason": "ContainerCreating"}},
            "lastState": {},
            "ready": False,
            "restartCount": _restart_count(pod, str(c.get("name", "main"))),
            "image": c.get("image", ""),
            "imageID": "",
            "started": False,
        }
        for c in dig(pod, "spec", "containers") or []
    ]
    status["qosClass"] = status.get("qosClass") or qos_class(pod)


def set_running(pod: JsonDict, pod_ip: str, now: str) -> None:
    """Running with every container started and ready."""
    status = pod.setdefault("status", {})
    status["phase"] = "Running"
    status["podIP"] = pod_ip
    status["podIPs"] = [{"ip": pod_ip}]
    status.setdefault("startTime", now)
    conds = _pod_conditions(pod)
    for ctype in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady"):
        set_condition(conds, ctype, "True", "", "", now, probe=True)
    _strip_empty_reasons(conds)
    _sort_conditions(pod)
    status["containerStatuses"] = [
        {
            "name": c.get("name", "main"),
            "state": {"running": {"startedAt": now}},
            "lastState": _last_state(pod, str(c.get("name", "main"))),
            "ready": True,
            "restartCount": _restart_count(pod, str(c.get("name", "main"))),
            "image": c.get("image", ""),
            "imageID": _image_id(str(c.get("image", ""))),
            "containerID": "containerd://"
            + hashlib.sha256(f"{pod['metadata'].get('uid')}/{c.get('name')}/{now}".encode()).hexdigest(),
            "started": True,
        }
        for c in dig(pod, "spec", "containers") or []
    ]


def set_restarting(pod: JsonDict, now: str, reason: str) -> None:
    """Containers died (node went down): not ready; the restart count goes up when they return."""
    status = pod.setdefault("status", {})
    conds = _pod_conditions(pod)
    set_condition(conds, "Ready", "False", reason, "", now, probe=True)
    set_condition(conds, "ContainersReady", "False", reason, "", now, probe=True)
    _strip_empty_reasons(conds)
    for cs in status.get("containerStatuses") or []:
        cs["ready"] = False
        cs["started"] = False
        if "running" in (cs.get("state") or {}):
            cs["lastState"] = {
                "terminated": {
                    "exitCode": 255,
                    "reason": "Unknown",
                    "startedAt": cs["state"]["running"].get("startedAt"),
                    "finishedAt": now,
                }
            }
            cs["state"] = {"waiting": {"reason": "ContainerCreating"}}
            cs["restartCount"] = int(cs.get("restartCount", 0)) + 1


def set_succeeded(pod: JsonDict, now: str) -> None:
    """Every container exited 0 (a Job pod finishing its work)."""
    status = pod.setdefault("status", {})
    status["phase"] = "Succeeded"
    conds = _pod_conditions(pod)
    set_condition(conds, "PodReadyToStartContainers", "False", "", "", now, probe=True)
    set_condition(conds, "Ready", "False", "PodCompleted", "", now, probe=True)
    set_condition(conds, "ContainersReady", "False", "PodCompleted", "", now, probe=True)
    _strip_empty_reasons(conds)
    for cs in status.get("containerStatuses") or []:
        started = (cs.get("state") or {}).get("running", {}).get("startedAt", now)
        cs["state"] = {
            "terminated": {
                "exitCode": 0,
                "reason": "Completed",
                "startedAt": started,
                "finishedAt": now,
                "containerID": cs.get("containerID", ""),
            }
        }
        cs["ready"] = False
        cs["started"] = False


def _strip_empty_reasons(conds: list[JsonDict]) -> None:
    for cond in conds:
        if cond.get("reason") == "":
            cond.pop("reason", None)
        if cond.get("message") == "":
            cond.pop("message", None)


def _container_names(pod: JsonDict) -> list[str]:
    return [str(c.get("name", "main")) for c in dig(pod, "spec", "containers") or []]


def _restart_count(pod: JsonDict, name: str) -> int:
    for cs in dig(pod, "status", "containerStatuses") or []:
        if cs.get("name") == name:
            return int(cs.get("restartCount", 0))
    return 0


def _last_state(pod: JsonDict, name: str) -> JsonDict:
    for cs in dig(pod, "status", "containerStatuses") or []:
        if cs.get("name") == name:
            return dict(cs.get("lastState") or {})
    return {}


def _image_id(image: str) -> str:
    repo = image.split(":")[0] if image else "scratch"
    return f"{repo}@sha256:" + hashlib.sha256(image.encode()).hexdigest()


def set_running_at_once(pod: JsonDict, node: JsonDict, pod_ip: str, now: str) -> None:
    """Bind and start a pod in one step: the state of a pod that has been running for a while.

    Equivalent to ``set_scheduled`` + ``set_creating`` + ``set_running`` (used when building a
    fleet, where thousands of pods start out Running), without the intermediate states.
    """
    node_name = str(node["metadata"]["name"])
    pod.setdefault("spec", {})["nodeName"] = node_name
    host_ip = node_internal_ip(node)
    status = pod.setdefault("status", {})
    status.update(
        {
            "phase": "Running",
            "conditions": [
                {"type": ctype, "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
                for ctype in _COND_ORDER
            ],
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "podIP": pod_ip,
            "podIPs": [{"ip": pod_ip}],
            "startTime": now,
            "containerStatuses": [
                {
                    "name": c.get("name", "main"),
                    "state": {"running": {"startedAt": now}},
                    "lastState": {},
                    "ready": True,
                    "restartCount": 0,
                    "image": c.get("image", ""),
                    "imageID": _image_id(str(c.get("image", ""))),
                    "containerID": "containerd://"
                    + hashlib.sha256(f"{pod['metadata'].get('name')}/{c.get('name')}/{now}".encode()).hexdigest(),
                    "started": True,
                }
                for c in dig(pod, "spec", "containers") or []
            ],
            "qosClass": status.get("qosClass") or qos_class(pod),
        }
    )
