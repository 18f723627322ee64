"""The rules: which signals make a GPU unhealthy, with which action, and how a verdict lands in a status."""

from __future__ import annotations

from datetime import UTC, datetime

from gpuheal.agents.nvml import HealthSignals, RemappedRows
from gpuheal.agents.nvml.status import healthy_condition, merge_status, new_status
from gpuheal.agents.nvml.verdict import (
    CONDITION_HEALTHY,
    HEALTHY,
    Check,
    lost_problems,
    polled_problems,
    verdict,
    xid_problem,
)
from gpuheal.domain.actions import RecommendedAction
from gpuheal.protos import gpu_pb2

T0 = datetime(2025, 1, 1, tzinfo=UTC)
T1 = datetime(2025, 1, 1, 0, 5, tzinfo=UTC)
CLEAN = HealthSignals(0, 0, False, RemappedRows(0, 0, False, False))
UNKNOWN = HealthSignals()


def test_each_bad_signal_raises_its_problem_with_the_documented_action() -> None:
    bad = HealthSignals(1, 5, True, RemappedRows(2, 1, True, True))
    problems = polled_problems({}, bad)
    assert {check: p.action for check, p in problems.items()} == {
        Check.ECC_DBE: RecommendedAction.COMPONENT_RESET,
        Check.RETIRED_PAGES_PENDING: RecommendedAction.COMPONENT_RESET,
        Check.ROW_REMAP_PENDING: RecommendedAction.COMPONENT_RESET,
        Check.ROW_REMAP_FAILURE: RecommendedAction.CONTACT_SUPPORT,
    }
    assert polled_problems(problems, CLEAN) == {}


def test_unknown_signals_keep_the_previous_verdict_either_way() -> None:
    assert polled_problems({}, UNKNOWN) == {}
    failing = polled_problems({}, HealthSignals(remapped_rows=RemappedRows(0, 0, False, True)))
    assert set(polled_problems(failing, UNKNOWN)) == {Check.ROW_REMAP_FAILURE}


def test_a_lost_gpu_is_lost_until_it_answers_again() -> None:
    lost = lost_problems({}, "GPU is lost")
    assert lost[Check.GPU_LOST].action is RecommendedAction.RESTART_BM
    assert polled_problems(lost, UNKNOWN) == {}  # it answered, even if with nothing known


def test_xid_problems_take_the_catalogs_action() -> None:
    assert xid_problem(79).action is RecommendedAction.RESTART_BM
    assert xid_problem(13).action is RecommendedAction.NONE
    assert xid_problem(48).action is RecommendedAction.COMPONENT_RESET
    assert xid_problem(99999).action is RecommendedAction.CONTACT_SUPPORT  # not in the catalog
    assert "ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS" in xid_problem(79).message


def test_the_verdict_takes_the_most_drastic_problem_and_lists_them_all() -> None:
    assert verdict([]) == HEALTHY
    problems = [*polled_problems({}, HealthSignals(ecc_dbe_volatile=1)).values(), xid_problem(79)]
    result = verdict(problems)
    assert (result.healthy, result.status, result.reason, result.action) == (
        False,
        "False",
        "NvmlXidCriticalError",
        RecommendedAction.RESTART_BM,
    )
    assert "double-bit" in result.message and "XID 79" in result.message


def test_merge_keeps_other_conditions_and_moves_the_transition_time_only_on_a_flip() -> None:
    status = new_status(HEALTHY, T0)
    status.conditions.add(type="Other", status="True", reason="Elsewhere")
    bad = verdict([xid_problem(79)])
    merged = merge_status(status, bad, T1)
    assert merged is not None
    assert [c.type for c in merged.conditions] == [CONDITION_HEALTHY, "Other"]
    cond = healthy_condition(merged)
    assert cond is not None and cond.status == "False" and cond.last_transition_time.ToDatetime(UTC) == T1
    assert merged.recommended_action == "RESTART_BM"
    assert merge_status(merged, bad, T1) is None  # nothing changed: nothing to write
    worse = merge_status(merged, verdict([xid_problem(79), xid_problem(48)]), T0)
    assert worse is not None
    cond = healthy_condition(worse)
    assert cond is not None and cond.last_transition_time.ToDatetime(UTC) == T1  # still False: no flip


def test_a_healthy_verdict_never_clears_another_writers_fault_nor_lowers_its_action() -> None:
    status = gpu_pb2.GpuStatus(recommended_action="RESTART_VM")
    status.conditions.add(type=CONDITION_HEALTHY, status="False", reason="KernelXid")
    assert merge_status(status, HEALTHY, T1) is None
    merged = merge_status(status, verdict([xid_problem(48)]), T1)  # COMPONENT_RESET < RESTART_VM
    assert merged is not None and merged.recommended_action == "RESTART_VM"
    ours = merge_status(merged, HEALTHY, T1)  # the condition is ours now: recovery may clear it
    assert ours is not None and ours.recommended_action == ""
    cond = healthy_condition(ours)
    assert cond is not None and (cond.status, cond.reason) == ("True", "NvmlHealthy")
