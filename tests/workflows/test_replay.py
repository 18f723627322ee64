"""Determinism: a recorded happy-path history must replay under the current workflow code.

A change that reorders, adds or removes commands for an existing history (an incompatible change
that would break remediations already running in production) fails here. Such a change needs
`workflow.patched(...)`, and then a fresh recording (tests/workflows/record_history.py).
"""

from __future__ import annotations

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
