"""End to end through the agent: a kernel log line on a node becomes a remediation of that node.

The agent runs as it does on a node (fake NVML, a kernel log file standing in for /dev/kmsg), the
worker and the dev server are real, and the simulated fleet plays Kubernetes and the reboot.
"""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHandle

from gpuheal.agents.agent import Agent
from gpuheal.agents.check import DISABLED as CHECKS_OFF
from gpuheal.agents.diagnostics.handler import DISABLED as BUNDLES_OFF
from gpuheal.domain.marks import workflow_id_for
from gpuheal.domain.phases import Phase
from gpuheal.domain.policy import DiagnosticsPolicy, ValidationPolicy
from gpuheal.domain.remediation import RemediationStatus
from gpuheal.worker import WorkerSettings, running_worker
from gpuheal_sim.agent_settings import simulated_agent_settings
from gpuheal_sim.demo.devserver import free_port, start_dev_server
from gpuheal_sim.fake_nvml import FakeNvml
from tests.integration.conftest import Stack, StackFactory, eventually, fast_policy, run_started_after, settled
from tests.integration.test_remediation import NODE, gpuheal_marks

FAULTY_GPU = 3


@asynccontextmanager
async def node_agent(
    stack: Stack, tmp_path: Path, temporal_address: str, **overrides: Any
) -> AsyncIterator[tuple[Agent, Path]]:
    """The agent of NODE, following a kernel log file in tmp_path; yields it and the log file.

    It is the node's only GPU agent: the simulated one leaves GpuHealthy to it, and the node's boot
    ID reaches it through its boot_id file, as /proc/sys/kernel/random/boot_id on a real node.
    """
    stack.cluster.attach_agent(NODE, tmp_path / "boot_id")
    settings = simulated_agent_settings(
        NODE,
        tmp_path,
        8,
        nvml_poll=timedelta(seconds=1),
        temporal_address=temporal_address,
        task_queue=stack.task_queue,
        kubeconfig=stack.agent_kubeconfig(NODE),
        **{"remediation_policy": fast_policy(), **overrides},
    )
    assert settings.kernel_log is not None
    async with Agent(settings) as agent:
        yield agent, settings.kernel_log


def xid_record(agent: Agent, xid: int, index: int = FAULTY_GPU) -> str:
    """A /dev/kmsg record as the injector writes it, for the agent's GPU `index`."""
    assert isinstance(agent.nvml, FakeNvml)
    pci = agent.nvml.device_info(index).pci_bus_id
    return f"3,4242,{uuid.uuid4().int % 10**12},-;NVRM: NVRM: Xid (PCI:{pci}): {xid}, GPU has fallen off the bus\n"


async def remediate_through_the_agent(
    agent: Agent, kernel_log: Path, stack: Stack, xid: int, *, approve: bool = False
) -> RemediationStatus:
    """Write the XID into the node's kernel log and follow the remediation run it starts to its end
    (approving its repair when asked to)."""
    run = await report_through_the_agent(agent, kernel_log, stack, xid)
    if approve:
        await run.signal("approve", {"approver": "it", "reason": "go ahead"})
    status: RemediationStatus = await run.result()
    return status


async def report_through_the_agent(
    agent: Agent, kernel_log: Path, stack: Stack, xid: int, *, records: str = ""
) -> WorkflowHandle[Any, RemediationStatus]:
    """Write the XID (or `records` of the test's own) into the node's kernel log; the remediation run it starts."""
    written = datetime.now(UTC)
    with kernel_log.open("a") as log:
        log.write(records or xid_record(agent, xid))
    return await run_started_after(stack.server.client, NODE, written)


async def test_xid_in_the_kernel_log_is_remediated(make_stack: StackFactory, tmp_path: Path) -> None:
    stack = await make_stack(workloads=False)
    async with node_agent(stack, tmp_path, stack.server.address) as (agent, kernel_log):
        gpu_uuid = agent.nvml.device_info(FAULTY_GPU).uuid
        status = await remediate_through_the_agent(agent, kernel_log, stack, 79)

    assert status.phase is Phase.RESOLVED, status.reason
    assert status.xids == [79]
    assert status.gpu_uuids == [gpu_uuid], "the fault names the GPU the PCI address maps to"
    assert stack.cluster.reboot_requests(NODE) == 1
    node = await stack.node(NODE)
    assert not node.spec.unschedulable
    assert gpuheal_marks(node) == set()


