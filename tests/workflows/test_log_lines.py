"""Every line the remediation workflow logs names the run's GPUs, beside the workflow id the SDK adds,
so a log pipeline can follow one GPU through its remediation (`gpuheal --log-format json`)."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from temporalio.testing import WorkflowEnvironment

from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.marks import workflow_id_for
from gpuheal.domain.phases import Phase
from tests.workflows.fake_activities import FakeNode
from tests.workflows.test_repair_logic import remediate


async def test_every_line_of_a_remediation_names_its_gpus(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="temporalio.workflow")
    # A GPU reset that fails, then a graceful restart that does not happen: two lines of the workflow's own.
    node.reset_outcome = "fail"
    node.graceful_supported = True
    node.graceful_restarts = False
    status = await remediate(
        time_skipping_env, queue, node, RecommendedAction.COMPONENT_RESET, graceful_timeout=timedelta(minutes=5)
    )
    assert status.phase is Phase.RESOLVED, status.reason

    lines = [
        record
        for record in caplog.records
        if record.name == "temporalio.workflow"
        and getattr(record, "temporal_workflow", {}).get("workflow_id") == workflow_id_for(node.name)
    ]
    messages = [line.getMessage() for line in lines]
    assert any("GPU reset on" in m for m in messages) and any("forcing it" in m for m in messages), messages
    for line in lines:
        assert getattr(line, "gpu", None) == ["GPU-aaaa"], f"a line without its GPUs: {line.getMessage()!r}"
