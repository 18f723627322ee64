"""The fleet's configuration (``FleetConfig``) and the code that builds the fleet from it.

The default fleet is the demo's: 4 nodes with 8 GPUs each, labelled
``nvidia.com/gpu.present=true``, with ``providerID`` ``sim://<node>``, running

* the Deployment ``trainer`` in namespace ``ml`` (one replica per node, 2 GPUs each) guarded by the
  PodDisruptionBudget ``trainer-pdb`` with ``minAvailable`` = replicas - 1;
* the DaemonSet ``gpu-agent`` in ``kube-system`` (tolerates every taint, like a node agent);
* the Job ``batch-eval`` in namespace ``batch`` with a pod on every other node, finishing after
  ``run_seconds``;
* a static ``kube-proxy`` pod per node, visible as a mirror pod.

Nodes are named ``gpu-node-000`` … (zero-padded to the width the count needs, at least three
digits). Workloads can be replaced by an explicit list or turned off (``workloads=False``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .controllers import DaemonSetController, DeploymentController, template_hash
from .identity import random_suffix
from .jsonvalues import JsonDict
from .kubelet import RUN_ANNOTATION, SHUTDOWN_ANNOTATION, StaticPod
from .objects import node_object, pod_from_template, set_running_at_once
from .resources import DAEMONSETS, DEPLOYMENTS, JOBS, NAMESPACES, PDBS
from .timestamps import rfc3339

if TYPE_CHECKING:
    from .simulation import Simulation

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PdbSpec(_Model):
    """A PodDisruptionBudget over a workload's pods: exactly one of the two bounds."""

    name: str | None = Field(None, description="defaults to <workload>-pdb")
    min_available: int | str | None = Field(None, description="an integer or a percentage like '50%'")
    max_unavailable: int | str | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> PdbSpec:
        if (self.min_available is None) == (self.max_unavailable is None):
            raise ValueError("set exactly one of min_available and max_unavailable")
        return self


class DeploymentWorkload(_Model):
    """A Deployment (and its ReplicaSet) whose pods start spread over the nodes."""

    kind: Literal["Deployment"] = "Deployment"
    name: str = Field(pattern=_DNS_LABEL)
    namespace: str = Field("default", pattern=_DNS_LABEL)
    replicas: int | None = Field(None, ge=0, description="None: one per node")
    gpus: int = Field(2, ge=0, description="nvidia.com/gpu per pod")
    termination_grace_seconds: int = Field(2, ge=0)
    shutdown_seconds: float | None = Field(None, ge=0, description="the process exits this long after SIGTERM")
    labels: dict[str, str] = Field(default_factory=dict)
    pdb: PdbSpec | None = None
    image: str = "nvcr.io/nvidia/pytorch:24.05-py3"


class DaemonSetWorkload(_Model):
    """A DaemonSet with one pod per node."""

    kind: Literal["DaemonSet"] = "DaemonSet"
    name: str = Field(pattern=_DNS_LABEL)
    namespace: str = Field("kube-system", pattern=_DNS_LABEL)
    gpus: int = Field(0, ge=0)
    termination_grace_seconds: int = Field(1, ge=0)
    tolerate_all: bool = Field(True, description="tolerate every taint, as node agents do")
    labels: dict[str, str] = Field(default_factory=dict)
    image: str = "ghcr.io/gpuheal/agent:sim"


class JobWorkload(_Model):
    """A Job whose pods run for ``run_seconds`` and then succeed."""

    kind: Literal["Job"] = "Job"
    name: str = Field(pattern=_DNS_LABEL)
    namespace: str = Field("default", pattern=_DNS_LABEL)
    pods: int | None = Field(None, ge=0, description="None: one on every other node")
    run_seconds: float = Field(15.0, ge=0)
    gpus: int = Field(1, ge=0)
    termination_grace_seconds: int = Field(2, ge=0)
    labels: dict[str, str] = Field(default_factory=dict)
    image: str = "nvcr.io/nvidia/cuda:12.4.1-base-ubuntu22.04"


class StaticPodWorkload(_Model):
    """A static pod on every node, seen through the API as mirror pods ``<name>-<node>``."""

    kind: Literal["StaticPod"] = "StaticPod"
    name: str = Field(pattern=_DNS_LABEL)
    namespace: str = Field("kube-system", pattern=_DNS_LABEL)
    image: str = "registry.k8s.io/kube-proxy:v1.33.0"


Workload = Annotated[
    DeploymentWorkload | DaemonSetWorkload | JobWorkload | StaticPodWorkload, Field(discriminator="kind")
]


