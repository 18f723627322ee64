"""Record the histories that the replay tests check the workflow code against.

Run `.venv/bin/python -m tests.workflows.record_history` after an intentional, versioned change to
RemediationWorkflow; it runs one remediation on the dev server and the simulated fleet and writes
`histories/happy_path.json`. `… record_history governor` runs a small storm under a governor with
a budget of three and writes its history to `histories/governor.json` (renamed by hand after the
code that recorded it).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import uuid
from pathlib import Path

from gpuheal.control import remediations
from gpuheal.control.governor import governor_id_for
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.faults import Fault
from gpuheal.domain.fleet import BreakerPolicy, FleetBudget, FleetPolicy
from gpuheal.domain.phases import Phase
from gpuheal.worker import WorkerSettings, running_worker
from gpuheal_sim.demo.devserver import start_dev_server
from gpuheal_sim.demo.run import demo_policy
from gpuheal_sim.simulator import FleetConfig, SimulatedCluster
from tests.chart import access_manifests, service_account

HISTORY = Path(__file__).parent / "histories" / "happy_path.json"
GOVERNOR_HISTORY = Path(__file__).parent / "histories" / "governor.json"


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


async def record_governor(nodes: int = 10) -> None:
    """A storm of `nodes` faults at once under a budget of three: the governor grants in several
    passes, while earlier grants are being delivered and permits come back."""
    server = await start_dev_server()
    try:
        with tempfile.TemporaryDirectory() as state:
            fleet = FleetConfig(nodes=nodes, reboot_seconds=0.2, pod_start_seconds=0.1)
            async with SimulatedCluster(fleet, state_dir=Path(state)) as cluster:
                settings = WorkerSettings(
                    task_queue=f"record-{uuid.uuid4()}",
                    kubeconfig=cluster.kubeconfig,
                    simulator_url=cluster.control_url,
                    metrics_address=None,
                    fleet=FleetPolicy(
                        budget=FleetBudget(max_concurrent=3, max_percent=100),
                        breaker=BreakerPolicy(share=1, at_least=1000),
                    ),
                )
                async with running_worker(settings, server.client):
                    faults = [
                        Fault(node=node, action=RecommendedAction.RESTART_BM, xid=79, event_id=f"recorded-{node}")
                        for node in cluster.node_names()
                    ]
                    handles = await asyncio.gather(
                        *(
                            remediations.report_fault(
                                server.client, f, demo_policy(manual=False), task_queue=settings.task_queue
                            )
                            for f in faults
                        )
                    )
                    for handle in handles:
                        status = await handle.result()
                        assert status.phase is Phase.RESOLVED, status.reason
                    governor = server.client.get_workflow_handle(governor_id_for(settings.task_queue))
                    history = await governor.fetch_history()
        GOVERNOR_HISTORY.write_text(history.to_json())
        print(f"wrote {GOVERNOR_HISTORY} ({len(history.events)} events)")
    finally:
        await server.shutdown()


if __name__ == "__main__":
    asyncio.run(record_governor() if sys.argv[1:] == ["governor"] else record())
