"""Determinism: every recorded history replays under the current workflow code.

`histories/<release>/` holds the runs of each release's scenarios (record_history.py records them);
the files at the top are runs of particular commits from before releases were recorded, each kept for
the rolling upgrade it shows. None is recorded again: a run that code started may still be open when
the workers are upgraded, and must go on under the new code. A change to what a workflow commands
fails here unless it is behind `workflow.patched` (CONTRIBUTING.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from gpuheal.domain.decisions import PersonAction
from gpuheal.domain.fleet import (
    COLLECT_ALL_SIGNAL,
    COLLECT_SIGNAL,
    GOVERNOR,
    GOVERNOR_ID,
    PERMIT_SIGNAL,
    RELEASE_SIGNAL,
)
from gpuheal.domain.marks import workflow_id_for
from gpuheal.domain.phases import Phase
from gpuheal.domain.remediation import RemediationInput, RemediationStatus
from gpuheal.domain.remediation_contract import FAULT_SIGNAL, REMEDIATION
from gpuheal.domain.steps import NodeRef, Step
from gpuheal.workflows.governor import GovernorWorkflow
from gpuheal.workflows.remediation import RemediationWorkflow
from tests.workflows.record_history import HISTORIES, SCENARIOS

RECORDED = sorted(HISTORIES.rglob("*.json"))
# The first release whose patch stands for the patches before it (gpuheal.workflows.patches).
FOLDING_SINCE = (0, 2, 0)
# The first release whose remediations give their permit back by a local step, not a signal of their own.
RETURNING_BY_STEP_SINCE = (0, 3, 0)
CONVERTER = pydantic_data_converter.payload_converter


def named(path: Path) -> str:
    return str(path.relative_to(HISTORIES))


def load(path: Path) -> WorkflowHistory:
    """The history in `path`, under the workflow id of its run: a remediation's permit is asked for by
    its workflow id, which its replay must see as recorded; the governor's is `gpuheal-governor`."""
    history = WorkflowHistory.from_json("", path.read_text())
    started = history.events[0].workflow_execution_started_event_attributes
    if started.workflow_type.name == GOVERNOR.name:
        return WorkflowHistory(GOVERNOR_ID, history.events)
    [request] = CONVERTER.from_payloads(started.input.payloads, [RemediationInput])
    return WorkflowHistory(workflow_id_for(request.node), history.events)


async def replay(history: WorkflowHistory, *workflows: type) -> None:
    """Replay `history` under `workflows`; a command that differs from the recorded one raises."""
    replayer = Replayer(workflows=workflows, data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)


@pytest.mark.parametrize("path", RECORDED, ids=named)
async def test_every_recorded_history_replays_under_the_current_code(path: Path) -> None:
    await replay(load(path), RemediationWorkflow, GovernorWorkflow)


# ---- what each history shows ------------------------------------------------------------------


def steps(history: WorkflowHistory) -> list[str]:
    """The activities the run ran, local ones (recorded as markers) included, in order."""
    ran = []
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            ran.append(event.activity_task_scheduled_event_attributes.activity_type.name)
        elif event.marker_recorded_event_attributes.marker_name == "core_local_activity":
            [data] = event.marker_recorded_event_attributes.details["data"].payloads
            ran.append(json.loads(data.data)["activity_type"])
    return ran


def patch_markers(history: WorkflowHistory) -> list[str]:
    """The patches the run recorded as applied, in order."""
    markers = [
        e.marker_recorded_event_attributes for e in history.events if e.HasField("marker_recorded_event_attributes")
    ]
    return [
        json.loads(m.details["patch-data"].payloads[0].data)["id"] for m in markers if m.marker_name == "core_patch"
    ]


def signals(history: WorkflowHistory) -> list[str]:
    return [
        e.workflow_execution_signaled_event_attributes.signal_name
        for e in _having(history, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED)
    ]


def updates(history: WorkflowHistory) -> list[str]:
    """The Updates the run accepted (a person's decisions and actions), in order."""
    accepted = _having(history, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED)
    return [e.workflow_execution_update_accepted_event_attributes.accepted_request.input.name for e in accepted]


