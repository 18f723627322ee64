"""A dry run's plan says what a real run would do, for what the node and the policy are."""

from __future__ import annotations

from datetime import timedelta

from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.policy import RemediationPolicy, RepairPolicy, ValidationPolicy
from gpuheal.domain.rehearsal import rehearse
from gpuheal.domain.steps import NodeSurvey, PodRef

NODE = NodeSurvey(node="n1", exists=True, provider="aws", provider_id="aws:///us-east-1a/i-0abc", pod_count=0)


def plan(
    survey: NodeSurvey = NODE, action: RecommendedAction = RecommendedAction.RESTART_VM, **repair: object
) -> list[str]:
    return rehearse(survey, RemediationPolicy(repair=RepairPolicy(**repair)), action, ["GPU-a"], "")


def test_a_held_node_cordoned_already_with_no_provider_in_a_pool_a_person_approves() -> None:
    survey = NODE.model_copy(
        update={
            "held": True,
            "cordoned_before": True,
            "labels": {"pool": "h100-prod"},
            "provider": "",
            "provider_problem": "no configured provider owns node n1 (providerID ''; configured: aws)",
        }
    )

    said = plan(survey, approval_node_selector={"pool": "h100-prod"})

    assert said[0] == "would wait, touching nothing, while n1 is labelled gpuheal.io/hold=true"
    assert "would cordon n1 and taint it gpuheal.io/gpu-fault:NoSchedule (it is cordoned already)" in said
    assert "would find no pods to move" in said
    assert (
        "would wait up to 1 day, 0:00:00 for a person to approve the repair (a rejection, or no decision, escalates)"
    ) in said
    assert (
        "would escalate to a person, as no provider would repair n1: no configured provider owns node n1 "
        "(providerID ''; configured: aws)"
    ) in said
    assert said[-1] == "would then remove the taint and leave it cordoned, as it was before"


def test_a_gpu_reset_s_fallback_reboot_asks_a_person_where_the_policy_names_reboots() -> None:
    said = plan(action=RecommendedAction.COMPONENT_RESET, approval_for=frozenset({RecommendedAction.RESTART_BM}))

    assert not any("approve the repair" in line for line in said)  # the reset itself runs by itself
    assert (
        "would ask the node's agent to reset GPU-a; if the GPUs do not come back, wait up to 1 day, 0:00:00 for a "
        "person to approve that reboot (a rejection, or no decision, escalates), then reboot it through aws "
        "(providerID aws:///us-east-1a/i-0abc)"
    ) in said
    person = plan(action=RecommendedAction.COMPONENT_RESET, strategies={RecommendedAction.RESTART_VM: "person"})
    assert (
        "would ask the node's agent to reset GPU-a; if the GPUs do not come back, wait for a person to repair it, "
        "whose approval says it is done (no machine is called)"
    ) in person


def test_auto_approval_a_graceful_restart_and_a_person_s_repair() -> None:
    auto = plan(auto_approve_after=timedelta(minutes=15))
    graceful = plan(
        NODE.model_copy(update={"graceful": True}), graceful_timeout=timedelta(minutes=5), require_approval=False
    )
    manual = plan(NODE.model_copy(update={"provider": "manual", "reboots": False}))

    assert not any("approve" in line for line in auto)  # RESTART_VM asks nobody by default
    assert "wait up to 0:15:00 for a person to approve the repair, then approve it on gpuheal's behalf" in "\n".join(
        plan(require_approval=True, auto_approve_after=timedelta(minutes=15))
    )
    assert (
        "would reboot n1 gracefully through aws (providerID aws:///us-east-1a/i-0abc), forcing it if the restart "
        "has not begun within 0:05:00"
    ) in graceful
    assert "would leave the repair to a person (manual): no machine would be called" in manual
    assert not any("new boot ID" in line for line in manual)


def test_an_unmanaged_node_an_ungoverned_fleet_and_a_node_of_thousands_of_pods() -> None:
    unmanaged = plan(NODE.model_copy(update={"managed": False}))
    ungoverned = plan(NODE.model_copy(update={"governed": False}))
    pods = tuple(PodRef(namespace="ml", name=f"p{n}") for n in range(100))
    crowded = plan(NODE.model_copy(update={"pods": pods, "terminating": pods[:2], "pod_count": 5000}))

    assert unmanaged == [
        "would ask the fleet governor for a permit, and wait in AwaitingBudget until it grants one",
        "would then find n1 labelled gpuheal.io/managed=false and end, touching nothing",
    ]
    assert not any("permit" in line for line in ungoverned)
    assert "would wait for ml/p1, terminating already" in crowded
    assert "… and 4948 more pods, each by its namespace's drain mode" in crowded
    assert len(crowded) < 80


def test_a_node_that_is_gone_gets_no_plan() -> None:
    assert plan(NodeSurvey(node="n1", exists=False)) == ["node n1 does not exist: nothing would be done"]


def test_a_policy_that_replaces_says_so_where_the_provider_can_and_where_it_cannot() -> None:
    replacing = NODE.model_copy(update={"replaces": True})

    said = plan(replacing, replace=True)
    offender = rehearse(
        replacing, RemediationPolicy(repair=RepairPolicy(replace=True)), RecommendedAction.RESTART_VM, [], "repeat"
    )
    cannot = plan(NODE, replace=True)

    assert (
        "if n1 did not come back or its GPUs stayed unhealthy, would have aws terminate the machine of n1 for its "
        "group to replace, then wait up to 0:15:00 for the node to be deleted"
    ) in said
    assert said[-1] == "would then remove the taint and uncordon it"
    assert offender[-1] == (
        "would have aws terminate the machine of n1 for its group to replace, then wait up to 0:15:00 for the node "
        "to be deleted instead of repairing again: repeat"
    )
    assert (
        "if n1 did not come back or its GPUs stayed unhealthy, would escalate to a person (aws cannot terminate "
        "machines, so repair.replace cannot apply)"
    ) in cannot
    assert not any("terminate" in line for line in plan(replacing))


def test_a_policy_that_validates_says_which_check_and_what_a_failure_does() -> None:
    said = rehearse(
        NODE.model_copy(update={"replaces": True}),
        RemediationPolicy(repair=RepairPolicy(replace=True), validation=ValidationPolicy(level=2)),
        RecommendedAction.RESTART_VM,
        [],
        "",
    )

    assert (
        "then would have the node's agent run a level 2 GPU check (dcgmi diag -r 2, or NVML's where DCGM is absent), "
        "waiting up to 0:45:00; n1 stays out of service if it fails"
    ) in said
    assert any(
        line.startswith("if n1 did not come back or its GPUs stayed unhealthy or failed their check") for line in said
    )


def test_a_replacement_a_person_must_approve_says_so() -> None:
    said = plan(NODE.model_copy(update={"replaces": True}), replace=True, require_approval=True)

    assert any(
        line.endswith(
            "would wait up to 1 day, 0:00:00 for a person to approve terminating the machine (a rejection, or no "
            "decision, escalates), then have aws terminate the machine of n1 for its group to replace, then wait up "
            "to 0:15:00 for the node to be deleted"
        )
        for line in said
    ), said