async def test_a_temporal_outage_delays_but_does_not_lose_the_remediation(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    stack = await make_stack(workloads=False, in_process_worker=False)
    port = free_port()
    async with node_agent(stack, tmp_path, f"127.0.0.1:{port}") as (agent, kernel_log):
        with kernel_log.open("a") as log:
            log.write(xid_record(agent, 79))
        assert agent.publisher is not None
        publisher = agent.publisher

        async def spooled() -> bool:
            return publisher.pending().get("temporal", 0) == 1

        await eventually(spooled, "the fault waiting on disk for Temporal")
        assert stack.cluster.reboot_requests(NODE) == 0

        # Temporal comes back on the address the agent knows.
        server = await start_dev_server(port=port)
        try:
            assert server.address == f"127.0.0.1:{port}"
            settings = WorkerSettings(
                task_queue=stack.task_queue,
                kubeconfig=stack.worker_kubeconfig,
                simulator_url=stack.cluster.control_url,
                metrics_address=None,
                graceful_shutdown=timedelta(seconds=1),
            )
            async with running_worker(settings, server.client):
                await publisher.wait_delivered()
                handle = server.client.get_workflow_handle(workflow_id_for(NODE), result_type=RemediationStatus)
                status: RemediationStatus = await handle.result()
        finally:
            await server.shutdown()

    assert status.phase is Phase.RESOLVED, status.reason
    assert status.xids == [79]
    assert stack.cluster.reboot_requests(NODE) == 1


async def test_a_gpu_reset_fault_is_repaired_by_the_agent_without_a_reboot(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    stack = await make_stack(workloads=False)
    async with node_agent(stack, tmp_path, stack.server.address) as (agent, kernel_log):
        gpu_uuid = agent.nvml.device_info(FAULTY_GPU).uuid
        status = await remediate_through_the_agent(agent, kernel_log, stack, 48)
        log = kernel_log.read_text()

    assert status.phase is Phase.RESOLVED, status.reason
    assert status.action.name == "COMPONENT_RESET"
    [step] = status.repair
    assert step.startswith(f"GPU reset: reset {gpu_uuid}") and "acknowledgement in the kernel log" in step, step
    assert "GPU reset complete" in log, "the agent played the driver's reset in the node's kernel log"
    assert stack.cluster.reboot_requests(NODE) == 0, "a confirmed reset needs no reboot"
    node = await stack.node(NODE)
    assert not node.spec.unschedulable
    assert gpuheal_marks(node) == set()


async def test_a_gpu_reset_the_agent_refuses_falls_back_to_a_reboot(make_stack: StackFactory, tmp_path: Path) -> None:
    stack = await make_stack(workloads=False)
    async with node_agent(stack, tmp_path, stack.server.address, gpu_reset="off") as (agent, kernel_log):
        status = await remediate_through_the_agent(agent, kernel_log, stack, 48)

    assert status.phase is Phase.RESOLVED, status.reason
    assert "GPU reset is disabled on this node's agent" in status.repair[0]
    assert status.action.name == "RESTART_VM", "the reset became a reboot"
    assert stack.cluster.reboot_requests(NODE) == 1


async def test_a_fault_after_its_remediation_ended_starts_a_new_one(make_stack: StackFactory, tmp_path: Path) -> None:
    """The same XID on the same GPU, well inside the agent's flood-control window of the first, once the
    first remediation has ended without a reboot (a person took the node back) is a new fault."""
    stack = await make_stack(workloads=False)
    policy = fast_policy(require_approval=True)
    async with node_agent(stack, tmp_path, stack.server.address, remediation_policy=policy) as (agent, kernel_log):
        handle = await report_through_the_agent(agent, kernel_log, stack, 79)

        async def awaiting_approval() -> bool:
            status: RemediationStatus = await handle.query("status", result_type=RemediationStatus)
            return status.phase is Phase.AWAITING_APPROVAL

        await eventually(awaiting_approval, "the remediation waiting for a person")
        # The person takes the node back: it is uncordoned and the remediation stands down, its marks gone.
        await stack.core.patch_node(NODE, {"spec": {"unschedulable": False}})
        await handle.signal("approve", {"approver": "it", "reason": "handled by hand"})
        first: RemediationStatus = await handle.result()
        assert first.phase is Phase.CANCELLED, first.reason
        assert gpuheal_marks(await stack.node(NODE)) == set()

        second = await remediate_through_the_agent(agent, kernel_log, stack, 79, approve=True)

    assert second.phase is Phase.RESOLVED, second.reason
    assert second.xids == [79]
    assert stack.cluster.reboot_requests(NODE) == 1, "only the second remediation rebooted"


async def test_a_fault_after_a_reboot_starts_a_new_remediation(make_stack: StackFactory, tmp_path: Path) -> None:
    """The simulated reboot under a running agent is a new boot to it: its flood-control windows go."""
    stack = await make_stack(workloads=False)
    async with node_agent(stack, tmp_path, stack.server.address) as (agent, kernel_log):
        first = await remediate_through_the_agent(agent, kernel_log, stack, 79)
        second = await remediate_through_the_agent(agent, kernel_log, stack, 79)

    assert (first.phase, second.phase) == (Phase.RESOLVED, Phase.RESOLVED), (first.reason, second.reason)
    assert stack.cluster.reboot_requests(NODE) == 2


async def test_the_agent_checks_the_gpus_before_the_node_goes_back(make_stack: StackFactory, tmp_path: Path) -> None:
    """validation.level: after the reboot the worker orders a GPU check; the agent on the node runs
    it (NVML's view: DCGM is not installed here) and answers in the node's GpuCheck condition."""
    stack = await make_stack(workloads=False)
    policy = fast_policy().model_copy(update={"validation": ValidationPolicy(level=2, timeout=timedelta(seconds=30))})
    async with node_agent(stack, tmp_path, stack.server.address, remediation_policy=policy) as (agent, kernel_log):
        status = await remediate_through_the_agent(agent, kernel_log, stack, 79)

    assert status.phase is Phase.RESOLVED, status.reason
    assert status.repair[-1] == (
        "GPU check (nvml, level 2): NVML reports all 8 GPUs healthy (no lost GPU, ECC error or pending repair); "
        "level 2 asks for DCGM's diagnostic, which is not installed"
    )
    node = await stack.node(NODE)
    [check] = [c for c in node.status.conditions if c.type == "GpuCheck"]
    assert check.status == "True" and not node.spec.unschedulable


async def test_a_node_whose_agent_will_not_check_stays_out_of_service(make_stack: StackFactory, tmp_path: Path) -> None:
    stack = await make_stack(workloads=False)
    policy = fast_policy().model_copy(update={"validation": ValidationPolicy(level=1, timeout=timedelta(seconds=30))})
    async with node_agent(stack, tmp_path, stack.server.address, remediation_policy=policy, gpu_check="off") as (
        agent,
        kernel_log,
    ):
        run = await report_through_the_agent(agent, kernel_log, stack, 79)
        status = await settled(run)

    assert status.phase is Phase.ESCALATED, status.reason
    assert status.reason == f"the level 1 GPU check proved nothing: {CHECKS_OFF}"
    assert (await stack.node(NODE)).spec.unschedulable, "held cordoned for a person"
    await run.terminate("test over")


async def test_the_agent_keeps_a_diagnostics_bundle_before_the_reboot(make_stack: StackFactory, tmp_path: Path) -> None:
    """diagnostics.collect: before rebooting, the worker orders a bundle; the agent (no
    nvidia-bug-report.sh here, so an NVML probe) keeps it in its directory and says where."""
    stack = await make_stack(workloads=False)
    kept = tmp_path / "bundles"
    policy = fast_policy().model_copy(
        update={"diagnostics": DiagnosticsPolicy(collect=True, timeout=timedelta(seconds=30))}
    )
    async with node_agent(
        stack, tmp_path, stack.server.address, remediation_policy=policy, diagnostics_to=str(kept)
    ) as (agent, kernel_log):
        uuids = [gpu.uuid for gpu in agent.nvml.gpus] if isinstance(agent.nvml, FakeNvml) else []
        status = await remediate_through_the_agent(agent, kernel_log, stack, 79)

    assert status.phase is Phase.RESOLVED, status.reason
    [location] = status.diagnostics
    bundle = Path(location)
    assert bundle.parent == kept / NODE and bundle.name.endswith("-nvml-probe.json.gz")
    probe = json.loads(gzip.decompress(bundle.read_bytes()))
    assert [gpu["uuid"] for gpu in probe["gpus"]] == uuids and "XID 79" in probe["reason"]
    assert stack.cluster.reboot_requests(NODE) == 1


async def test_an_agent_that_keeps_no_bundles_does_not_hold_the_reboot_up(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    stack = await make_stack(workloads=False)
    policy = fast_policy().model_copy(
        update={"diagnostics": DiagnosticsPolicy(collect=True, timeout=timedelta(seconds=30))}
    )
    async with node_agent(stack, tmp_path, stack.server.address, remediation_policy=policy) as (agent, kernel_log):
        status = await remediate_through_the_agent(agent, kernel_log, stack, 79)

    assert status.phase is Phase.RESOLVED, status.reason
    assert f"diagnostics not collected: {BUNDLES_OFF}; rebooting anyway" in status.repair
    assert status.diagnostics == [] and stack.cluster.reboot_requests(NODE) == 1
