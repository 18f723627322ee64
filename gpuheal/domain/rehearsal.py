"""A dry run: what a remediation would do to its node, said step by step, with nothing done.

The plan follows the stages of a real run (hold, permit, quarantine, drain, repeat offences,
approval, repair, wait, verify, release) with the decisions a real run would make from the same
policy and the node as the dry run read it. What only the run itself can find out (whether a budget
lets a pod go, whether a GPU reset works, whether the node comes back) is said as the choice it is.
"""

from __future__ import annotations

from collections.abc import Sequence

from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.decisions import (
    Next,
    Rung,
    approval_wait,
    beyond_repair,
    first_rung,
    needs_approval,
    reboot_needs_approval,
)
from gpuheal.domain.marks import HOLD_LABEL, MANAGED_LABEL, QUARANTINE_TAINT_KEY
from gpuheal.domain.policy import MANUAL_PROVIDER, DrainMode, DrainPolicy, RemediationPolicy, RepairPolicy
from gpuheal.domain.steps import NodeSurvey, PodRef

# Pods named one by one in a plan; the rest are counted (a plan is a payload, and read by people).
_PODS_NAMED = 50


def rehearse(
    survey: NodeSurvey, policy: RemediationPolicy, action: RecommendedAction, gpus: Sequence[str], offence: str
) -> list[str]:
    """What the remediation of `survey.node` for `action` would do under `policy`, one line per step;
    `offence` is the repeat offence the history shows ("" for none)."""
    node = survey.node
    if not survey.exists:
        return [f"node {node} does not exist: nothing would be done"]
    plan: list[str] = []
    if survey.held:
        plan.append(f"would wait, touching nothing, while {node} is labelled {HOLD_LABEL}=true")
    if survey.governed:
        plan.append("would ask the fleet governor for a permit, and wait in AwaitingBudget until it grants one")
    if not survey.managed:
        plan.append(f"would then find {node} labelled {MANAGED_LABEL}=false and end, touching nothing")
        return plan
    cordoned = " (it is cordoned already)" if survey.cordoned_before else ""
    plan.append(f"would cordon {node} and taint it {QUARANTINE_TAINT_KEY}:NoSchedule{cordoned}")
    plan.extend(_drain(survey, policy.drain))
    if offence:
        plan.append(f"would {_beyond_repair(survey, policy.repair, action)} instead of repairing again: {offence}")
        return plan
    plan.extend(_repair(survey, policy.repair, action, gpus))
    if policy.validation.level:
        level = policy.validation.level
        plan.append(
            f"then would have the node's agent run a level {level} GPU check (dcgmi diag -r {level}, or NVML's "
            f"where DCGM is absent), waiting up to {policy.validation.timeout}; {survey.node} stays out of "
            "service if it fails"
        )
    checked = " or failed their check" if policy.validation.level else ""
    if survey.provider and survey.reboots and policy.repair.replace:
        plan.append(
            f"if {survey.node} did not come back or its GPUs stayed unhealthy{checked}, "
            f"would {_beyond_repair(survey, policy.repair, action)}"
        )
    kept = " and leave it cordoned, as it was before" if survey.cordoned_before else " and uncordon it"
    plan.append(f"would then remove the taint{kept}")
    return plan


def _drain(survey: NodeSurvey, policy: DrainPolicy) -> list[str]:
    if not survey.pod_count:
        return ["would find no pods to move"]
    said = {
        DrainMode.IMMEDIATE: "would evict {pod} (Immediate; its PodDisruptionBudget holds)",
        DrainMode.ALLOW_COMPLETION: "would leave {pod} to finish (AllowCompletion)",
        DrainMode.DELETE_AFTER_TIMEOUT: f"would delete {{pod}} after {policy.delete_after} (DeleteAfterTimeout)",
    }
    lines = [said[policy.mode_for(pod.namespace)].format(pod=_name(pod)) for pod in survey.pods[:_PODS_NAMED]]
    lines += [f"would wait for {_name(pod)}, terminating already" for pod in survey.terminating[:_PODS_NAMED]]
    named = min(len(survey.pods), _PODS_NAMED) + min(len(survey.terminating), _PODS_NAMED)
    if survey.pod_count > named:
        lines.append(f"… and {survey.pod_count - named} more pods, each by its namespace's drain mode")
    return [*lines, f"would end the drain with a person if it has not finished within {policy.timeout}"]


