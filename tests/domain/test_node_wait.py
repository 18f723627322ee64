"""The conditions a remediation waits for, judged on plain node states: no cluster, no Temporal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gpuheal.domain.gpu_check import GpuCheckReport
from gpuheal.domain.gpu_health import GpuHealthReport, HealthBar
from gpuheal.domain.gpu_reset import GpuResetReport
from gpuheal.domain.node_wait import (
    DELETED,
    BackFromReboot,
    GpuCheckAnswered,
    GpuResetAnswered,
    GpusHealthy,
    NodeCondition,
    NodeWaitRequest,
    NodeWaitResult,
)
from gpuheal.domain.steps import NodeState

BEFORE = "boot-before"
AFTER = "boot-after"
T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def node(*, ready: bool = True, boot_id: str = AFTER, **fields: object) -> NodeState:
    return NodeState.model_validate(
        {
            "node": "gpu-node-000",
            "exists": True,
            "ready": ready,
            "boot_id": boot_id,
            "unschedulable": True,
            "gpu_healthy": None,
            **fields,
        }
    )


ABSENT = NodeState(node="gpu-node-000", exists=False, ready=False, boot_id="", unschedulable=False, gpu_healthy=None)


def test_back_from_a_reboot_is_ready_on_a_new_boot() -> None:
    back = BackFromReboot(boot_id_before=BEFORE)
    assert back.met(node(ready=True, boot_id=AFTER))
    assert back.missing(node(ready=True, boot_id=BEFORE)) == f"the node is still on boot {BEFORE}, as before the reboot"
    assert back.missing(node(ready=False, boot_id=AFTER)) == f"the node is not Ready (boot {AFTER})"


def test_a_repair_that_is_no_reboot_needs_only_ready() -> None:
    back = BackFromReboot(boot_id_before=BEFORE, expects_new_boot=False)
    assert back.met(node(ready=True, boot_id=BEFORE))
    assert not back.met(node(ready=False, boot_id=BEFORE))


def test_gpus_healthy_is_the_health_rule_of_gpu_health() -> None:
    healthy = GpusHealthy(bar=HealthBar(boot_id_before=BEFORE, after=T0, after_what="the reboot request"))
    on_new_boot = GpuHealthReport(status="True", boot_id=AFTER, reported_at=T0 + timedelta(minutes=5))
    lingering = GpuHealthReport(status="True", boot_id=BEFORE, reported_at=T0 - timedelta(minutes=5))
    assert healthy.met(node(gpu_healthy=True, gpu_report=on_new_boot))
    assert healthy.missing(node(gpu_healthy=True, gpu_report=lingering)) == (
        f"GpuHealthy=True was reported on boot {BEFORE}, before the reboot"
    )
    assert healthy.missing(node()) == "the node has no GpuHealthy condition (is the gpuheal agent running on it?)"


def test_a_gpu_reset_is_answered_by_the_report_of_that_order_ok_or_not() -> None:
    answered = GpuResetAnswered(order_id="order-2")
    failed = GpuResetReport(id="order-2", ok=False, detail="GPU busy", at=T0)
    earlier = GpuResetReport(id="order-1", ok=True, detail="reset", at=T0)
    assert answered.met(node(gpu_reset=failed))
    assert (
        answered.missing(node(gpu_reset=earlier))
        == "the node's agent last answered GPU reset order order-1, not order-2"
    )
    assert answered.missing(node()) == "the node's agent has not answered a GPU reset order"


def test_a_gpu_check_is_answered_by_its_own_condition_not_by_a_reset_s() -> None:
    answered = GpuCheckAnswered(order_id="run-1/check-0")
    passed = GpuCheckReport(id="run-1/check-0", ok=True, detail="dcgmi diag -r 2: all passed", at=T0, tool="dcgmi")
    reset = GpuResetReport(id="run-1/check-0", ok=True, detail="reset", at=T0)
    assert answered.met(node(gpu_check=passed))
    assert answered.missing(node(gpu_reset=reset)) == "the node's agent has not answered a GPU check order"
    assert answered.missing(node(gpu_check=passed.model_copy(update={"id": "run-1/check-1"}))) == (
        "the node's agent last answered GPU check order run-1/check-1, not run-1/check-0"
    )


@pytest.mark.parametrize(
    "condition",
    [
        BackFromReboot(boot_id_before=BEFORE, expects_new_boot=False),
        GpusHealthy(bar=HealthBar()),
        GpuResetAnswered(order_id="order-1"),
    ],
)
def test_no_condition_is_met_by_a_deleted_node(condition: NodeCondition) -> None:
    assert condition.missing(ABSENT) == DELETED


def test_the_request_carries_its_condition_by_kind() -> None:
    """The activity receives the request as JSON and must judge it with the condition the workflow chose."""
    request = NodeWaitRequest(
        node="gpu-node-000", condition=GpuResetAnswered(order_id="order-1"), timeout=timedelta(minutes=3)
    )
    decoded = NodeWaitRequest.model_validate_json(request.model_dump_json())
    assert decoded == request and isinstance(decoded.condition, GpuResetAnswered)


def test_a_wait_on_a_node_that_is_gone_reads_as_deleted() -> None:
    assert NodeWaitResult(reached=False, state=ABSENT).deleted
    assert not NodeWaitResult(reached=True, state=node()).deleted
