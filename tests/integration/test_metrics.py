"""gpuheal's metrics, scraped over HTTP after a remediation carried out end to end.

The worker runs as `gpuheal worker` does (its own process, so its Prometheus exporter holds only this
test's figures), the agent as on a node with its health endpoint; a fatal XID in the node's kernel
log is remediated by a reboot, and both `/metrics` are then read with Prometheus' own text parser.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path

import aiohttp
import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from gpuheal.control.governor import governor_id_for
from gpuheal.domain.phases import Phase
from gpuheal.protos import health_event_pb2 as pb
from gpuheal.protos import health_event_pb2_grpc as pb_grpc
from gpuheal.worker import WorkerSettings, running_worker
from gpuheal_sim.demo.devserver import free_port
from tests.integration.conftest import StackFactory, WorkerFactory, eventually
from tests.integration.test_agent_remediation import FAULTY_GPU, node_agent, remediate_through_the_agent
from tests.integration.test_remediation import NODE

GPUS = 8


async def scrape(address: str) -> list[Sample]:
    async with aiohttp.ClientSession() as session, session.get(f"http://{address}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def value(samples: Iterable[Sample], name: str, **labels: str) -> float | None:
    """The sum of the samples named `name` whose labels include `labels`; None when there is none."""
    found = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
    return sum(found) if found else None


def intake_event(node: str, *, fatal: bool, gpu: str) -> pb.HealthEvents:
    """Another monitor's event about `gpu`: fatal, or healthy."""
    event = pb.HealthEvent(
        version=1,
        agent="other-monitor",
        componentClass="GPU",
        checkName="OtherCheck",
        nodeName=node,
        message="checked",
        isFatal=fatal,
        isHealthy=not fatal,
        recommendedAction=pb.RESTART_BM if fatal else pb.NONE,
        entitiesImpacted=[pb.Entity(entityType="GPU_UUID", entityValue=gpu)],
    )
    return pb.HealthEvents(version=1, events=[event])


