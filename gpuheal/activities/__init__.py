"""All side effects of a remediation: Kubernetes calls and reboot providers, as Temporal activities."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubernetes.aio import client

from gpuheal.activities.drain import DrainActivities
from gpuheal.activities.fleet import FleetActivities, deliver_permits, find_ended_holders, return_permit
from gpuheal.activities.history import find_earlier_remediations
from gpuheal.activities.node_orders import NodeOrderActivities
from gpuheal.activities.node_wait import NodeWaitActivities
from gpuheal.activities.nodes import NodeActivities
from gpuheal.activities.policy import PolicyActivities
from gpuheal.activities.providers.selection import ProviderSet
from gpuheal.activities.recent_nodes import RecentNodes
from gpuheal.activities.repair import RepairActivities
from gpuheal.activities.survey import SurveyActivities
from gpuheal.domain.fleet import GOVERNOR_ID
from gpuheal.policyfile import WorkerPolicy


def remediation_activities(
    api: client.ApiClient, providers: ProviderSet, policy: WorkerPolicy, governor_id: str = GOVERNOR_ID
) -> list[Callable[..., Any]]:
    """Every activity RemediationWorkflow and GovernorWorkflow call, bound to one Kubernetes client,
    the providers and the worker's policy (with the fleet's limits)."""
    recent = RecentNodes()
    nodes = NodeActivities(api, recent)
    drain = DrainActivities(api)
    repair = RepairActivities(api, providers)
    orders = NodeOrderActivities(api)
    waits = NodeWaitActivities(api)
    governed = FleetActivities(api, policy, governor_id, recent)
    policies = PolicyActivities(policy)
    survey = SurveyActivities(api, providers, policy)
    return [
        nodes.quarantine_node,
        nodes.observe_node,
        nodes.release_node,
        drain.drain_node,
        repair.request_reboot,
        repair.describe_machine,
        repair.replace_machine,
        orders.request_gpu_reset,
        orders.withdraw_gpu_reset,
        orders.request_gpu_check,
        orders.request_diagnostics,
        waits.wait_for_node,
        governed.ask_for_permit,
        governed.collect_permit,
        governed.collect_permit_unless_held,
        governed.count_gpu_nodes,
        find_ended_holders,
        deliver_permits,
        return_permit,
        find_earlier_remediations,
        policies.current_policy,
        survey.survey_node,
        survey.name_reboot_provider,
    ]
