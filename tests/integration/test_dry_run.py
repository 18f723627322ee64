"""A dry run on the simulated fleet, with the real worker: the cluster's whole state is byte-identical
afterwards, no machine was asked to reboot, and the worker only read."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from gpuheal.control import governor, remediations
from gpuheal.control.governor import governor_id_for
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.faults import Fault
from gpuheal.domain.phases import Phase
from tests.chart import service_account
from tests.integration.conftest import StackFactory, fast_policy, settled

NODE = "gpu-node-001"
READ_VERBS = {"get", "list", "watch"}


async def quiet_snapshot(take: Callable[[], bytes]) -> bytes:
    """The cluster's state once its controllers are done (pods started): two reads 0.3 s apart agree."""
    before = take()
    for _ in range(100):
        await asyncio.sleep(0.3)
        after = take()
        if after == before:
            return after
        before = after
    raise AssertionError("the simulated cluster never settled")


async def test_a_dry_run_leaves_the_cluster_byte_identical_and_calls_no_provider(make_stack: StackFactory) -> None:
    stack = await make_stack()
    worker = "system:serviceaccount:{}:{}".format(*service_account("worker"))
    pods = await stack.pods_on(NODE)
    # A drain leaves a DaemonSet's pods and mirror (static) pods where they are.
    staying = {
        pod.metadata.name
        for pod in pods
        if any(owner.kind == "DaemonSet" for owner in pod.metadata.owner_references or [])
        or "kubernetes.io/config.mirror" in (pod.metadata.annotations or {})
    }
    movable = {pod.metadata.name for pod in pods} - staying
    assert movable and staying, "the demo workloads put both kinds of pod on the node"
    before = await quiet_snapshot(stack.cluster.snapshot)
    reads_before = stack.cluster.accesses(worker)

    fault = Fault(node=NODE, action=RecommendedAction.RESTART_BM, xid=79, event_id=str(uuid.uuid4()))
    handle = await remediations.report_fault(
        stack.server.client, fault, fast_policy().model_copy(update={"dry_run": True}), task_queue=stack.task_queue
    )
    done = await settled(handle)

    assert done.phase is Phase.DRY_RUN, done.reason
    assert stack.cluster.snapshot() == before
    assert stack.cluster.reboot_requests(NODE) == 0
    # No permit asked for: the fleet governor (started by the worker) saw no request and granted nothing.
    fleet = await governor.status(stack.server.client, governor_id_for(stack.task_queue))
    assert (fleet.state.held, fleet.state.waiting, fleet.state.recent_grants) == ((), (), ())
    # Everything the worker ever did on this cluster was a read; the dry run read the node's pods.
    assert {access.verb for access in stack.cluster.accesses(worker)} <= READ_VERBS
    assert "pods" in {access.resource for access in stack.cluster.accesses(worker) - reads_before}
    said = "\n".join(done.plan)
    assert f"would cordon {NODE}" in said and f"would reboot {NODE} through simulator" in said
    for pod in movable:
        assert f"/{pod} " in said, (pod, said)
    for pod in staying:
        assert pod not in said