async def test_a_remediation_is_counted_by_the_worker_and_the_agent(
    make_stack: StackFactory, spawn_worker: WorkerFactory, tmp_path: Path
) -> None:
    stack = await make_stack(workloads=False, in_process_worker=False)
    worker = f"127.0.0.1:{free_port()}"
    await spawn_worker(stack, "--metrics-address", worker, "--stuck-after", "2h")
    async with node_agent(stack, tmp_path, stack.server.address, health_address=("127.0.0.1", 0)) as (agent, log):
        assert agent.health is not None
        agent_address = f"127.0.0.1:{agent.health.port}"
        gpu = agent.nvml.device_info(FAULTY_GPU).uuid
        # Another monitor reports through the intake: one event it takes, one batch it rejects (no node).
        async with grpc.aio.insecure_channel(f"unix://{agent.health_events_socket}") as channel:
            intake = pb_grpc.PlatformConnectorStub(channel)
            await intake.HealthEventOccurredV1(intake_event(NODE, fatal=False, gpu=gpu))
            rejected = intake_event("", fatal=True, gpu=gpu)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await intake.HealthEventOccurredV1(rejected)
            assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        status = await remediate_through_the_agent(agent, log, stack, 79)
        assert status.phase is Phase.RESOLVED, status.reason
        on_agent = await scrape(agent_address)

    action = status.action.name
    # The phases the run left, each once for every stay (entries of the phase it was in continue a stay).
    stays = [
        entry.phase for n, entry in enumerate(status.history) if n == 0 or status.history[n - 1].phase != entry.phase
    ]
    left = stays[:-1]
    assert Phase.QUARANTINED in left and Phase.WAITING_FOR_NODE in left

    governor = governor_id_for(stack.task_queue)

    async def governor_passed() -> bool:
        # The permit comes back as the run ends; the worker's next visibility pass (every 30 s) asks
        # the governor and sets its gauges.
        return value(await scrape(worker), "gpuheal_fleet_permits_held", governor=governor) == 0

    await eventually(governor_passed, "the governor's gauges after the permit came back", timeout=45)
    on_worker = await scrape(worker)

    assert value(on_worker, "gpuheal_remediations_started_total", action=action) == 1
    assert value(on_worker, "gpuheal_remediations_finished_total", outcome="Resolved", action=action) == 1
    assert value(on_worker, "gpuheal_remediations_escalated_total") is None
    for phase in set(left):
        count = value(on_worker, "gpuheal_remediation_phase_duration_seconds_count", phase=phase.value)
        assert count == left.count(phase), phase
    assert value(on_worker, "gpuheal_remediation_phase_duration_seconds_count", phase=Phase.RESOLVED.value) is None
    assert value(on_worker, "gpuheal_fault_to_cordon_seconds_count") == 1
    assert value(on_worker, "gpuheal_fault_to_service_seconds_count") == 1
    # Buckets span seconds to hours: the largest finite one is a day.
    buckets = [s.labels["le"] for s in on_worker if s.name == "gpuheal_fault_to_service_seconds_bucket"]
    assert "86400.0" in buckets or "86400" in buckets, buckets
    assert value(on_worker, "gpuheal_reboots_total", provider="simulator", result="requested") == 1
    assert value(on_worker, "gpuheal_reboots_total", result="failed") is None
    assert value(on_worker, "gpuheal_fleet_permits_waiting", governor=governor) == 0
    assert value(on_worker, "gpuheal_fleet_breaker_open", governor=governor) == 0
    # The visibility counts ran at the worker's start: one figure per open phase.
    running = {s.labels["phase"] for s in on_worker if s.name == "gpuheal_remediations_running"}
    assert running == {phase.value for phase in Phase if not phase.is_final}
    assert {s.labels["phase"] for s in on_worker if s.name == "gpuheal_remediations_stuck"} == running
    assert value(on_worker, "gpuheal_approvals_waiting") is not None

    assert value(on_agent, "gpuheal_agent_intake_events_total", kind="healthy", result="accepted") == 1
    assert value(on_agent, "gpuheal_agent_intake_events_total", kind="fatal", result="rejected") == 1
    assert value(on_agent, "gpuheal_agent_intake_events_total", result="refused") is None
    assert value(on_agent, "gpuheal_agent_kernel_log_lines_total") == 1
    assert value(on_agent, "gpuheal_agent_kernel_log_faults_total") == 1
    for lane in ("device-api", "kubernetes", "temporal"):
        assert value(on_agent, "gpuheal_agent_spool_entries", lane=lane) == 0
        assert value(on_agent, "gpuheal_agent_spool_bytes", lane=lane) == 0
        assert value(on_agent, "gpuheal_agent_spool_limit_bytes", lane=lane) == 64 * 1024 * 1024
    assert value(on_agent, "gpuheal_agent_device_api_requests_total", method="CreateGpu", code="OK") == GPUS
    assert (value(on_agent, "gpuheal_agent_device_api_requests_total", method="UpdateGpuStatus", code="OK") or 0) >= 1
    assert value(on_agent, "gpuheal_agent_device_api_watchers") == 0
    # The repaired GPU reported healthy again, as the others were all along.
    healthy_gpus = {s.labels["gpu"]: s.value for s in on_agent if s.name == "gpuheal_agent_gpu_healthy"}
    assert len(healthy_gpus) == GPUS and healthy_gpus[gpu] == 1 and set(healthy_gpus.values()) == {1}
    last_report = value(on_agent, "gpuheal_agent_last_report_timestamp_seconds")
    assert last_report is not None and last_report >= status.history[0].entered_at.timestamp()


async def test_the_visibility_counts_run_with_the_worker_and_stop_with_it(make_stack: StackFactory) -> None:
    stack = await make_stack(workloads=False, in_process_worker=False)
    settings = WorkerSettings(
        task_queue=stack.task_queue,
        kubeconfig=stack.worker_kubeconfig,
        simulator_url=stack.cluster.control_url,
        # In process the figures go to the client's runtime; the address only says they are served.
        metrics_address="127.0.0.1:9464",
        graceful_shutdown=timedelta(seconds=1),
    )

    def counting() -> list[asyncio.Task[object]]:
        return [task for task in asyncio.all_tasks() if task.get_name() == "gpuheal-visibility-gauges"]

    async with running_worker(settings, stack.server.client):
        [task] = counting()
        assert not task.done()
    assert task.cancelled() and not counting()
