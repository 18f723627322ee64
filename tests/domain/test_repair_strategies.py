"""`repair.strategies`: how the faults of each action are repaired, above the `gpu_reset` rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from gpuheal.domain import decisions
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.decisions import Rung
from gpuheal.domain.policy import RepairPolicy, RepairStrategy

RESET, VM, BM = RecommendedAction.COMPONENT_RESET, RecommendedAction.RESTART_VM, RecommendedAction.RESTART_BM


def test_without_strategies_gpu_resets_for_component_resets_and_reboots_for_the_rest() -> None:
    default, no_resets = RepairPolicy(), RepairPolicy(gpu_reset=False)

    assert [default.strategy_for(a) for a in (RESET, VM, BM)] == ["gpu-reset", "reboot", "reboot"]
    assert no_resets.strategy_for(RESET) is RepairStrategy.REBOOT
    assert decisions.first_rung(RESET, default, ["GPU-a"]) is Rung.RESET_GPUS
    assert decisions.first_rung(RESET, default, []) is Rung.REBOOT  # a reset needs the GPUs named


def test_a_strategy_overrides_the_rule_and_a_person_s_repair_goes_through_the_manual_provider() -> None:
    policy = RepairPolicy(
        provider="aws",
        gpu_reset=False,
        strategies={"RESTART_VM": "gpu-reset", "RESTART_BM": "person", "COMPONENT_RESET": "gpu-reset"},
        auto_approve_after=timedelta(minutes=10),
    )

    assert decisions.first_rung(VM, policy, ["GPU-a"]) is Rung.RESET_GPUS
    assert decisions.first_rung(RESET, policy, ["GPU-a"]) is Rung.RESET_GPUS
    assert (policy.provider_for(VM), policy.provider_for(BM)) == ("aws", "manual")
    # A person's repair waits for them, the whole timeout: an auto-approval cannot say it is done.
    assert decisions.needs_approval(policy, BM, {}) and not decisions.needs_approval(policy, VM, {})
    assert decisions.approval_wait(policy, BM) == policy.approval_timeout
    assert decisions.auto_approval(policy, BM, datetime.now(UTC)) is None


def test_an_unknown_strategy_or_action_is_refused() -> None:
    with pytest.raises(ValidationError, match="reimage"):
        RepairPolicy(strategies={"RESTART_VM": "reimage"})
    with pytest.raises(ValidationError, match="unknown recommended action 'REBOOT'"):
        RepairPolicy(strategies={"REBOOT": "person"})