def _repair(survey: NodeSurvey, repair: RepairPolicy, action: RecommendedAction, gpus: Sequence[str]) -> list[str]:
    node = survey.node
    lines: list[str] = []
    asked = needs_approval(repair, action, survey.labels)
    if asked:
        lines.append(f"would {_approval(repair, action, 'the repair')}")
    if not survey.provider:
        lines.append(f"would escalate to a person, as no provider would repair {node}: {survey.provider_problem}")
        return lines
    if not survey.reboots:
        # A person repairs (the manual provider): their approval says it is done; no machine is called.
        lines.append(f"would leave the repair to a person ({survey.provider}): no machine would be called")
        lines.append(f"then would wait up to {repair.verify_timeout} for the GPUs of {node} to report healthy")
        return lines
    reboot = f"through {survey.provider} (providerID {survey.provider_id or 'none'})"
    if repair.graceful_timeout is not None and survey.graceful:
        reboot = f"gracefully {reboot}, forcing it if the restart has not begun within {repair.graceful_timeout}"
    if first_rung(action, repair, list(gpus)) is Rung.RESET_GPUS:
        # A reset that does not repair is withdrawn, and the faults then call for a RESTART_VM.
        after = RecommendedAction.RESTART_VM
        if repair.provider_for(after) == MANUAL_PROVIDER:
            fallback = "wait for a person to repair it, whose approval says it is done (no machine is called)"
        elif not asked and reboot_needs_approval(repair, after, after_reset=True, decided=None):
            fallback = f"{_approval(repair, after, 'that reboot')}, then reboot it {reboot}"
        else:
            fallback = f"reboot it {reboot}"
        lines.append(f"would ask the node's agent to reset {', '.join(gpus)}; if the GPUs do not come back, {fallback}")
    else:
        lines.append(f"would reboot {node} {reboot}")
    lines.append(
        f"after a reboot, would wait up to {repair.node_ready_timeout} for {node} to be Ready on a new boot ID; "
        f"then up to {repair.verify_timeout} for its GPUs to report healthy"
    )
    return lines


def _beyond_repair(survey: NodeSurvey, repair: RepairPolicy, action: RecommendedAction) -> str:
    """What a run does with a node the repair did not fix: replace its machine, or ask a person."""
    if beyond_repair(repair, action, "").next is not Next.REPLACE:
        return "escalate to a person"
    if not survey.replaces:
        provider = survey.provider or "no provider"
        return f"escalate to a person ({provider} cannot terminate machines, so repair.replace cannot apply)"
    timeout = repair.replace_timeout
    asked = (
        f"{_approval(repair, action, 'terminating the machine')}, then "
        if needs_approval(repair, action, survey.labels)
        else ""
    )
    return (
        f"{asked}have {survey.provider} terminate the machine of {survey.node} for its group to replace, "
        f"then wait up to {timeout} for the node to be deleted"
    )


def _approval(repair: RepairPolicy, action: RecommendedAction, what: str) -> str:
    """The wait for a person's approval of `what`, as the policy bounds it."""
    wait = approval_wait(repair, action)
    if wait != repair.approval_timeout:
        return f"wait up to {wait} for a person to approve {what}, then approve it on gpuheal's behalf"
    return f"wait up to {wait} for a person to approve {what} (a rejection, or no decision, escalates)"


def _name(pod: PodRef) -> str:
    return f"{pod.namespace}/{pod.name}"
