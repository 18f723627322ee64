"""All side effects of a remediation: Kubernetes calls and reboot providers, as Temporal activities."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from kubernetes.aio import client

from gpuheal.activities.drain import DrainActivities
from gpuheal.activities.nodes import NodeActivities
from gpuheal.activities.providers import RebootProvider
from gpuheal.activities.repair import RepairActivities


def remediation_activities(api: client.ApiClient, providers: Mapping[str, RebootProvider]) -> list[Callable[..., Any]]:
    """Every activity RemediationWorkflow calls, bound to one Kubernetes client and the providers."""
    nodes = NodeActivities(api)
    drain = DrainActivities(api)
    repair = RepairActivities(api, providers)
    return [nodes.quarantine_node, nodes.observe_node, nodes.release_node, drain.drain_node, repair.request_reboot]
