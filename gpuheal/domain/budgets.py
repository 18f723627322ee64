"""PodDisruptionBudgets as the drain sees them, and the rule for a budget that can never let a pod go.

A drain retries pods a budget refuses (HTTP 429): usually the budget is only exhausted for now,
while the pods it guards are being replaced. Some budgets can never allow a disruption as they
stand, and retrying them only burns the drain timeout:

* the disruption controller could not compute the budget (``DisruptionAllowed=False`` with reason
  ``SyncFailed``; e.g. ``maxUnavailable`` over a Job's pods, which have no controller with a scale);
* the budget forbids every voluntary disruption by its spec (``maxUnavailable: 0`` or ``0%``,
  ``minAvailable: 100%``);
* the controller's status, current for the budget's generation, needs every pod it expects to be
  healthy (``desiredHealthy >= expectedPods``, e.g. an integer ``minAvailable`` equal to the pods it
  selects, or ``maxUnavailable`` over pods without a controller, which expects none).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

SYNC_FAILED = "SyncFailed"


class DisruptionBudget(BaseModel):
    """What a PodDisruptionBudget says: its bounds and the disruption controller's status."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str
    name: str
    min_available: int | str | None = None
    max_unavailable: int | str | None = None
    generation: int = 0
    observed_generation: int = 0
    expected_pods: int = 0
    desired_healthy: int = 0
    current_healthy: int = 0
    disruptions_allowed: int = 0
    # The DisruptionAllowed condition's reason and message ("" when the budget has none yet).
    condition_reason: str = ""
    condition_message: str = ""

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def never_allows(budget: DisruptionBudget) -> str | None:
    """Why this budget can never allow a disruption as it stands, or None when waiting may help."""
    if budget.condition_reason == SYNC_FAILED:
        return f"the disruption controller cannot compute it ({SYNC_FAILED}): {budget.condition_message}"
    if _zero(budget.max_unavailable):
        return f"maxUnavailable is {budget.max_unavailable}: it allows no voluntary disruption"
    if budget.min_available == "100%":
        return "minAvailable is 100%: every pod it selects must stay"
    if budget.observed_generation >= budget.generation and budget.desired_healthy >= budget.expected_pods:
        return (
            f"it needs {budget.desired_healthy} healthy pod(s) and expects {budget.expected_pods}, "
            "so no pod it guards may ever go"
        )
    return None


def _zero(bound: int | str | None) -> bool:
    return bound == 0 or bound == "0%"
