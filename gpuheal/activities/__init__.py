"""All side effects of a remediation: Kubernetes calls and reboot providers, as Temporal activities."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubernetes.aio import client

from gpuheal.activities.drain import DrainActivities
from gpuheal.activities.gpu_reset import GpuResetActivities
from gpuheal.activities.node_wait import NodeWaitActivities
from gpuheal.activities.nodes import NodeActivities
from gpuheal.activities.providers.selection import ProviderSet
from gpuheal.activities.repair import RepairActivities


def remediation_activities(api: client.ApiClient, providers: ProviderSet) -> list[Callable[..., Any]]:
    """Every activity RemediationWorkflow calls, bound to one Kubernetes client and the providers."""
    nodes = NodeActivities(api)
    drain = DrainActivities(api)
    repair = RepairActivities(api, providers)
    resets = GpuResetActivities(api)
    waits = NodeWaitActivities(api)
    return [
        nodes.quarantine_node,
        nodes.observe_node,
        nodes.release_node,
        drain.drain_node,
        repair.request_reboot,
        repair.describe_machine,
        resets.request_gpu_reset,
        resets.withdraw_gpu_reset,
        waits.wait_for_node,
    ]