def phases(history: WorkflowHistory) -> list[Phase]:
    """The phases the run entered, in order (each once where entered again in a row), as its result
    has them: a run of 0.2.0 or later publishes once per activation, so the search attributes it
    upserted skip a phase it entered and left in one activation."""
    entered = [entry.phase for entry in result(history).history]
    return [phase for i, phase in enumerate(entered) if entered[i - 1 : i] != [phase]]


def ending(history: WorkflowHistory) -> Phase:
    """The phase the remediation completed in."""
    return result(history).phase


def result(history: WorkflowHistory) -> RemediationStatus:
    """What the remediation completed with."""
    last = history.events[-1]
    assert last.HasField("workflow_execution_completed_event_attributes"), "a complete, closed run"
    [status] = CONVERTER.from_payloads(
        last.workflow_execution_completed_event_attributes.result.payloads, [RemediationStatus]
    )
    assert isinstance(status, RemediationStatus)
    return status


def _having(history: WorkflowHistory, kind: EventType.ValueType) -> list[HistoryEvent]:
    return [e for e in history.events if e.event_type == kind]


# The phases of a remediation that reboots its node once, nobody asked and no wait for a permit.
REBOOTED = [
    Phase.DETECTED,
    Phase.QUARANTINED,
    Phase.DRAINING,
    Phase.DRAINED,
    Phase.REPAIRING,
    Phase.WAITING_FOR_NODE,
    Phase.VERIFYING,
    Phase.RESOLVED,
]


def happy_path(history: WorkflowHistory) -> None:
    assert phases(history) == REBOOTED
    assert steps(history).count(Step.REBOOT) == 1
    assert signals(history) == [FAULT_SIGNAL.name] and not updates(history)


def approval(history: WorkflowHistory) -> None:
    assert Phase.AWAITING_APPROVAL in phases(history)
    assert updates(history) == ["approve"]
    assert ending(history) is Phase.RESOLVED and Step.REBOOT in steps(history)


def gpu_reset(history: WorkflowHistory) -> None:
    assert Step.RESET_GPUS in steps(history) and Step.REBOOT not in steps(history)
    assert ending(history) is Phase.RESOLVED


def escalation(history: WorkflowHistory) -> None:
    assert phases(history)[-2:] == [Phase.ESCALATED, Phase.RELEASED]
    assert updates(history) == ["reject", PersonAction.RELEASE.value]
    assert ending(history) is Phase.RELEASED


def budget_wait(history: WorkflowHistory) -> None:
    assert phases(history)[:3] == [Phase.DETECTED, Phase.AWAITING_BUDGET, Phase.QUARANTINED]
    assert PERMIT_SIGNAL.name in signals(history), "the permit came by the governor's signal"
    assert ending(history) is Phase.RESOLVED


def budget_wait_governor(history: WorkflowHistory) -> None:
    # Both permits came back; the waiter's was granted then, and signalled to it.
    assert signals(history).count(RELEASE_SIGNAL.name) == 2
    assert Step.DELIVER_PERMITS in steps(history)


def storm_governor(history: WorkflowHistory) -> None:
    assert signals(history).count(RELEASE_SIGNAL.name) == 10
    assert steps(history).count(Step.DELIVER_PERMITS) >= 3, "granted in several passes"


def escalated_before_hold(history: WorkflowHistory) -> None:
    """Recorded by the code of 8c5f297 (GPUs unhealthy after the reboot): it released the node as
    escalated and completed, where runs now stay open, held for a person."""
    assert ending(history) is Phase.ESCALATED and not updates(history)


def hold_read_before_the_ask(history: WorkflowHistory) -> None:
    """Recorded by the code of 072ac3b: it read the node for its hold label (`observe_node`), then
    asked for its permit (`collect_permit`); now one step does both, behind `collect-unless-held`."""
    ran = steps(history)
    assert ran.index(Step.OBSERVE) < ran.index(Step.COLLECT_PERMIT) and Step.COLLECT_UNLESS_HELD not in ran


def governor_signalling_each_permit(history: WorkflowHistory) -> None:
    """Recorded by the code of 54bfbb1: the governor signalled each permit with a command of its own
    (here two, to runs that had ended)."""
    assert len(_having(history, EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED)) == 2


def governor_delivering_each_pass(history: WorkflowHistory) -> None:
    """Recorded by the code of 3c19b64 (ten faults under a budget of three): a delivery for every pass
    that granted, one beside the other."""
    assert steps(history).count(Step.DELIVER_PERMITS) >= 3


