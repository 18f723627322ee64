"""Repeat offenders, as plain functions: which earlier remediations a fault is checked against, and when
it is escalated instead of repaired again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from gpuheal.domain.history import (
    EarlierRemediation,
    HistoryRequest,
    RemediationHistory,
    history_query,
    repeat_offence,
)
from gpuheal.domain.policy import LoopPolicy

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def earlier(
    node: str = "gpu-node-007",
    *,
    ago: timedelta | None = timedelta(hours=2),
    phase: str = "Resolved",
    gpus: tuple[str, ...] = ("GPU-aaaa",),
    serials: tuple[str, ...] = (),
    run: str = "run-1",
    repairs: int = 1,
) -> EarlierRemediation:
    """An earlier run that ended `ago` before the fault (None: still running), after an hour's work."""
    ended = None if ago is None else NOW - ago
    return EarlierRemediation(
        workflow_id=f"remediate-{node}",
        run_id=run,
        node=node,
        phase=phase,
        gpus=gpus,
        serials=serials,
        repairs=repairs,
        started_at=(ended or NOW) - timedelta(hours=1),
        closed_at=ended,
    )


def offence(*remediations: EarlierRemediation, loops: LoopPolicy | None = None, **fault: tuple[str, ...]) -> str:
    return repeat_offence(
        loops or LoopPolicy(),
        "gpu-node-001",
        fault.get("gpus", ("GPU-aaaa",)),
        fault.get("serials", ()),
        RemediationHistory(remediations=remediations),
        NOW,
    )


def test_a_gpu_that_faults_again_within_the_window_names_its_earlier_remediation_on_another_node() -> None:
    reason = offence(earlier())

    assert reason == (
        "repeat offender: GPU GPU-aaaa faulted again within 7 days, 0:00:00 of remediate-gpu-node-007 "
        "(run run-1, Resolved, ended 2026-12-06T10:00:00+00:00); not repaired again"
    )


def test_a_board_serial_finds_the_gpu_under_another_uuid() -> None:
    moved = earlier(gpus=("GPU-old",), serials=("1320221012345",))

    assert "GPU 1320221012345 faulted again" in offence(moved, gpus=("GPU-new",), serials=("1320221012345",))
    assert offence(moved, gpus=("GPU-new",)) == "", "no serial known: a new UUID is a new GPU"


def test_runs_that_repaired_nothing_do_not_count() -> None:
    """A run that escalated before any repair (a repeat offender itself, a rejection), or ended with
    the node recovered by itself, is no repair that failed to hold."""
    assert offence(earlier(phase="Released", repairs=0)) == ""
    assert "Cancelled" in offence(earlier(phase="Cancelled")), "a reboot that was then cancelled counts"


def test_a_run_still_held_counts_and_a_fault_from_before_an_earlier_ended_is_the_same_fault() -> None:
    assert "running since 2026-12-06T11:00:00+00:00" in offence(earlier(ago=None, phase="Escalated"))
    assert offence(earlier(ago=-timedelta(minutes=5))) == "", "delivered late, or reported twice"


def test_a_gpu_fault_outside_the_window_or_with_the_check_off_is_repaired() -> None:
    assert offence(earlier(ago=timedelta(days=8))) == ""
    assert offence(earlier(), loops=LoopPolicy(gpu_window=timedelta(0))) == ""


def test_a_node_remediated_too_often_within_its_window_is_escalated() -> None:
    runs = [earlier("gpu-node-001", ago=timedelta(hours=h), gpus=(), run=f"run-{h}") for h in (1, 5, 9)]
    old = earlier("gpu-node-001", ago=timedelta(hours=30), gpus=(), run="run-30")

    reason = offence(*runs, old)

    assert reason.startswith("repeat offender: node gpu-node-001 was remediated 3 times within 1 day, 0:00:00 (")
    assert "run run-1," in reason and "run run-30" not in reason
    assert offence(*runs[:2], old) == "", "two within the day is under the limit"
    assert offence(*runs, loops=LoopPolicy(max_per_node=0)) == ""
    assert offence(*runs, loops=LoopPolicy(max_per_node=4)) == ""


def test_a_node_name_given_to_a_new_machine_counts_only_the_runs_since_its_replacement() -> None:
    """EKS names nodes after private IPs, which come back; a managed instance group recreates under the name."""
    runs = [earlier("gpu-node-001", ago=timedelta(hours=h), gpus=(), run=f"run-{h}") for h in (7, 9, 11)]
    replaced = earlier("gpu-node-001", ago=timedelta(hours=5), gpus=(), run="run-5", phase="Replaced")
    since = [earlier("gpu-node-001", ago=timedelta(hours=h), gpus=(), run=f"run-{h}") for h in (1, 2)]

    assert offence(*runs, replaced, *since) == "", "two runs of the new machine, under the limit of 3"
    assert offence(*runs, *since).startswith("repeat offender: node gpu-node-001 was remediated 5 times")


def test_the_query_reads_the_node_its_gpus_and_serials_since_the_window_opened() -> None:
    request = HistoryRequest(
        node="gpu-node-001",
        gpus=("GPU-aaaa", "GPU-bbbb"),
        serials=("1320221012345",),
        since=NOW - timedelta(days=7),
        run_id="this",
    )

    assert history_query(request, "RemediationWorkflow") == (
        "WorkflowType = 'RemediationWorkflow' AND GpuhealRepairs > 0 AND "
        "(ExecutionStatus = 'Running' OR CloseTime >= '2026-11-29T12:00:00.000000Z') AND "
        "(GpuhealNode = 'gpu-node-001' OR GpuhealGpu IN ('GPU-aaaa', 'GPU-bbbb') OR "
        "GpuhealGpuSerial IN ('1320221012345'))"
    )


def test_values_a_query_cannot_quote_are_left_out_not_spliced_in() -> None:
    request = HistoryRequest(node="n1", gpus=("GPU-a' OR '1'='1", "GPU-b"), since=NOW, run_id="this")

    query = history_query(request, "RemediationWorkflow")

    assert query is not None and query.endswith("(GpuhealNode = 'n1' OR GpuhealGpu IN ('GPU-b'))")
    nothing = HistoryRequest(node="node with spaces", gpus=("GPU-a'",), since=NOW, run_id="this")
    assert history_query(nothing, "RemediationWorkflow") is None, "no query that could only fail"


def test_loop_limits_out_of_range_are_refused() -> None:
    with pytest.raises(ValidationError, match="max_per_node"):
        LoopPolicy(max_per_node=-1)
    with pytest.raises(ValidationError, match="node_window"):
        LoopPolicy(node_window=timedelta(0))
    assert LoopPolicy(max_per_node=0, gpu_window=timedelta(0)).looks_back == timedelta(0)
