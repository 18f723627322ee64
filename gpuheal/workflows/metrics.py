"""gpuheal's metrics as workflows record them, through `workflow.metric_meter()`.

The SDK's workflow meter records nothing while a history is replayed, so a worker that takes over a
remediation counts only what happens from then on. A workflow task that fails after recording is
retried live, not replayed: its steps are counted again (README, Metrics). Recording is no command:
these calls leave the history as it was. The names follow Prometheus conventions once the
worker's exporter (gpuheal.worker.process_runtime) adds `_total` to counters.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from gpuheal.domain.actions import RecommendedAction
    from gpuheal.domain.decisions import ResetOutcome
    from gpuheal.domain.faults import Fault
    from gpuheal.domain.phases import Phase
    from gpuheal.domain.remediation import PhaseEntry

STARTED = "gpuheal_remediations_started"
FINISHED = "gpuheal_remediations_finished"
ESCALATED = "gpuheal_remediations_escalated"
PHASE_DURATION = "gpuheal_remediation_phase_duration_seconds"
FAULT_TO_CORDON = "gpuheal_fault_to_cordon_seconds"
FAULT_TO_SERVICE = "gpuheal_fault_to_service_seconds"
GPU_RESETS = "gpuheal_gpu_resets"


def phase_entered(
    history: Sequence[PhaseEntry], phase: Phase, action: RecommendedAction, faults: Sequence[Fault]
) -> None:
    """Record what entering `phase` ends or reaches, given the phases entered before it (`history`)."""
    meter = workflow.metric_meter()
    now = workflow.now()
    labels = {"action": action.name}
    if not history:
        meter.create_counter(STARTED, "Remediations started.").add(1, labels)
        return
    left = history[-1].phase
    if left is phase:  # entered again: still the same stay
        return
    meter.create_histogram_timedelta(
        PHASE_DURATION, "Time a remediation spent in a phase, recorded as it leaves it.", "s"
    ).record(_elapsed(_stay_began(history), now), {"phase": left.value})
    first_fault = _first_fault_at(history, faults)
    if phase is Phase.QUARANTINED and all(entry.phase is not Phase.QUARANTINED for entry in history):
        meter.create_histogram_timedelta(
            FAULT_TO_CORDON, "Time from a remediation's first fault to its node cordoned.", "s"
        ).record(_elapsed(first_fault, now))
    if phase is Phase.ESCALATED:
        meter.create_counter(ESCALATED, "Remediations escalated to a person.").add(1, labels)
    if phase is Phase.RESOLVED:
        meter.create_histogram_timedelta(
            FAULT_TO_SERVICE, "Time from a remediation's first fault to its node back in service.", "s"
        ).record(_elapsed(first_fault, now))
    if phase.is_final:
        meter.create_counter(FINISHED, "Remediations ended, by their final phase.").add(
            1, {"outcome": phase.value, **labels}
        )


def gpu_reset(outcome: ResetOutcome) -> None:
    """Count a GPU reset by how it ended (repaired, failed, unanswered, unhealthy, …)."""
    workflow.metric_meter().create_counter(GPU_RESETS, "GPU resets ordered, by how they ended.").add(
        1, {"result": outcome.value}
    )


def _stay_began(history: Sequence[PhaseEntry]) -> datetime:
    """When the run entered the phase it is in (re-entries of the same phase continue one stay)."""
    began = history[-1].entered_at
    for entry in reversed(history):
        if entry.phase is not history[-1].phase:
            break
        began = entry.entered_at
    return began


def _first_fault_at(history: Sequence[PhaseEntry], faults: Sequence[Fault]) -> datetime:
    """When the first fault was detected, or the run began where the detector did not say."""
    detected = faults[0].detected_at if faults else None
    return detected or history[0].entered_at


def _elapsed(since: datetime, now: datetime) -> timedelta:
    # A detector's clock may run ahead of the server's: never a negative figure.
    return max(now - since, timedelta(0))