def governor_with_unhandled_collect(history: WorkflowHistory) -> None:
    """Recorded by the code of 3c19b64 while newer remediations sent it `collect`, which it had no
    handler for; the current code must leave those signals alone in such a run."""
    assert signals(history).count(COLLECT_SIGNAL.name) == 2


def governor_with_unhandled_collect_all(history: WorkflowHistory) -> None:
    """Recorded by the code of ce2458a, which had no handler for `collect_all`, while a newer worker
    sent it one; the current code must leave that signal alone in such a run."""
    assert signals(history).count(COLLECT_ALL_SIGNAL.name) == 1


# What each file shows, by its name (a release's scenarios have the same names in every release).
SHOWS: dict[str, Callable[[WorkflowHistory], None]] = {
    check.__name__: check
    for check in (
        happy_path,
        approval,
        gpu_reset,
        escalation,
        budget_wait,
        budget_wait_governor,
        storm_governor,
        escalated_before_hold,
        hold_read_before_the_ask,
        governor_signalling_each_permit,
        governor_delivering_each_pass,
        governor_with_unhandled_collect,
        governor_with_unhandled_collect_all,
    )
}


@pytest.mark.parametrize("path", RECORDED, ids=named)
def test_every_recorded_history_is_a_run_of_its_scenario(path: Path) -> None:
    assert path.stem in SHOWS, f"{named(path)}: add what its run shows to SHOWS"
    SHOWS[path.stem](load(path))


def release_of(path: Path) -> tuple[int, ...] | None:
    """The release that recorded the file (None: a commit's from before releases were recorded)."""
    folder = path.parent.relative_to(HISTORIES)
    return tuple(int(part) for part in folder.name.split(".")) if folder.parts else None


@pytest.mark.parametrize("path", [p for p in RECORDED if (release_of(p) or (0,)) >= FOLDING_SINCE], ids=named)
def test_a_releases_runs_carry_its_patch_alone(path: Path) -> None:
    """Every patch of a release's code came before it, folded into its own (CONTRIBUTING.md)."""
    assert patch_markers(load(path)) == [f"gpuheal-{path.parent.name}"]


@pytest.mark.parametrize("path", [p for p in RECORDED if release_of(p) and not p.stem.endswith("_governor")], ids=named)
def test_a_releases_remediations_give_their_permit_back_as_its_code_did(path: Path) -> None:
    """Both ways are replayed: the signal of runs begun before 0.3.0, the local step of those since,
    except after a GPU reset's ending, which a retried last task could undo (_permit_by_step)."""
    history = load(path)
    signalled = _having(history, EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED)
    by_step = steps(history).count(Step.RETURN_PERMIT)
    release = release_of(path)
    assert release is not None
    by_signal = release < RETURNING_BY_STEP_SINCE or path.stem == "gpu_reset"
    assert (len(signalled), by_step) == ((1, 0) if by_signal else (0, 1))


def test_this_release_has_a_recorded_history_of_every_scenario() -> None:
    """A new version is recorded before it is released (`python -m tests.workflows.record_history`)."""
    release = HISTORIES / version("gpuheal")
    expected = {f"{stem}.json" for scenario in SCENARIOS.values() for stem in scenario.files}
    assert expected <= {path.name for path in release.glob("*.json")}


# ---- the replay can fail ----------------------------------------------------------------------


# Not sandboxed: the sandbox would import this test module afresh; determinism is checked all the same.
@workflow.defn(name=REMEDIATION.name, sandboxed=False)
class RemediationReadingItsNodeFirst(RemediationWorkflow):
    """The current workflow with an unpatched change: it reads its node before anything else."""

    @workflow.run
    async def run(self, request: RemediationInput) -> RemediationStatus:
        await workflow.execute_activity(
            Step.OBSERVE.value, NodeRef(node=request.node), start_to_close_timeout=timedelta(seconds=10)
        )
        return await super().run(request)


async def test_an_unpatched_change_to_the_commands_fails_the_replay() -> None:
    history = load(HISTORIES / version("gpuheal") / "happy_path.json")

    with pytest.raises(workflow.NondeterminismError):
        await replay(history, RemediationReadingItsNodeFirst)
