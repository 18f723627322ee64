"""`repair.strategies`: how the faults of each action are repaired, above the `gpu_reset` rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from gpuheal.domain import decisions
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.decisions import Rung
from gpuheal.domain.policy import RepairPolicy, RepairStrategy
from gpuheal.domain.remediation import RecordedDecision

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


def test_an_approval_for_one_kind_of_repair_is_asked_again_when_the_faults_call_for_the_other() -> None:
    """Given for a reboot, an approval does not say a person repaired the node; given for a person's
    repair, it does not allow a reboot. Without strategies nothing changes: an approval stands."""
    policy = RepairPolicy(strategies={BM: "person"}, approval_for=frozenset({VM}))
    approved = RecordedDecision(approved=True, approver="alice", reason="ok", at=datetime.now(UTC))

    assert decisions.reboot_needs_approval(policy, BM, False, approved, decided_as_person=False)
    assert decisions.reboot_needs_approval(policy, VM, False, approved, decided_as_person=True)
    assert not decisions.reboot_needs_approval(policy, BM, False, approved, decided_as_person=True)
    assert not decisions.reboot_needs_approval(RepairPolicy(approval_for=frozenset({VM})), BM, True, approved)
    # Nobody decided yet: a repair left to a person, and a reset's fallback reboot to one, are asked for.
    assert decisions.reboot_needs_approval(policy, BM, False, None)
    assert decisions.reboot_needs_approval(RepairPolicy(strategies={VM: "person"}), VM, True, None)


def test_strategies_for_no_repair_or_a_reset_of_what_needs_a_person_are_refused() -> None:
    with pytest.raises(ValidationError, match="NONE calls for no repair"):
        RepairPolicy(strategies={"NONE": "reboot"})
    with pytest.raises(ValidationError, match="a GPU reset cannot repair REPLACE_VM, which needs a person"):
        RepairPolicy(strategies={"REPLACE_VM": "gpu-reset"})