class FleetConfig(_Model):
    """Everything that shapes a simulated fleet; all durations are seconds."""

    nodes: int = Field(4, ge=0, le=100_000)
    gpus_per_node: int = Field(8, ge=0, le=1024)
    node_name_prefix: str = Field("gpu-node-", pattern=r"^[a-z0-9][-a-z0-9.]*$")
    node_labels: dict[str, str] = Field(default_factory=lambda: {"nvidia.com/gpu.present": "true"})
    # Racks of consecutive nodes, each node labelled `rack_label: rack-<n>`; 0 for no racks.
    nodes_per_rack: int = Field(0, ge=0)
    rack_label: str = Field("sim.gpuheal.io/rack", pattern=r"^([a-z0-9][-a-z0-9.]*/)?[A-Za-z0-9][-A-Za-z0-9_.]*$")
    provider_id_prefix: str = "sim://"
    cloud: Literal["sim", "aws", "azure", "gcp", "nebius", "redfish"] = Field(
        "sim", description="whose machine identities the nodes carry; 'sim' uses provider_id_prefix"
    )
    gpu_product: str = "NVIDIA-H100-80GB-HBM3"
    kubernetes_version: str = "v1.33.0"

    reboot_seconds: float = Field(2.0, ge=0, description="the kubelet stops posting -> posts the new boot id")
    reboot_down_seconds: float = Field(0.0, ge=0, description="request -> the machine goes down")
    kubelet_ready_seconds: float = Field(
        0.5, ge=0, description="after boot, the kubelet's first status says Ready=False (KubeletNotReady) this long"
    )
    gpu_agent_start_seconds: float = Field(
        1.0, ge=0, description="after boot, the GPU agent reports GpuHealthy this long after the kubelet is back"
    )
    node_monitor_grace_seconds: float = Field(
        50.0,
        gt=0,
        description="--node-monitor-grace-period: a kubelet silent this long gets Unknown conditions and "
        "unreachable taints (the upstream default)",
    )
    reboot_reply_seconds: float = Field(
        0.0, ge=0, description="how long the control API holds its answer to a recorded reboot request (a slow cloud)"
    )
    terminate_seconds: float = Field(
        1.0,
        ge=0,
        description="a machine terminated -> the cloud's node controller deletes its Node (and its pods go)",
    )
    pod_start_seconds: float = Field(0.5, ge=0, description="bound -> Running and Ready")
    fault_survives_reboot: bool = Field(False, description="a reboot clears no GPU fault")
    node_lifecycle_taints: bool = Field(
        True, description="the node lifecycle controller's taints (unschedulable, not-ready, unreachable, pressure)"
    )

    workloads: bool | list[Workload] = Field(True, description="True: the demo set; False: none")
    namespaces: list[str] = Field(default_factory=list, description="extra namespaces to create")

    seed: int = 0
    token: str | None = Field(None, description="the cluster admin's bearer token; random when None")
    access_manifests: str = Field(
        "",
        description="multi-document YAML the API server enforces: ServiceAccounts, ClusterRoles, Roles and "
        "their bindings, ValidatingAdmissionPolicies and their bindings (what `helm template` renders)",
    )
    watch_history: int = Field(10_000, ge=10, description="changes kept per resource for watch resumes")
    watch_queue_size: int = Field(10_000, ge=10, description="events a slow watcher may lag before it is closed")
    watch_timeout_seconds: float = Field(1800.0, gt=0, description="when timeoutSeconds is not given")
    bookmark_seconds: float = Field(60.0, gt=0)
    max_events: int = Field(10_000, ge=0)
    eviction_retry_after_seconds: int = Field(
        0, ge=0, description="Retry-After of an eviction the budget refuses (upstream: 0, no header)"
    )
    pdb_sync_seconds: float = Field(
        0.1, ge=0, description="how long the disruption controller takes to write a budget's status after a change"
    )
    pdb_deletion_timeout_seconds: float = Field(
        120.0, gt=0, description="how long an evicted pod may stay in disruptedPods without being deleted"
    )

    @field_validator("namespaces")
    @classmethod
    def _namespaces(cls, value: list[str]) -> list[str]:
        for ns in value:
            if not re.match(_DNS_LABEL, ns):
                raise ValueError(f"invalid namespace name {ns!r}")
        return value

    def node_names(self) -> list[str]:
        width = max(3, len(str(max(self.nodes - 1, 0))))
        return [f"{self.node_name_prefix}{i:0{width}d}" for i in range(self.nodes)]

    def labels_of(self, index: int) -> dict[str, str]:
        """The labels of the node numbered `index`: the fleet's, and its rack's where there are racks."""
        if not self.nodes_per_rack:
            return dict(self.node_labels)
        racks = -(-self.nodes // self.nodes_per_rack)
        return {**self.node_labels, self.rack_label: f"rack-{index // self.nodes_per_rack:0{len(str(racks - 1))}d}"}

    def resolved_workloads(self) -> list[DeploymentWorkload | DaemonSetWorkload | JobWorkload | StaticPodWorkload]:
        if self.workloads is False:
            return []
        if self.workloads is True:
            return default_workloads(self.nodes)
        return list(self.workloads)

    def all_namespaces(self) -> list[str]:
        out = list(SYSTEM_NAMESPACES)
        for ns in [w.namespace for w in self.resolved_workloads()] + self.namespaces:
            if ns not in out:
                out.append(ns)
        return out


def default_workloads(nodes: int) -> list[DeploymentWorkload | DaemonSetWorkload | JobWorkload | StaticPodWorkload]:
    return [
        DeploymentWorkload(
            name="trainer",
            namespace="ml",
            replicas=nodes,
            pdb=PdbSpec(name="trainer-pdb", min_available=max(nodes - 1, 0)),
        ),
        DaemonSetWorkload(name="gpu-agent", namespace="kube-system"),
        JobWorkload(name="batch-eval", namespace="batch"),
        StaticPodWorkload(name="kube-proxy", namespace="kube-system"),
    ]


# --- building ---------------------------------------------------------------------------------------


def _container(name: str, image: str, gpus: int) -> JsonDict:
    resources: JsonDict = {"requests": {"cpu": "1", "memory": "2Gi"}}
    if gpus:
        resources["limits"] = {"nvidia.com/gpu": str(gpus)}
    return {"name": name, "image": image, "resources": resources}


def _gpu_tolerations(gpus: int) -> list[JsonDict]:
    return [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}] if gpus else []


