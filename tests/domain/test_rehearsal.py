"""A dry run's plan for what the node looks like: held, cordoned already, and with no provider."""

from __future__ import annotations

from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.policy import RemediationPolicy, RepairPolicy
from gpuheal.domain.rehearsal import rehearse
from gpuheal.domain.steps import NodeSurvey

HELD_AND_CORDONED = NodeSurvey(
    node="n1",
    exists=True,
    held=True,
    unschedulable=True,
    labels={"pool": "h100-prod"},
    provider_problem="no configured provider owns node n1 (providerID ''; configured: aws)",
)


def test_a_held_node_cordoned_already_with_no_provider_in_a_pool_a_person_approves() -> None:
    policy = RemediationPolicy(repair=RepairPolicy(approval_node_selector={"pool": "h100-prod"}))

    plan = rehearse(HELD_AND_CORDONED, policy, RecommendedAction.RESTART_VM, ["GPU-a"], "")

    assert plan[0] == "would wait, touching nothing, while n1 is labelled gpuheal.io/hold=true"
    assert "would cordon n1 and taint it gpuheal.io/gpu-fault:NoSchedule (it is cordoned already)" in plan
    assert "would find no pods to move" in plan
    assert "would wait up to 1 day, 0:00:00 for a person to approve the repair" in plan
    assert (
        "would escalate to a person, as no provider would reboot it: no configured provider owns node n1 "
        "(providerID ''; configured: aws)"
    ) in plan
    assert plan[-1] == "would then remove the taint and leave it cordoned, as it was before"


def test_a_node_that_is_gone_gets_no_plan() -> None:
    plan = rehearse(NodeSurvey(node="n1", exists=False), RemediationPolicy(), RecommendedAction.RESTART_VM, [], "")

    assert plan == ["node n1 does not exist: nothing would be done"]
