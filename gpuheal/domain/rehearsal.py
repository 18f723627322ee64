"""A dry run: what a remediation would do to its node, said step by step, with nothing done.

The plan follows the stages of a real run (hold, permit, quarantine, drain, repeat offences,
approval, repair, wait, verify, release) with the decisions a real run would make from the same
policy and the node as the dry run read it. What only the run itself can find out (whether a budget
lets a pod go, whether a GPU reset works, whether the node comes back) is said as the choice it is.
"""

from __future__ import annotations

from collections.abc import Sequence

from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.decisions import Rung, first_rung, needs_approval
from gpuheal.domain.marks import HOLD_LABEL, MANAGED_LABEL, QUARANTINE_TAINT_KEY
from gpuheal.domain.policy import DrainMode, DrainPolicy, RemediationPolicy
from gpuheal.domain.steps import NodeSurvey, PodRef


def rehearse(
    survey: NodeSurvey, policy: RemediationPolicy, action: RecommendedAction, gpus: Sequence[str], offence: str
) -> list[str]:
    """What the remediation of `survey.node` for `action` would do under `policy`, one line per step;
    `offence` is the repeat offence the history shows ("" for none)."""
    node = survey.node
    if not survey.exists:
        return [f"node {node} does not exist: nothing would be done"]
    if not survey.managed:
        return [f"node {node} is labelled {MANAGED_LABEL}=false: nothing would be done"]
    plan: list[str] = []
    if survey.held:
        plan.append(f"would wait, touching nothing, while {node} is labelled {HOLD_LABEL}=true")
    plan.append("would ask the fleet governor for a permit, and wait in AwaitingBudget until it grants one")
    cordoned = " (it is cordoned already)" if survey.unschedulable else ""
    plan.append(f"would cordon {node} and taint it {QUARANTINE_TAINT_KEY}:NoSchedule{cordoned}")
    plan.extend(_drain(survey.pods, policy.drain))
    if offence:
        plan.append(f"would escalate to a person instead of repairing again: {offence}")
        return plan
    repair = policy.repair
    if needs_approval(repair, action, survey.labels):
        plan.append(f"would wait up to {repair.approval_timeout} for a person to approve the repair")
    reboot = (
        f"reboot {node} through {survey.provider} (providerID {survey.provider_id or 'none'})"
        if survey.provider
        else f"escalate to a person, as no provider would reboot it: {survey.provider_problem}"
    )
    if first_rung(action, repair, list(gpus)) is Rung.RESET_GPUS:
        plan.append(f"would ask the node's agent to reset {', '.join(gpus)}; if the GPUs do not come back, {reboot}")
    else:
        plan.append(f"would {reboot}")
    plan.append(
        f"after a reboot, would wait up to {repair.node_ready_timeout} for {node} to be Ready on a new boot ID; "
        f"then up to {repair.verify_timeout} for its GPUs to report healthy"
    )
    kept = " and leave it cordoned, as it was before" if survey.unschedulable else " and uncordon it"
    plan.append(f"would then remove the taint{kept}")
    return plan


def _drain(pods: Sequence[PodRef], policy: DrainPolicy) -> list[str]:
    if not pods:
        return ["would find no pods to move"]
    said = {
        DrainMode.IMMEDIATE: "would evict {pod} (Immediate; its PodDisruptionBudget holds)",
        DrainMode.ALLOW_COMPLETION: "would leave {pod} to finish (AllowCompletion)",
        DrainMode.DELETE_AFTER_TIMEOUT: f"would delete {{pod}} after {policy.delete_after} (DeleteAfterTimeout)",
    }
    lines = [said[policy.mode_for(pod.namespace)].format(pod=f"{pod.namespace}/{pod.name}") for pod in pods]
    return [*lines, f"would end the drain with a person if it has not finished within {policy.timeout}"]
