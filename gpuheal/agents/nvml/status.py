"""How a verdict lands in a GPU's Device API status without trampling other writers.

UpdateGpuStatus replaces the whole status, so a writer reads, changes its part and writes back.
The NVML provider's part is the `Healthy` condition and `recommended_action`; other conditions pass
through untouched. Two rules keep writers from undoing each other: a healthy verdict never replaces
an unhealthy condition some other writer recorded (its reason is not one of ours), and an unhealthy
verdict never lowers a recommended action already there. `last_transition_time` moves only when the
condition's status flips, as in Kubernetes.
"""

from __future__ import annotations

from datetime import datetime

from gpuheal.agents.nvml.verdict import CONDITION_HEALTHY, OWN_REASONS, Verdict
from gpuheal.domain.actions import RecommendedAction
from gpuheal.protos import gpu_pb2


def healthy_condition(status: gpu_pb2.GpuStatus) -> gpu_pb2.Condition | None:
    """The `Healthy` condition of a status, if it has one."""
    for condition in status.conditions:
        if condition.type == CONDITION_HEALTHY:
            return condition
    return None


def new_status(verdict: Verdict, now: datetime) -> gpu_pb2.GpuStatus:
    """The status of a freshly registered GPU carrying `verdict`."""
    status = gpu_pb2.GpuStatus()
    merged = merge_status(status, verdict, now)
    return merged if merged is not None else status


def merge_status(current: gpu_pb2.GpuStatus, verdict: Verdict, now: datetime) -> gpu_pb2.GpuStatus | None:
    """The status to write so that it carries `verdict`, or None when nothing should be written."""
    existing = healthy_condition(current)
    if verdict.healthy and existing is not None and existing.status == "False" and existing.reason not in OWN_REASONS:
        return None  # another writer's fault stands until that writer clears it
    action = "" if verdict.healthy else _escalate(current.recommended_action, verdict.action).name
    if (
        existing is not None
        and (existing.status, existing.reason, existing.message) == (verdict.status, verdict.reason, verdict.message)
        and current.recommended_action == action
    ):
        return None
    merged = gpu_pb2.GpuStatus()
    merged.CopyFrom(current)
    condition = healthy_condition(merged)
    if condition is None:
        condition = merged.conditions.add(type=CONDITION_HEALTHY)
    if condition.status != verdict.status or not condition.HasField("last_transition_time"):
        condition.last_transition_time.FromDatetime(now)
    condition.status = verdict.status
    condition.reason = verdict.reason
    condition.message = verdict.message
    merged.recommended_action = action
    return merged


def _escalate(current: str, ours: RecommendedAction) -> RecommendedAction:
    try:
        there = RecommendedAction[current] if current else RecommendedAction.NONE
    except KeyError:
        return ours  # a custom action we cannot rank: ours is at least a known one
    return there.escalate(ours)
