"""Open faults: a condition reflects every open fault, and a healthy report closes only what it names."""

from __future__ import annotations

from gpuheal.agents.publisher.ledger import FAULT_REASON, HEALTHY_REASON, OpenFaults
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.health import CHECK_GPU_RESET
from tests.agents.publisher.events import GPU_A, GPU_B, fatal_xid, healthy, non_fatal


def test_faults_open_and_close_per_gpu() -> None:
    faults = OpenFaults()
    faults.apply(fatal_xid("n", GPU_A, xid=79))
    faults.apply(fatal_xid("n", GPU_B, xid=48, action=RecommendedAction.COMPONENT_RESET, check_name="DcgmEcc"))

    node = faults.node_verdict("n")
    assert (node.healthy, node.status, node.reason) == (False, "False", "DcgmEcc")
    assert GPU_A in node.message and "XID 79" in node.message and GPU_B in node.message
    assert node.action is RecommendedAction.RESTART_BM  # the stronger of the two

    faults.apply(healthy("n", GPU_B, check_name="DcgmEcc"))
    assert faults.gpu_verdict("n", GPU_B).healthy
    assert not faults.gpu_verdict("n", GPU_A).healthy
    assert not faults.node_verdict("n").healthy  # GPU A is still bad

    faults.apply(healthy("n", check_name="SysLogsXIDError"))  # after the reboot: every GPU
    verdict = faults.node_verdict("n")
    assert (verdict.healthy, verdict.status, verdict.reason) == (True, "True", HEALTHY_REASON)
    assert verdict.action is RecommendedAction.NONE


def test_non_fatal_events_open_nothing_and_node_wide_faults_reach_every_gpu() -> None:
    faults = OpenFaults()
    faults.apply(non_fatal("n"))
    assert faults.node_verdict("n").healthy
    faults.apply(fatal_xid("n", check_name="", entities=()))
    assert faults.node_verdict("n").reason == FAULT_REASON
    assert not faults.gpu_verdict("n", GPU_B).healthy
    assert faults.node_verdict("other").healthy


def test_a_healthy_report_closes_only_its_own_check_and_a_reset_closes_all() -> None:
    faults = OpenFaults()
    faults.apply(fatal_xid("n", GPU_A, xid=79))
    faults.apply(non_fatal("n", GPU_A))  # an XID 13 after the 79: still a problem, never a recovery
    assert not faults.gpu_verdict("n", GPU_A).healthy
    faults.apply(healthy("n", GPU_A, check_name="NvmlEcc"))  # another monitor's recovery
    assert not faults.gpu_verdict("n", GPU_A).healthy, "an ECC recovery does not close an XID"

    faults.apply(healthy("n", GPU_A, check_name=CHECK_GPU_RESET))
    assert faults.gpu_verdict("n", GPU_A).healthy, "a GPU reset closes every fault of that GPU"
