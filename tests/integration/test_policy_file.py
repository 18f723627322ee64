"""`gpuheal worker --policy FILE` on the simulated fleet: remediations decide by the file, an edit is
taken while the worker runs (the governor's limits with it), and a bad edit leaves the policy in force."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from gpuheal.control import governor, remediations
from gpuheal.control.governor import governor_id_for
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.faults import Fault
from gpuheal.domain.fleet import FleetBudget, FleetPolicy
from gpuheal.domain.phases import Phase
from gpuheal.domain.policy_document import PolicyDocument
from gpuheal.domain.remediation import RemediationStatus
from gpuheal.policyfile import read_policy
from tests.integration.conftest import (
    Stack,
    StackFactory,
    WorkerFactory,
    eventually,
    fast_policy,
    phase_of,
    settled,
)


def policy_text(*, approval: bool, max_concurrent: int) -> str:
    """A policy file with the tests' fast timings, as an operator would write it (YAML, names)."""
    document = PolicyDocument(
        **fast_policy(require_approval=approval).model_dump(),
        fleet=FleetPolicy(budget=FleetBudget(max_concurrent=max_concurrent, max_percent=100)),
    )
    text: str = yaml.safe_dump(document.model_dump(mode="json"), sort_keys=False)
    return "# written by the test\n" + text


async def report_without_policy(stack: Stack, node: str) -> Any:
    """A fault reported as the node agent reports it: without a policy, so the worker's decides."""
    stack.cluster.inject_fault(node, xid=79, gpu=0)
    fault = Fault(node=node, action=RecommendedAction.RESTART_BM, xid=79, event_id=str(uuid.uuid4()))
    return await remediations.report_fault(stack.server.client, fault, task_queue=stack.task_queue)


async def awaiting_approval(handle: Any) -> RemediationStatus:
    async def asks() -> bool:
        return await phase_of(handle) == Phase.AWAITING_APPROVAL.value

    await eventually(asks, "the remediation waiting for a person's approval", timeout=30)
    status: RemediationStatus = await handle.query("status", result_type=RemediationStatus)
    return status


async def test_the_worker_decides_by_its_policy_file_and_takes_an_edit_while_it_runs(
    make_stack: StackFactory, spawn_worker: WorkerFactory, tmp_path: Path
) -> None:
    stack = await make_stack(in_process_worker=False, nodes=4)
    path = tmp_path / "policy.yaml"
    path.write_text(policy_text(approval=False, max_concurrent=1))
    first = read_policy(path).version
    worker = await spawn_worker(stack, "--policy", str(path), "--policy-reload-seconds", "0.2")
    governor_id = governor_id_for(stack.task_queue)

    resolved: RemediationStatus = await settled(await report_without_policy(stack, "gpu-node-001"))
    assert (resolved.phase, resolved.policy_version) == (Phase.RESOLVED, first)
    assert (await governor.status(stack.server.client, governor_id)).policy.budget.max_concurrent == 1

    # The operator edits the ConfigMap: every repair now waits for a person, and two nodes may be out.
    path.write_text(policy_text(approval=True, max_concurrent=2))
    second = read_policy(path).version

    async def governor_took_it() -> bool:
        status = await governor.status(stack.server.client, governor_id)
        return status.policy.budget.max_concurrent == 2

    await eventually(governor_took_it, "the governor's limits from the edited file")
    waiting = await awaiting_approval(await report_without_policy(stack, "gpu-node-002"))
    assert waiting.policy_version == second

    # A bad edit (a typo'd field) is read and refused, naming its line: the next remediation still
    # runs under the second policy.
    path.write_text(policy_text(approval=True, max_concurrent=2).replace("max_concurrent", "max_concurent"))

    async def refused() -> bool:
        return f"policy file not used; policy {second} stays in force" in spawn_worker.log(worker)

    await eventually(refused, "the worker refusing the bad edit")
    assert "fleet.budget.max_concurent: Extra inputs are not permitted" in spawn_worker.log(worker)
    kept = await awaiting_approval(await report_without_policy(stack, "gpu-node-003"))
    assert kept.policy_version == second
    assert (await governor.status(stack.server.client, governor_id)).policy.budget.max_concurrent == 2
