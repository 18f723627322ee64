"""The governor's rules without Temporal: the budget's limit, groups, the breaker and the pause."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from gpuheal.domain.fleet import (
    BreakerPolicy,
    FleetBudget,
    FleetPolicy,
    GovernorState,
    HeldPermit,
    PermitRequest,
    Waiting,
    choose,
)
from gpuheal.domain.operator import ActionRefused, OperatorAction, RecordedAction, check_who_and_why

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def request(node: str, **labels: str) -> Waiting:
    return Waiting(
        request=PermitRequest(
            permit_id=f"remediate-{node}/run",
            workflow_id=f"remediate-{node}",
            run_id="run",
            node=node,
            asked_at=NOW,
            labels=labels,
        )
    )


def held(node: str, group: str = "") -> HeldPermit:
    return HeldPermit(
        permit_id=f"remediate-{node}/run",
        workflow_id=f"remediate-{node}",
        run_id="run",
        node=node,
        group=group,
        granted_at=NOW,
    )


def granted(policy: FleetPolicy, state: GovernorState) -> list[str]:
    return [r.node for r in choose(policy, state, NOW).grant]


@pytest.mark.parametrize(
    ("max_concurrent", "max_percent", "gpu_nodes", "limit"),
    [(10, 10.0, 1000, 10), (500, 10.0, 1000, 100), (10, 10.0, 4, 1), (10, 10.0, 0, 1), (3, 100.0, 2, 2)],
)
def test_the_limit_is_the_smaller_of_the_count_and_the_share_but_one_at_least(
    max_concurrent: int, max_percent: float, gpu_nodes: int, limit: int
) -> None:
    assert FleetBudget(max_concurrent=max_concurrent, max_percent=max_percent).limit(gpu_nodes) == limit


def test_permits_go_in_arrival_order_up_to_the_limit() -> None:
    policy = FleetPolicy(budget=FleetBudget(max_concurrent=3, max_percent=100))
    state = GovernorState(held=(held("a"),), waiting=(request("b"), request("c"), request("d")), gpu_nodes=10)

    choice = choose(policy, state, NOW)

    assert [r.node for r in choice.grant] == ["b", "c"]
    assert choice.why == {"remediate-d/run": "budget full: 3 of 3 remediations under way"}


def test_a_full_group_waits_without_holding_back_other_groups() -> None:
    policy = FleetPolicy(budget=FleetBudget(max_concurrent=10, max_percent=100, group_label="rack", max_per_group=1))
    state = GovernorState(
        held=(held("a", "r1"),),
        waiting=(request("b", rack="r1"), request("c", rack="r2"), request("d", rack="r2"), request("e")),
        gpu_nodes=10,
    )

    choice = choose(policy, state, NOW)

    assert [r.node for r in choice.grant] == ["c", "e"], "a node without the label belongs to no group"
    assert choice.why["remediate-b/run"] == "group rack=r1 full: 1 of 1 under way"
    assert choice.why["remediate-d/run"] == "group rack=r2 full: 1 of 1 under way"


def test_an_ask_carries_only_the_label_that_names_its_group() -> None:
    labels = {"sim.gpuheal.io/rack": "r3", "nvidia.com/gpu.product": "H100", "kubernetes.io/hostname": "n1"}

    assert FleetBudget(group_label="sim.gpuheal.io/rack").naming_group(labels) == {"sim.gpuheal.io/rack": "r3"}
    assert FleetBudget(group_label="topology.kubernetes.io/zone").naming_group(labels) == {}
    assert FleetBudget().naming_group(labels) == {}, "no groups: no labels"


def test_the_breaker_trips_when_the_window_holds_its_threshold_and_the_rest_wait() -> None:
    policy = FleetPolicy(
        budget=FleetBudget(max_concurrent=100, max_percent=100), breaker=BreakerPolicy(share=0.1, at_least=2)
    )
    older = NOW - timedelta(hours=2)  # outside the window: does not count
    state = GovernorState(
        waiting=tuple(request(n) for n in "abcdefghijklmn"),
        recent_grants=(older, older, NOW - timedelta(minutes=5)),
        gpu_nodes=100,
    )

    choice = choose(policy, state, NOW)

    assert len(choice.grant) == 9, "10% of 100 GPU nodes: 1 in the window, 9 more"
    assert choice.trip == "10 GPU nodes quarantined within 1:00:00 (threshold 10 of 100 GPU nodes)"
    assert set(choice.why) == {f"remediate-{n}/run" for n in "jklmn"}


def test_a_small_fleet_trips_only_at_the_least_count() -> None:
    assert BreakerPolicy(share=0.2, at_least=5).threshold(4) == 5
    assert BreakerPolicy(share=0.2, at_least=5).threshold(1000) == 200


@pytest.mark.parametrize("stopped", ["paused", "tripped"])
def test_nothing_is_granted_while_paused_or_tripped(stopped: str) -> None:
    action = RecordedAction(action=stopped, by="alice", reason="rollout", at=NOW)
    state = GovernorState(waiting=(request("a"),), gpu_nodes=10, **{stopped: action})

    choice = choose(FleetPolicy(), state, NOW)

    assert choice.grant == ()
    prefix = "paused by alice" if stopped == "paused" else "circuit breaker tripped: rollout"
    assert choice.why["remediate-a/run"].startswith(prefix)


def test_an_action_names_who_and_why() -> None:
    with pytest.raises(ValidationError):
        OperatorAction(by="", reason="x")
    with pytest.raises(ActionRefused, match="say why"):
        check_who_and_why("alice", "   ")
    check_who_and_why("alice", "rollout")


def test_limits_out_of_range_are_refused() -> None:
    with pytest.raises(ValidationError, match="max_percent"):
        FleetBudget(max_percent=0)
    with pytest.raises(ValidationError, match="share"):
        BreakerPolicy(share=1.5)
