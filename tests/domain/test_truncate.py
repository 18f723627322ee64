"""Free text cut to a byte budget (gpuheal.domain.truncate), and the fault that carries it."""

from __future__ import annotations

import pytest

from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.faults import MAX_MESSAGE_BYTES, MAX_SOURCE_BYTES
from gpuheal.domain.health import HealthEvent
from gpuheal.domain.truncate import truncate


def test_text_within_the_budget_is_kept_as_it_is() -> None:
    assert truncate("XID 79", 6) == "XID 79"
    assert truncate("", 0) == ""


@pytest.mark.parametrize("budget", [40, 41, 42, 43, 100])
def test_longer_text_keeps_whole_characters_and_names_what_was_cut(budget: int) -> None:
    text = "GPU " + "é" * 100  # 204 bytes
    cut = truncate(text, budget)
    kept, marker = cut.split("… [truncated ")
    assert text.startswith(kept)
    assert marker == f"{len(text.encode()) - len(kept.encode())} bytes]"
    assert budget - 1 <= len(cut.encode()) <= budget  # at most one byte lost to a split "é"
    assert truncate(text, budget) == cut


def test_a_budget_smaller_than_the_marker_leaves_nothing() -> None:
    assert truncate("x" * 100, 10) == ""


def test_a_fault_carries_at_most_its_limits_of_text() -> None:
    event = HealthEvent(
        id="e1",
        node="n1",
        agent="a" * MAX_SOURCE_BYTES,
        check_name="SysLogsXIDError",
        is_fatal=True,
        is_healthy=False,
        message="m" * (3 * MAX_MESSAGE_BYTES),
        action=RecommendedAction.RESTART_BM,
    )
    fault = event.to_fault()
    assert len(fault.message.encode()) <= MAX_MESSAGE_BYTES
    assert fault.message.endswith(" bytes]")
    assert len(fault.source.encode()) <= MAX_SOURCE_BYTES
    assert fault.source.startswith("a" * 64)
