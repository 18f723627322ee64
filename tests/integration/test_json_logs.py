"""`GPUHEAL_LOG_FORMAT=json` through a real remediation: its lines name the remediation, the node and the GPU.

The worker runs as `gpuheal worker` with the setting in its environment; the agent runs in the test's
process, its records written by the same formatter.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gpuheal.control.logformat import JsonLines
from gpuheal.domain.marks import workflow_id_for
from gpuheal.domain.phases import Phase
from tests.integration.conftest import StackFactory, WorkerFactory
from tests.integration.test_agent_remediation import FAULTY_GPU, node_agent, remediate_through_the_agent
from tests.integration.test_remediation import NODE


@pytest.fixture
def agent_log() -> Iterator[io.StringIO]:
    """What the agent logs, as JSON lines."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonLines())
    agents = logging.getLogger("gpuheal.agents")
    level = agents.level
    agents.addHandler(handler)
    agents.setLevel(logging.INFO)
    yield out
    agents.removeHandler(handler)
    agents.setLevel(level)


def entries(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def the_one(log: list[dict[str, Any]], message_start: str) -> dict[str, Any]:
    [entry] = [entry for entry in log if entry["message"].startswith(message_start)]
    return entry


async def test_a_remediation_logs_json_lines_naming_its_workflow_node_and_gpu(
    make_stack: StackFactory,
    spawn_worker: WorkerFactory,
    agent_log: io.StringIO,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stack = await make_stack(workloads=False, in_process_worker=False)
    monkeypatch.setenv("GPUHEAL_LOG_FORMAT", "json")
    worker = await spawn_worker(stack)
    # The agent refuses the GPU reset: the workflow logs that it reboots instead.
    async with node_agent(stack, tmp_path, stack.server.address, gpu_reset="off") as (agent, kernel_log):
        gpu_uuid = agent.nvml.device_info(FAULTY_GPU).uuid
        status = await remediate_through_the_agent(agent, kernel_log, stack, 48)
    assert status.phase is Phase.RESOLVED, status.reason

    worker_log = entries(spawn_worker.log(worker))
    workflow_line = the_one(worker_log, f"GPU reset on {NODE} failed")
    activity_line = the_one(worker_log, f"quarantined {NODE}")
    for entry in workflow_line, activity_line:
        assert entry["workflow_id"] == workflow_id_for(NODE)
        assert entry["node"] == NODE
        assert "({" not in entry["message"], "Temporal's details are fields, not text in the message"
    assert workflow_line["logger"] == "temporalio.workflow"
    assert activity_line["logger"] == "temporalio.activity"

    refusal = the_one(entries(agent_log.getvalue()), "GPU reset order")
    assert refusal["level"] == "WARNING"
    assert (refusal["node"], refusal["gpu"]) == (NODE, [gpu_uuid])
