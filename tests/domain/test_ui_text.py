"""The texts the Temporal UI shows of a remediation: summary and details at the start, and the phases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.faults import Fault
from gpuheal.domain.phases import Phase
from gpuheal.domain.remediation import PhaseEntry
from gpuheal.domain.ui_text import (
    MAX_DETAILS_BYTES,
    MAX_SUMMARY_BYTES,
    code,
    elapsed,
    fit_markdown,
    phase_checklist,
    start_details,
    start_summary,
)

GPU = "GPU-5f3c7b2a-1e8d-4c3b-9a1f-2b7c9d0e1f23"
AT = datetime(2026, 12, 7, 14, 0, tzinfo=UTC)


def test_the_summary_names_node_xid_gpu_and_the_action_asked_for() -> None:
    fault = Fault(node="gpu-node-001", action=RecommendedAction.RESTART_BM, xid=79, gpu_uuids=(GPU,))

    assert start_summary(fault) == "gpu-node-001 · XID 79 · GPU-5f3c7b2a… → RESTART_BM"


def test_a_long_list_of_gpus_is_shortened_and_counted() -> None:
    gpus = tuple(f"GPU-{n:08x}-0000-0000-0000-000000000000" for n in range(8))
    fault = Fault(node="n", action=RecommendedAction.RESTART_VM, xid=48, gpu_uuids=gpus)

    assert start_summary(fault) == "n · XID 48 · GPU-00000000…, GPU-00000001… +6 more → RESTART_VM"


def test_a_fault_without_xid_is_named_by_its_message_and_a_huge_one_still_fits() -> None:
    fault = Fault(node="n" * 253, action=RecommendedAction.REPLACE_VM, message="NVLink down\nsecond line")
    assert start_summary(fault) == f"{'n' * 253} · NVLink down → REPLACE_VM"

    huge = Fault(node="n", action=RecommendedAction.RESTART_BM, message="m" * 16384, gpu_uuids=(GPU,) * 64)
    assert len(start_summary(huge).encode()) <= MAX_SUMMARY_BYTES
    assert len(start_details(huge, "").encode()) <= MAX_DETAILS_BYTES


def test_the_details_name_the_gpus_the_first_fault_with_time_and_source_and_the_policy() -> None:
    fault = Fault(
        node="gpu-node-001",
        action=RecommendedAction.RESTART_BM,
        xid=79,
        gpu_uuids=(GPU,),
        source="gpuheal-agent/kmsg",
        message="GPU has fallen off the bus",
        detected_at=AT,
    )

    details = start_details(fault, "3f2a9c1e")

    assert "**Node** `gpu-node-001`" in details
    assert f"**GPUs** `{GPU}`" in details
    assert (
        "**First fault** XID 79 at 2026-12-07T14:00:00+00:00 from `gpuheal-agent/kmsg`, asking for RESTART_BM: "
        "GPU has fallen off the bus" in details
    )
    assert "**Policy** `3f2a9c1e`" in details
    assert "**Policy** the worker's" in start_details(fault, "")


def test_the_checklist_times_each_phase_passed_merges_repeats_and_marks_the_current_one() -> None:
    history = [
        PhaseEntry(phase=Phase.DETECTED, entered_at=AT),
        PhaseEntry(phase=Phase.QUARANTINED, entered_at=AT + timedelta(seconds=0.4)),
        PhaseEntry(phase=Phase.DRAINING, entered_at=AT + timedelta(seconds=1)),
        PhaseEntry(phase=Phase.REPAIRING, entered_at=AT + timedelta(minutes=4, seconds=6)),
        PhaseEntry(phase=Phase.REPAIRING, entered_at=AT + timedelta(minutes=5)),
        PhaseEntry(phase=Phase.WAITING_FOR_NODE, entered_at=AT + timedelta(minutes=9)),
    ]

    assert phase_checklist(history, AT + timedelta(minutes=9)).splitlines() == [
        "- ✓ Detected — 0.4s",
        "- ✓ Quarantined — 0.6s",
        "- ✓ Draining — 4m 05s",
        "- ✓ Repairing — 4m 54s",
        "- ▶ **WaitingForNode** — now, since 14:09:00 UTC",
    ]


def test_a_final_phase_is_marked_with_the_whole_run_s_time() -> None:
    history = [
        PhaseEntry(phase=Phase.DETECTED, entered_at=AT),
        PhaseEntry(phase=Phase.RESOLVED, entered_at=AT + timedelta(hours=2, minutes=3)),
    ]

    last = phase_checklist(history, AT + timedelta(hours=2, minutes=3)).splitlines()[-1]
    assert last == "- ■ **Resolved** at 16:03:00 UTC, 2h 03m after Detected"
    assert phase_checklist([], AT) == ""


def test_durations_are_short() -> None:
    assert [elapsed(timedelta(seconds=s)) for s in (0, 12, 3600 * 49 + 60)] == ["0.0s", "12s", "2d 01h"]


def test_a_message_that_starts_with_blank_lines_is_named_by_its_first_words() -> None:
    fault = Fault(node="n", action=RecommendedAction.REPLACE_VM, message="\n\n  NVLink   down\n\tsecond line")
    assert start_summary(fault) == "n · NVLink down → REPLACE_VM"
    blank = Fault(node="n", action=RecommendedAction.REPLACE_VM, message=" \n ")
    assert start_summary(blank) == "n → REPLACE_VM"


def test_free_text_shows_as_written_and_a_source_with_backticks_stays_one_code_span() -> None:
    fault = Fault(
        node="n",
        action=RecommendedAction.RESTART_BM,
        xid=79,
        source="agent`s `kmsg`",
        message="**not bold** `not code` <b>x</b> [link](http://x) a_b\n# not a heading",
    )
    details = start_details(fault, "")

    assert "from `` agent`s `kmsg` ``, asking for RESTART_BM" in details, details
    assert r": \*\*not bold\*\* \`not code\` \<b\>x\</b\> \[link\](http://x) a\_b # not a heading" in details, details


def test_a_code_span_holds_any_backticks() -> None:
    assert code("plain") == "`plain`"
    assert code("a `b` c") == "``a `b` c``"
    assert code("`x``") == "``` `x`` ```"


def test_a_cut_never_leaves_a_code_span_open() -> None:
    text = "see " + "`" + "x" * 100 + "` and more"
    cut = fit_markdown(text, 60)
    assert cut == "see … [truncated 111 bytes]"
    assert fit_markdown("`a` b " * 40, 60).count("`") % 2 == 0
    # Many GPUs, each a code span: the details are cut between two of them.
    gpus = tuple(f"GPU-{n:08x}-0000-0000-0000-000000000000" for n in range(1000))
    details = start_details(Fault(node="n", action=RecommendedAction.RESTART_BM, xid=79, gpu_uuids=gpus), "")
    assert len(details.encode()) <= MAX_DETAILS_BYTES
    assert details.count("`") % 2 == 0 and "[truncated" in details, details[-80:]


def test_a_phase_begun_on_another_day_says_its_date() -> None:
    history = [
        PhaseEntry(phase=Phase.DETECTED, entered_at=AT),
        PhaseEntry(phase=Phase.ESCALATED, entered_at=AT + timedelta(hours=1)),
    ]
    three_days_on = AT + timedelta(days=3)

    assert phase_checklist(history, three_days_on).splitlines()[-1] == (
        "- ▶ **Escalated** — now, since 2026-12-07 15:00:00 UTC"
    )
    crossed_midnight = [*history, PhaseEntry(phase=Phase.RESOLVED, entered_at=AT + timedelta(hours=11))]
    assert phase_checklist(crossed_midnight, AT + timedelta(hours=11)).splitlines()[-1] == (
        "- ■ **Resolved** at 2026-12-08 01:00:00 UTC, 11h 00m after Detected"
    )
