"""Determinism: recorded histories must replay under the current workflow code.

A change that reorders, adds or removes commands for an existing history (an incompatible change
that would break remediations already running in production) fails here. Such a change needs
`workflow.patched(...)`, and then a fresh recording (tests/workflows/record_history.py).
"""

from __future__ import annotations

from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from gpuheal.workflows.governor import GovernorWorkflow
from gpuheal.workflows.remediation import RemediationWorkflow
from tests.workflows.record_history import HISTORY


def recorded(name: str, workflow_id: str) -> WorkflowHistory:
    """A history kept in histories/, as the code named in its test recorded it."""
    return WorkflowHistory.from_json(workflow_id, (Path(__file__).parent / "histories" / name).read_text())


async def replay_failure(history: WorkflowHistory, workflow: type) -> Exception | None:
    """What replaying `history` under the current code of `workflow` failed on; None when it replays."""
    replayer = Replayer(workflows=[workflow], data_converter=pydantic_data_converter)
    return (await replayer.replay_workflow(history, raise_on_replay_failure=False)).replay_failure


async def test_happy_path_history_replays_under_the_current_code() -> None:
    history = WorkflowHistory.from_json("remediate-gpu-node-001", HISTORY.read_text())
    assert any(e.HasField("activity_task_completed_event_attributes") for e in history.events)
    replayer = Replayer(workflows=[RemediationWorkflow], data_converter=pydantic_data_converter)

    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)

    assert result.replay_failure is None


async def test_a_run_that_escalated_before_escalated_runs_were_held_replays_to_its_old_ending() -> None:
    """Recorded by the code of 8c5f297 (a fake node whose GPUs stay unhealthy after the reboot): that
    run released the node as escalated and completed. A query of it (`gpuheal status`) replays it."""
    history = recorded("escalated_before_hold.json", "remediate-gpu-node-001")
    assert await replay_failure(history, RemediationWorkflow) is None


async def test_a_run_that_read_its_node_before_it_asked_for_its_permit_replays_under_the_current_code() -> None:
    """Recorded by the code of 072ac3b, whose remediations read the node for its hold label in one
    step and asked for their permit in the next (`observe_node`, then `collect_permit`); now one step
    does both (`collect_permit_unless_held`), behind the patch `collect-unless-held`."""
    history = recorded("hold_read_before_the_ask.json", "remediate-gpu-node-001")
    steps = [
        e.marker_recorded_event_attributes.details
        for e in history.events
        if e.HasField("marker_recorded_event_attributes")
    ]
    assert any(b"collect_permit" in details["data"].payloads[0].data for details in steps if "data" in details)
    assert await replay_failure(history, RemediationWorkflow) is None


async def test_a_governor_that_signalled_each_permit_itself_replays_under_the_current_code() -> None:
    """Recorded by the code of 54bfbb1, whose governor signalled each permit it granted with a command
    of its own (here two, to runs that had ended: the permits were taken back). A governor running
    when its workers are upgraded keeps doing so until it continues as new; the current code, which
    delivers a pass's permits in one activity, must replay it."""
    history = recorded("governor_signalling_each_permit.json", "gpuheal-governor-recorded")
    initiated = [
        e for e in history.events if e.HasField("signal_external_workflow_execution_initiated_event_attributes")
    ]
    assert len(initiated) == 2
    assert await replay_failure(history, GovernorWorkflow) is None


async def test_a_governor_that_delivered_each_pass_at_once_replays_under_the_current_code() -> None:
    """Recorded by the code of 3c19b64 (`record_history governor`: ten faults at once under a budget
    of three), whose governor started a delivery for every pass that granted, one beside the other,
    and signalled every grant; the current code, which keeps one delivery under way and leaves a
    grant to an asker that collects it, must replay it."""
    history = recorded("governor_delivering_each_pass.json", "gpuheal-governor-recorded")
    deliveries = [
        e for e in history.events if e.activity_task_scheduled_event_attributes.activity_type.name == "deliver_permits"
    ]
    assert len(deliveries) >= 3
    assert await replay_failure(history, GovernorWorkflow) is None


async def test_a_governor_of_before_collect_that_received_collect_signals_replays_under_the_current_code() -> None:
    """Recorded by the code of 3c19b64, while newer remediations (a rolling upgrade) sent it `collect`
    signals it had no handler for: it granted only the `request`s (b, and c once c asked that way).
    The current code, which handles `collect`, must leave those signals alone in such a run."""
    history = recorded("governor_with_unhandled_collect.json", "gpuheal-governor-recorded")
    signals = [e.workflow_execution_signaled_event_attributes.signal_name for e in history.events]
    assert signals.count("collect") == 2
    assert await replay_failure(history, GovernorWorkflow) is None


async def test_a_governor_of_before_collect_all_that_received_it_replays_under_the_current_code() -> None:
    """Recorded by the code of ce2458a, which had no handler for `collect_all`, while a newer worker
    (a rolling upgrade) sent it one with the asks of a and b: it granted only c, which asked with
    `request`. The current code must leave that signal alone in such a run."""
    history = recorded("governor_with_unhandled_collect_all.json", "gpuheal-governor-recorded")
    signals = [e.workflow_execution_signaled_event_attributes.signal_name for e in history.events]
    assert signals.count("collect_all") == 1
    assert await replay_failure(history, GovernorWorkflow) is None
