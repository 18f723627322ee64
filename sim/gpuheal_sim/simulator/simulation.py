"""The assembled simulation: store, API semantics, controllers, kubelets and node truth.

``Simulation`` wires the parts together for one fleet and builds the fleet from its
``FleetConfig``. It must be created and used on one event loop (the controllers run as callbacks
on it); the HTTP server and ``SimulatedCluster`` sit on top.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from .access import AccessControl
from .clock import Timers
from .clouds.faults import CloudFaults
from .controllers import (
    DaemonSetController,
    DeploymentController,
    GarbageCollector,
    JobController,
    ReplicaSetController,
)
from .disruption import PDB_KEY, DisruptionController
from .events import EventRecorder
from .fleet import FleetBuilder, FleetConfig
from .jsonvalues import JsonDict
from .kubelet import Kubelet
from .nodelifecycle import NodeLifecycleController
from .nodes import NodeLifecycle
from .registry import Registry
from .resources import NAMESPACES
from .scheduler import Scheduler
from .store import Store


class Simulation:
    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self.store = Store(history_size=config.watch_history, watch_queue_size=config.watch_queue_size)
        self.registry = Registry(
            self.store, random.Random(config.seed), eviction_retry_after=config.eviction_retry_after_seconds
        )
        self.timers = Timers()
        # Who may call the API and what admission allows (RBAC and policies from the config).
        self.access = AccessControl(self.store)
        if config.access_manifests:
            self.access.load_yaml(config.access_manifests)
        self.recorder = EventRecorder(self.registry, config.max_events)
        self.kubelet = Kubelet(self.registry, self.timers, config.pod_start_seconds)
        self.node_controller = NodeLifecycleController(
            self.registry,
            self.timers,
            self.recorder,
            grace_seconds=config.node_monitor_grace_seconds,
            taints=config.node_lifecycle_taints,
        )
        self.lifecycle = NodeLifecycle(
            self.registry,
            self.timers,
            self.kubelet,
            self.recorder,
            self.node_controller,
            reboot_seconds=config.reboot_seconds,
            reboot_down_seconds=config.reboot_down_seconds,
            terminate_seconds=config.terminate_seconds,
            kubelet_ready_seconds=config.kubelet_ready_seconds,
            gpu_agent_start_seconds=config.gpu_agent_start_seconds,
            fault_survives_reboot=config.fault_survives_reboot,
            kubelet_version=config.kubernetes_version,
            gpu_product=config.gpu_product,
        )
        self.scheduler = Scheduler(self.registry, self.timers)
        self.disruption = DisruptionController(
            self.store,
            self.timers,
            self._write_pdb_status,
            self.recorder,
            sync_seconds=config.pdb_sync_seconds,
            deletion_timeout=config.pdb_deletion_timeout_seconds,
        )
        self.controllers: list[object] = [
            ReplicaSetController(self.registry, self.timers),
            DeploymentController(self.registry, self.timers),
            JobController(self.registry, self.timers),
            DaemonSetController(self.registry, self.timers),
            GarbageCollector(self.registry, self.timers),
        ]
        self.build_seconds = 0.0
        self.cloud_faults = CloudFaults()
        self.cloud_names: frozenset[str] = frozenset()
        # A node's machine identity: its providerID and any annotations naming its machine. The
        # simulated clouds replace this when the fleet lives on one of them.
        self.identify: Callable[[str, int], tuple[str, dict[str, str]]] = lambda node, index: (
            f"{config.provider_id_prefix}{node}",
            {},
        )

    def _write_pdb_status(self, namespace: str, name: str, status: JsonDict) -> None:
        self.registry.write_status(PDB_KEY, namespace, name, status)

    def build(self) -> None:
        """Create the configured fleet (must run on the event loop that will run the simulation)."""
        started = time.perf_counter()
        FleetBuilder(self).build()
        for namespace in sorted(self.access.namespaces()):
            if self.store.get(NAMESPACES.key, "", namespace) is None:
                self.registry.create(NAMESPACES, "", {"metadata": {"name": namespace}})
        self.build_seconds = time.perf_counter() - started

    def close(self) -> None:
        self.timers.cancel_all()
        self.store.close_watchers()
