"""The rule for a PodDisruptionBudget that can never allow a disruption (pure, no cluster)."""

from __future__ import annotations

import pytest

from gpuheal.domain.budgets import DisruptionBudget, never_allows


def budget(**fields: object) -> DisruptionBudget:
    """A synced budget over 4 expected pods, 3 needed, 3 healthy now: exhausted, not hopeless."""
    base: dict[str, object] = {
        "namespace": "ml",
        "name": "trainer-pdb",
        "min_available": 3,
        "generation": 2,
        "observed_generation": 2,
        "expected_pods": 4,
        "desired_healthy": 3,
        "current_healthy": 3,
        "condition_reason": "InsufficientPods",
    }
    return DisruptionBudget.model_validate({**base, **fields})


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        pytest.param(
            {"min_available": None, "max_unavailable": 1, "condition_reason": "SyncFailed", "condition_message": "x"},
            "the disruption controller cannot compute it (SyncFailed): x",
            id="sync-failed-even-with-a-stale-generation",
        ),
        pytest.param(
            {"min_available": None, "max_unavailable": 0, "observed_generation": 1},
            "maxUnavailable is 0: it allows no voluntary disruption",
            id="max-unavailable-0",
        ),
        pytest.param(
            {"min_available": None, "max_unavailable": "0%"},
            "maxUnavailable is 0%: it allows no voluntary disruption",
            id="max-unavailable-0-percent",
        ),
        pytest.param(
            {"min_available": "100%", "observed_generation": 0},
            "minAvailable is 100%: every pod it selects must stay",
            id="min-available-100-percent",
        ),
        pytest.param(
            {"min_available": 4, "desired_healthy": 4, "current_healthy": 4},
            "it needs 4 healthy pod(s) and expects 4, so no pod it guards may ever go",
            id="min-available-equals-the-pods",
        ),
        pytest.param(
            {
                "min_available": None,
                "max_unavailable": 1,
                "expected_pods": 0,
                "desired_healthy": 0,
                "current_healthy": 2,
            },
            "it needs 0 healthy pod(s) and expects 0, so no pod it guards may ever go",
            id="unmanaged-pods-expect-none",
        ),
    ],
)
def test_budgets_that_never_allow_a_disruption(fields: dict[str, object], why: str) -> None:
    assert never_allows(budget(**fields)) == why


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({}, id="exhausted-while-a-pod-is-replaced"),
        pytest.param({"min_available": None, "max_unavailable": 1}, id="max-unavailable-1"),
        pytest.param({"min_available": "75%"}, id="a-percentage-below-100"),
        pytest.param(
            {"min_available": 4, "desired_healthy": 4, "observed_generation": 1, "condition_reason": ""},
            id="status-not-yet-processed-for-this-generation",
        ),
        pytest.param(
            {"current_healthy": 4, "disruptions_allowed": 1, "condition_reason": "SufficientPods"}, id="allows"
        ),
    ],
)
def test_budgets_worth_waiting_for(fields: dict[str, object]) -> None:
    assert never_allows(budget(**fields)) is None


def test_ref_names_namespace_and_budget() -> None:
    assert budget().ref == "ml/trainer-pdb"
