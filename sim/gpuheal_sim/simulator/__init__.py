"""gpuheal_sim.simulator: a simulated GPU fleet behind a Kubernetes API server.

An aiohttp server speaks the Kubernetes REST API for what gpuheal uses (nodes, pods, evictions,
PodDisruptionBudgets, events, namespaces, Deployments, ReplicaSets, DaemonSets, Jobs), reached
by the official ``kubernetes`` client through the kubeconfig it writes. Simulated controllers,
kubelets and fake GPUs make the fleet behave: pods start and terminate with their grace periods,
ReplicaSets replace evicted pods on other nodes, Jobs finish, nodes reboot with a new boot id,
GPU faults show up as the ``GpuHealthy`` node condition. A control API under ``/sim/v1`` reboots
nodes and injects faults.
"""

from .access import Access
from .auth import service_account_username
from .fleet import (
    DaemonSetWorkload,
    DeploymentWorkload,
    FleetConfig,
    JobWorkload,
    PdbSpec,
    StaticPodWorkload,
)
from .server import SimulatedCluster, write_kubeconfig

__all__ = [
    "Access",
    "DaemonSetWorkload",
    "DeploymentWorkload",
    "FleetConfig",
    "JobWorkload",
    "PdbSpec",
    "SimulatedCluster",
    "StaticPodWorkload",
    "service_account_username",
    "write_kubeconfig",
]
