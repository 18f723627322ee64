"""A reported fault starts its remediation with the static summary and details the Temporal UI shows."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from gpuheal.control.report import report_fault
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.faults import Fault
from gpuheal.domain.policy import RemediationPolicy, RepairPolicy
from gpuheal.domain.policy_document import policy_version
from gpuheal_sim.demo.devserver import DevServer

GPU = "GPU-5f3c7b2a-1e8d-4c3b-9a1f-2b7c9d0e1f23"


async def test_the_run_a_fault_starts_carries_it_in_its_summary_and_details_and_a_joining_one_changes_neither(
    dev_server: DevServer,
) -> None:
    node = f"gpu-node-{uuid.uuid4().hex[:8]}"
    policy = RemediationPolicy(repair=RepairPolicy(require_approval=True))
    first = Fault(
        node=node,
        action=RecommendedAction.RESTART_BM,
        xid=79,
        gpu_uuids=(GPU,),
        source="gpuheal-agent/kmsg",
        detected_at=datetime(2026, 12, 7, 14, 0, tzinfo=UTC),
    )
    # No worker serves this queue: the run stays as the start made it.
    queue = f"report-{uuid.uuid4()}"
    handle = await report_fault(dev_server.client, first, policy, task_queue=queue)
    try:
        await report_fault(
            dev_server.client, Fault(node=node, action=RecommendedAction.REPLACE_VM, xid=48), task_queue=queue
        )
        described = await handle.describe()

        assert await described.static_summary() == f"{node} · XID 79 · GPU-5f3c7b2a… → RESTART_BM"
        details = await described.static_details()
        assert details is not None
        assert f"**GPUs** `{GPU}`" in details
        assert "XID 79 at 2026-12-07T14:00:00+00:00 from `gpuheal-agent/kmsg`" in details
        assert f"**Policy** `{policy_version(policy)}`" in details
    finally:
        await handle.terminate("test over")
