"""The on-disk spool: order, the bound, and surviving a restart."""

from __future__ import annotations

from pathlib import Path

from gpuheal.agents.publisher.spool import Spool
from tests.agents.publisher.events import fatal_xid, non_fatal


def drain(spool: Spool) -> list[str]:
    ids = []
    while (item := spool.head()) is not None:
        entry, event = item
        ids.append(event.id)
        spool.remove(entry)
    return ids


def test_events_come_back_in_order_after_a_restart(tmp_path: Path) -> None:
    events = [fatal_xid("n1"), non_fatal("n1"), fatal_xid("n2")]
    spool = Spool(tmp_path / "spool", 10)
    for event in events:
        assert spool.append(event, actionable=event.needs_remediation)
    first = spool.head()
    assert first is not None
    spool.remove(first[0])

    reopened = Spool(tmp_path / "spool", 10)
    assert len(reopened) == 2
    head, again = reopened.head(), reopened.head()
    assert head is not None and head == again  # reading does not consume
    assert head[1].id == events[1].id
    assert drain(reopened) == [events[1].id, events[2].id]
    # Later entries continue the sequence, so order holds across restarts.
    assert reopened.append(events[0], actionable=True)
    assert drain(Spool(tmp_path / "spool", 10)) == [events[0].id]


def test_the_bound_drops_the_oldest_non_actionable_first(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 3)
    fault, chatter1, chatter2, chatter3 = fatal_xid("n"), non_fatal("n"), non_fatal("n"), non_fatal("n")
    for event in (fault, chatter1, chatter2, chatter3):
        assert spool.append(event, actionable=event.needs_remediation)
    assert len(spool) == 3
    assert spool.dropped == 1
    assert drain(spool) == [fault.id, chatter2.id, chatter3.id]


def test_actionable_events_are_never_dropped(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 2)
    faults = [fatal_xid("n") for _ in range(2)]
    for fault in faults:
        assert spool.append(fault, actionable=True)
    # Full of faults: chatter is refused, a further fault is kept over the bound.
    assert not spool.append(non_fatal("n"), actionable=False)
    assert spool.refused == 1
    late = fatal_xid("n")
    assert spool.append(late, actionable=True)
    assert len(spool) == 3
    assert drain(spool) == [faults[0].id, faults[1].id, late.id]


def test_a_full_spool_makes_room_with_chatter_for_a_fault(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 2)
    chatter, fault1, fault2 = non_fatal("n"), fatal_xid("n"), fatal_xid("n")
    spool.append(chatter, actionable=False)
    spool.append(fault1, actionable=True)
    spool.append(fault2, actionable=True)
    assert drain(spool) == [fault1.id, fault2.id]


def test_torn_and_corrupt_entries_are_discarded(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10)
    good = fatal_xid("n")
    spool.append(non_fatal("n"), actionable=False)
    spool.append(good, actionable=True)
    first = sorted(tmp_path.glob("*.json"))[0]
    first.write_text("{not json")
    (tmp_path / "000000000009.a.json.tmp").write_text("half a write")
    (tmp_path / "README").write_text("not an entry")

    reopened = Spool(tmp_path, 10)
    assert not (tmp_path / "000000000009.a.json.tmp").exists()
    assert drain(reopened) == [good.id]
    assert (tmp_path / "README").exists()
