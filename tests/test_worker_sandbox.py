"""The worker loads a workflow's module once, not again for every run it starts (a storm's cost)."""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING

from temporalio import workflow

# The sandbox may load this module too: what a workflow may not import stays out of its way.
with workflow.unsafe.imports_passed_through():
    from gpuheal.worker import WorkerSettings, remediations_worker

if TYPE_CHECKING:
    import pytest

    from gpuheal_sim.demo.devserver import DevServer

_LOADS = "tests.worker-sandbox-loads"
# Each time this module's code runs, inside the sandbox or not, it says so (logging is shared with the sandbox).
logging.getLogger(_LOADS).info("module loaded")


@workflow.defn(name="ModuleLoadProbe")
class ModuleLoadProbe:
    @workflow.run
    async def run(self) -> str:
        return workflow.info().workflow_id


async def test_runs_share_their_workflow_module(dev_server: DevServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=_LOADS)
    task_queue = f"sandbox-{uuid.uuid4()}"
    client = dev_server.client
    async with remediations_worker(client, WorkerSettings(task_queue=task_queue), [ModuleLoadProbe], []):
        for index in range(3):
            ran = await client.execute_workflow(ModuleLoadProbe.run, id=f"{task_queue}-{index}", task_queue=task_queue)
            assert ran == f"{task_queue}-{index}"
    assert [record.message for record in caplog.records if record.name == _LOADS] == []