class FleetBuilder:
    """Creates the fleet's namespaces, nodes and workloads in a fresh simulation."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.config = sim.config
        self.used: dict[str, int] = {}
        self.now = rfc3339()

    def build(self) -> None:
        sim, cfg = self.sim, self.config
        for ns in cfg.all_namespaces():
            sim.registry.create(NAMESPACES, "", {"metadata": {"name": ns}})
        names = cfg.node_names()
        for index, name in enumerate(names):
            state = sim.lifecycle.register(name, cfg.gpus_per_node)
            node = node_object(
                name,
                index,
                gpus=cfg.gpus_per_node,
                healthy_gpus=cfg.gpus_per_node,
                labels=cfg.labels_of(index),
                provider_id=sim.identify(name, index)[0],
                gpu_product=cfg.gpu_product,
                kubelet_version=cfg.kubernetes_version,
                boot_id=state.boot_id,
                gpu_condition=sim.lifecycle.gpu_condition(name),
                now=rfc3339(),
            )
            annotations = sim.identify(name, index)[1]
            if annotations:
                node["metadata"]["annotations"] = {**node["metadata"].get("annotations", {}), **annotations}
            sim.registry.create_object("nodes", node)
            self.used[name] = 0
        self.names = names
        for workload in cfg.resolved_workloads():
            if isinstance(workload, DeploymentWorkload):
                self._deployment(workload)
            elif isinstance(workload, DaemonSetWorkload):
                self._daemonset(workload)
            elif isinstance(workload, JobWorkload):
                self._job(workload)
            else:
                self._static(workload)

    def _place(self, pod: JsonDict, node: str) -> JsonDict:
        """Bind a pod and make it Running and Ready, as if it had been running for a while."""
        node_entry = self.sim.store.get("nodes", "", node)
        assert node_entry is not None
        set_running_at_once(pod, node_entry.obj, self.sim.kubelet.assign_ip(node), self.now)
        return pod

    def _fits(self, node: str, gpus: int) -> bool:
        return self.used[node] + gpus <= self.config.gpus_per_node

    def _deployment(self, w: DeploymentWorkload) -> None:
        sim = self.sim
        replicas = len(self.names) if w.replicas is None else w.replicas
        labels = {"app": w.name, **w.labels}
        annotations = {SHUTDOWN_ANNOTATION: str(w.shutdown_seconds)} if w.shutdown_seconds else {}
        template: JsonDict = {
            "metadata": {"labels": labels, **({"annotations": annotations} if annotations else {})},
            "spec": {
                "containers": [_container("main", w.image, w.gpus)],
                "terminationGracePeriodSeconds": w.termination_grace_seconds,
                "tolerations": _gpu_tolerations(w.gpus),
            },
        }
        dep = sim.registry.create(
            DEPLOYMENTS,
            w.namespace,
            {
                "metadata": {"name": w.name, "labels": labels},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": labels},
                    "template": template,
                    "strategy": {
                        "type": "RollingUpdate",
                        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
                    },
                },
            },
        )
        phash = template_hash(template)
        rs = sim.registry.create_object(
            "replicasets.apps", DeploymentController.replicaset_for(dep.obj, phash, replicas, 1)
        )
        for i in range(replicas):
            pod = pod_from_template(
                rs.obj["spec"]["template"],
                name=f"{rs.name}-{random_suffix(sim.registry.rng)}",
                namespace=w.namespace,
                owner=rs.obj,
            )
            if self.names:
                node = self.names[i % len(self.names)]
                if self._fits(node, w.gpus):
                    self.used[node] += w.gpus
                    self._place(pod, node)
            sim.registry.create_object("pods", pod)
        if w.pdb is not None:
            spec: JsonDict = {"selector": {"matchLabels": labels}}
            if w.pdb.min_available is not None:
                spec["minAvailable"] = w.pdb.min_available
            else:
                spec["maxUnavailable"] = w.pdb.max_unavailable
            sim.registry.create(PDBS, w.namespace, {"metadata": {"name": w.pdb.name or f"{w.name}-pdb"}, "spec": spec})

    def _daemonset(self, w: DaemonSetWorkload) -> None:
        sim = self.sim
        labels = {"app": w.name, **w.labels}
        tolerations = [{"operator": "Exists"}] if w.tolerate_all else _gpu_tolerations(w.gpus)
        template: JsonDict = {
            "metadata": {"labels": labels},
            "spec": {
                "containers": [_container("agent", w.image, w.gpus)],
                "terminationGracePeriodSeconds": w.termination_grace_seconds,
                "priorityClassName": "system-node-critical",
                "tolerations": tolerations,
            },
        }
        ds = sim.registry.create(
            DAEMONSETS,
            w.namespace,
            {
                "metadata": {"name": w.name, "labels": labels},
                "spec": {
                    "selector": {"matchLabels": labels},
                    "template": template,
                    "updateStrategy": {"type": "RollingUpdate"},
                },
            },
        )
        controller = next(c for c in sim.controllers if isinstance(c, DaemonSetController))
        revision = template_hash(template)
        for node in self.names:
            pod = controller.pod_for(ds, node, "1", revision)
            self.used[node] += w.gpus
            sim.registry.create_object("pods", self._place(pod, node))

    def _job(self, w: JobWorkload) -> None:
        sim = self.sim
        count = (len(self.names) + 1) // 2 if w.pods is None else w.pods
        run = {RUN_ANNOTATION: str(w.run_seconds)}
        template: JsonDict = {
            "metadata": {"labels": dict(w.labels), "annotations": dict(run)},
            "spec": {
                "containers": [_container("main", w.image, w.gpus)],
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": w.termination_grace_seconds,
                "tolerations": _gpu_tolerations(w.gpus),
            },
        }
        job = sim.registry.create(
            JOBS,
            w.namespace,
            {
                "metadata": {"name": w.name, "labels": dict(w.labels), "annotations": dict(run)},
                "spec": {"completions": count, "parallelism": count, "backoffLimit": 6, "template": template},
            },
        )
        candidates = self.names[::2] + self.names[1::2]
        for i in range(count):
            pod = pod_from_template(
                job.obj["spec"]["template"],
                name=f"{w.name}-{random_suffix(sim.registry.rng)}",
                namespace=w.namespace,
                owner=job.obj,
            )
            if candidates:
                node = candidates[i % len(candidates)]
                if self._fits(node, w.gpus):
                    self.used[node] += w.gpus
                    self._place(pod, node)
            sim.registry.create_object("pods", pod)

    def _static(self, w: StaticPodWorkload) -> None:
        template: JsonDict = {
            "metadata": {"labels": {"k8s-app": w.name, "tier": "node"}},
            "spec": {
                "containers": [{"name": w.name, "image": w.image}],
                "hostNetwork": True,
                "terminationGracePeriodSeconds": 30,
            },
        }
        self.sim.kubelet.static_pods.append(StaticPod(w.name, w.namespace, template))
        for node in self.names:
            self.sim.kubelet.ensure_static_pods(node, running=True)
