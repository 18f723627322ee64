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

from gpuheal.workflows.remediation import RemediationWorkflow
from tests.workflows.record_history import HISTORY


async def test_happy_path_history_replays_under_the_current_code() -> None:
    history = WorkflowHistory.from_json("remediate-gpu-node-001", HISTORY.read_text())
    assert any(e.HasField("activity_task_completed_event_attributes") for e in history.events)
    replayer = Replayer(workflows=[RemediationWorkflow], data_converter=pydantic_data_converter)

    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)

    assert result.replay_failure is None


async def test_a_run_that_escalated_before_escalated_runs_were_held_replays_to_its_old_ending() -> None:
    """Recorded by the code of 8c5f297 (a fake node whose GPUs stay unhealthy after the reboot): that
    run released the node as escalated and completed. A query of it (`gpuheal status`) replays it."""
    recorded = Path(__file__).parent / "histories" / "escalated_before_hold.json"
    history = WorkflowHistory.from_json("remediate-gpu-node-001", recorded.read_text())
    replayer = Replayer(workflows=[RemediationWorkflow], data_converter=pydantic_data_converter)

    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)

    assert result.replay_failure is None, result.replay_failure
