"""Record the happy-path history that the replay test checks the workflow code against.

Run `.venv/bin/python -m tests.workflows.record_history` after an intentional, versioned change to
RemediationWorkflow; it runs one remediation on the dev server and the simulated fleet and writes
`histories/happy_path.json`.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from pathlib import Path

from gpuheal.control import remediations
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.faults import Fault
from gpuheal.domain.phases import Phase
from gpuheal.worker import WorkerSettings, running_worker
from gpuheal_sim.demo.devserver import start_dev_server
from gpuheal_sim.demo.run import demo_policy
from gpuheal_sim.simulator import FleetConfig, SimulatedCluster
from tests.chart import access_manifests, service_account

HISTORY = Path(__file__).parent / "histories" / "happy_path.json"


async def record() -> None:
    server = await start_dev_server()
    try:
        with tempfile.TemporaryDirectory() as state:
            fleet = FleetConfig(nodes=4, reboot_seconds=0.5, pod_start_seconds=0.1, access_manifests=access_manifests())
            async with SimulatedCluster(fleet, state_dir=Path(state)) as cluster:
                # The worker runs with the chart's permissions, as the integration tests run it.
                worker_kubeconfig = cluster.service_account_kubeconfig(
                    *service_account("worker"), Path(state) / "worker.kubeconfig"
                )
                settings = WorkerSettings(
                    task_queue=f"record-{uuid.uuid4()}",
                    kubeconfig=worker_kubeconfig,
                    simulator_url=cluster.control_url,
                    metrics_address=None,
                )
                async with running_worker(settings, server.client):
                    cluster.inject_fault("gpu-node-001", xid=79, gpu=3)
                    fault = Fault(
                        node="gpu-node-001",
                        action=RecommendedAction.RESTART_BM,
                        xid=79,
                        gpu_uuids=("GPU-recorded",),
                        event_id="recorded-event",
                    )
                    handle = await remediations.report_fault(
                        server.client, fault, demo_policy(manual=False), task_queue=settings.task_queue
                    )
                    status = await handle.result()
                    assert status.phase is Phase.RESOLVED, status.reason
                    history = await handle.fetch_history()
        HISTORY.write_text(history.to_json())
        print(f"wrote {HISTORY} ({len(history.events)} events)")
    finally:
        await server.shutdown()


if __name__ == "__main__":
    asyncio.run(record())
