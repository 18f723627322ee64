"""`GPUHEAL_LOG_FORMAT=json` through a real remediation: every line is JSON, and its lines name the
remediation, the node and the GPU.

The worker runs as `gpuheal worker` with the setting in its environment (the `--log-format` option's
variable); the agent runs in the test's process, its logging set up as `gpuheal agent` sets it up.
The Temporal core's own warnings (a worker whose server went away) take the process's format too.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity, workflow

from gpuheal.control.logformat import log_as_json, name_node_on_every_line
from gpuheal.domain.marks import workflow_id_for
from gpuheal.domain.phases import Phase
from gpuheal_sim.demo.devserver import start_dev_server
from tests.integration.conftest import StackFactory, WorkerFactory, eventually
from tests.integration.test_agent_remediation import FAULTY_GPU, node_agent, remediate_through_the_agent
from tests.integration.test_remediation import NODE

# The loggers whose records come from a workflow or an activity of a remediation.
TEMPORAL_LOGGERS = ("temporalio.workflow", "temporalio.activity")


@pytest.fixture
def agent_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """What the agent process would write to stderr, logging set up as `gpuheal --log-format json agent`
    sets it up; the test process's logging is given back afterwards."""
    out = io.StringIO()
    root = logging.getLogger()
    kept = root.handlers[:], root.level
    on_message = workflow.logger.workflow_info_on_message, activity.logger.activity_info_on_message
    monkeypatch.setattr(sys, "stderr", out)
    log_as_json(logging.INFO)
    name_node_on_every_line(NODE)
    yield out
    root.handlers, root.level = kept[0], kept[1]
    workflow.logger.workflow_info_on_message, activity.logger.activity_info_on_message = on_message


def entries(text: str) -> list[dict[str, Any]]:
    """Every line of `text` as JSON: a line that is not JSON fails the test, naming it."""
    found = []
    for line in text.splitlines():
        try:
            found.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"a line that is not JSON: {line!r}")
    return found


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
    remediation_lines = [entry for entry in worker_log if entry["logger"] in TEMPORAL_LOGGERS]
    assert remediation_lines
    for entry in remediation_lines:
        assert (entry.get("workflow_id"), entry.get("node")) == (workflow_id_for(NODE), NODE), entry
        assert "({" not in entry["message"], "Temporal's details are fields, not text in the message"
        if entry["logger"] == "temporalio.workflow":
            assert entry.get("gpu"), f"a workflow line without its GPUs: {entry}"
    assert the_one(worker_log, "ordered a reset of")["gpu"] == [gpu_uuid]
    workflow_line = the_one(worker_log, f"GPU reset on {NODE} failed")
    activity_line = the_one(worker_log, f"quarantined {NODE}")
    assert workflow_line["logger"] == "temporalio.workflow"
    assert activity_line["logger"] == "temporalio.activity"
    assert workflow_line["gpu"] == [gpu_uuid]

    agent_lines = entries(agent_log.getvalue())
    assert all(entry["node"] == NODE for entry in agent_lines), "an agent's every line names its node"
    refusal = the_one(agent_lines, "GPU reset order")
    assert refusal["level"] == "WARNING"
    assert refusal["gpu"] == [gpu_uuid]


def plain_fields(line: str) -> tuple[str, str, str]:
    """The level, logger and message of a line in the plain format (`%(asctime)s %(levelname)s %(name)s: ...`)."""
    found = re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (\w+) (\S+): (.*)", line)
    assert found, f"a line not in the plain format: {line!r}"
    level, logger, message = found.groups()
    return level, logger, message


@pytest.mark.parametrize("log_format", ["json", "plain"])
async def test_the_temporal_cores_own_lines_take_the_processs_format(
    log_format: str, make_stack: StackFactory, spawn_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = await make_stack(workloads=False, in_process_worker=False)
    # A server of the test's own, to stop under the worker: the SDK's core then warns of its retries.
    server = await start_dev_server()
    monkeypatch.setenv("GPUHEAL_LOG_FORMAT", log_format)
    try:
        worker = await spawn_worker(dataclasses.replace(stack, server=server))
    finally:
        await server.shutdown()

    async def core_warned() -> bool:
        return "retried" in spawn_worker.log(worker)

    await eventually(core_warned, "the worker's Temporal core to warn, on its stderr, that its polls fail", timeout=120)
    log = spawn_worker.log(worker)
    if log_format == "json":
        lines = [(entry["level"], entry["logger"], entry["message"]) for entry in entries(log)]
    else:
        lines = [plain_fields(line) for line in log.splitlines() if "retried" in line]
    core_lines = [line for line in lines if "retried" in line[2]]
    assert core_lines
    for level, logger, message in core_lines:
        assert (level, logger.startswith("temporalio.core")) == ("WARNING", True), (level, logger)
        assert "sdk_core" not in message, f"the core's target is in the logger's name, not the message: {message}"
