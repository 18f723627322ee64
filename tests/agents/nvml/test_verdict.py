"""The rules: which signals make a GPU unhealthy, and with which action."""

from __future__ import annotations

from gpuheal.agents.nvml import HealthSignals, RemappedRows
from gpuheal.agents.nvml.verdict import Check, lost_problems, polled_problems, xid_problem
from gpuheal.domain.actions import RecommendedAction

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
