"""The on-disk spool: order, the bounds (entries, bytes, memory), full disks and surviving a restart."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from gpuheal.agents.publisher import spool as spool_module
from gpuheal.agents.publisher.spool import Spool, SpoolFull, SpoolLimits
from gpuheal.domain.health import HealthEvent
from tests.agents.publisher.disks import BrokenDisk, FullDisk
from tests.agents.publisher.events import fatal_xid, non_fatal


def drain(spool: Spool) -> list[str]:
    ids = []
    while (item := spool.head()) is not None:
        entry, event = item
        ids.append(event.id)
        spool.remove(entry)
    return ids


def size_of(event: HealthEvent) -> int:
    """What the event takes on disk as a spool entry."""
    return len(event.model_dump_json().encode())


def limits(entries: int) -> SpoolLimits:
    return SpoolLimits(max_entries=entries)


def test_events_come_back_in_order_after_a_restart(tmp_path: Path) -> None:
    events = [fatal_xid("n1"), non_fatal("n1"), fatal_xid("n2")]
    spool = Spool(tmp_path / "spool", limits(10))
    for event in events:
        assert spool.append(event, actionable=event.needs_remediation)
    first = spool.head()
    assert first is not None
    spool.remove(first[0])

    reopened = Spool(tmp_path / "spool", limits(10))
    assert len(reopened) == 2
    head, again = reopened.head(), reopened.head()
    assert head is not None and head == again  # reading does not consume
    assert head[1].id == events[1].id
    assert drain(reopened) == [events[1].id, events[2].id]
    # Later entries continue the sequence, so order holds across restarts.
    assert reopened.append(events[0], actionable=True)
    assert drain(Spool(tmp_path / "spool", limits(10))) == [events[0].id]


def test_the_bound_drops_the_oldest_non_actionable_first(tmp_path: Path) -> None:
    spool = Spool(tmp_path, limits(3))
    fault, chatter1, chatter2, chatter3 = fatal_xid("n"), non_fatal("n"), non_fatal("n"), non_fatal("n")
    for event in (fault, chatter1, chatter2, chatter3):
        assert spool.append(event, actionable=event.needs_remediation)
    assert len(spool) == 3
    assert spool.shed == 1
    assert drain(spool) == [fault.id, chatter2.id, chatter3.id]


def test_actionable_events_are_never_dropped(tmp_path: Path) -> None:
    spool = Spool(tmp_path, limits(2))
    faults = [fatal_xid("n") for _ in range(2)]
    for fault in faults:
        assert spool.append(fault, actionable=True)
    # Full of faults: chatter is refused, a further fault is held in memory past the bound.
    assert not spool.append(non_fatal("n"), actionable=False)
    assert spool.refused == 1
    late = fatal_xid("n")
    assert spool.append(late, actionable=True)
    assert len(spool) == 3
    assert (spool.stats().entries, spool.stats().held) == (2, 1)
    assert drain(spool) == [faults[0].id, faults[1].id, late.id]


def test_a_full_spool_makes_room_with_chatter_for_a_fault(tmp_path: Path) -> None:
    spool = Spool(tmp_path, limits(2))
    chatter, fault1, fault2 = non_fatal("n"), fatal_xid("n"), fatal_xid("n")
    spool.append(chatter, actionable=False)
    spool.append(fault1, actionable=True)
    spool.append(fault2, actionable=True)
    assert drain(spool) == [fault1.id, fault2.id]


def test_torn_writes_are_discarded_and_strangers_left_alone(tmp_path: Path) -> None:
    spool = Spool(tmp_path, limits(10))
    good = fatal_xid("n")
    spool.append(good, actionable=True)
    (tmp_path / "000000000009.a.json.tmp").write_text("half a write")
    (tmp_path / "README").write_text("not an entry")

    reopened = Spool(tmp_path, limits(10))
    assert not (tmp_path / "000000000009.a.json.tmp").exists()
    assert drain(reopened) == [good.id]
    assert (tmp_path / "README").exists()


def test_the_byte_budget_sheds_the_oldest_non_actionable_first(tmp_path: Path) -> None:
    chatter = [non_fatal("n") for _ in range(10)]
    fault = fatal_xid("n")
    budget = 4 * size_of(chatter[0]) + size_of(fault) // 2
    spool = Spool(tmp_path, SpoolLimits(max_bytes=budget))
    for event in chatter:
        assert spool.append(event, actionable=False)
    assert spool.append(fault, actionable=True)

    stats = spool.stats()
    on_disk = sum(path.stat().st_size for path in tmp_path.glob("*.json"))
    assert stats.bytes == on_disk <= budget
    assert stats.shed == len(chatter) + 1 - stats.entries
    kept = drain(spool)
    assert kept[-1] == fault.id
    assert kept[:-1] == [event.id for event in chatter[-(len(kept) - 1) :]], "the oldest chatter went first"


def test_a_budget_taken_by_faults_holds_further_faults_in_memory_in_order(tmp_path: Path) -> None:
    faults = [fatal_xid("n") for _ in range(5)]
    budget = 2 * size_of(faults[0]) + size_of(faults[0]) // 2
    spool = Spool(tmp_path, SpoolLimits(max_bytes=budget))
    for fault in faults:
        assert spool.append(fault, actionable=True)  # never raises, never drops
    stats = spool.stats()
    assert (stats.entries, stats.held) == (2, 3)
    assert stats.bytes <= budget
    assert not spool.append(non_fatal("n"), actionable=False), "room that frees is for the faults"
    assert spool.refused == 1

    # Delivering the oldest frees room: the oldest held fault goes to disk, in its place.
    head = spool.head()
    assert head is not None and head[1].id == faults[0].id
    spool.remove(head[0])
    assert spool.stats().held == 2
    assert len(list(tmp_path.glob("*.a.json"))) == 2
    assert drain(spool) == [fault.id for fault in faults[1:]]


def test_past_the_memory_hold_a_fault_is_refused_never_dropped(tmp_path: Path) -> None:
    faults = [fatal_xid("n") for _ in range(4)]
    size = size_of(faults[0])
    spool = Spool(tmp_path, SpoolLimits(max_bytes=size + size // 2, max_held_bytes=2 * size + size // 2))
    for fault in faults[:3]:
        assert spool.append(fault, actionable=True)  # one on disk, two in memory
    with pytest.raises(SpoolFull):
        spool.append(faults[3], actionable=True)
    assert spool.stats().refused_actionable == 1
    assert drain(spool) == [fault.id for fault in faults[:3]]


def test_a_full_disk_sheds_chatter_for_faults_and_holds_what_still_does_not_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chatter = [non_fatal("n") for _ in range(3)]
    faults = [fatal_xid("n") for _ in range(6)]
    disk = FullDisk(tmp_path, capacity=4 * FullDisk.BLOCK)  # four entries
    monkeypatch.setattr(spool_module, "write_durably", disk)
    spool = Spool(tmp_path)  # the default budget, far above what the disk holds
    for event in chatter:
        assert spool.append(event, actionable=False)
    for fault in faults:
        assert spool.append(fault, actionable=True)

    stats = spool.stats()
    assert stats.shed == len(chatter), "every non-actionable entry made room before a fault was held"
    assert (stats.entries, stats.held) == (4, 2)
    assert not spool.append(non_fatal("n"), actionable=False)

    # Room frees on the disk (a person cleans up): held faults are written at the next chance.
    disk.capacity = 64 * FullDisk.BLOCK
    assert spool.write_held() == 0
    assert len(list(tmp_path.glob("*.a.json"))) == len(faults)
    assert drain(Spool(tmp_path)) == [fault.id for fault in faults]


def test_an_io_error_on_write_holds_the_fault_and_refuses_chatter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path)
    monkeypatch.setattr(spool_module, "write_durably", BrokenDisk(errno.EIO))
    fault = fatal_xid("n")
    assert not spool.append(non_fatal("n"), actionable=False)
    assert spool.append(fault, actionable=True)
    assert spool.stats().held == 1
    assert spool.write_held() == 1, "retried, and still refused"
    assert drain(spool) == [fault.id], "delivered from memory"
    assert spool.stats().held == 0
    assert not list(tmp_path.iterdir())


def test_a_failed_directory_flush_after_a_fault_shed_chatter_in_its_batch_holds_the_fault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch's one directory flush fails (a sick disk) after a fault of the batch shed an entry
    written earlier in it (a full spool): the shed entry is gone already, and the fault, whose rename
    may not have reached the disk, is held in memory rather than counted on disk."""

    def refused(directory: Path) -> None:
        raise OSError(errno.EIO, "input/output error", str(directory))

    monkeypatch.setattr(spool_module, "sync_directory", refused)
    spool = Spool(tmp_path, SpoolLimits(max_entries=2))
    chatter = [non_fatal("n") for _ in range(2)]
    fault = fatal_xid("n")

    taken = spool.append_batch([(chatter[0], False), (chatter[1], False), (fault, True)])

    stats = spool.stats()
    assert stats.shed == 1, "the fault made room by shedding the oldest chatter"
    assert (stats.entries, stats.held) == (0, 1), "nothing counted on disk whose rename was not flushed"
    assert taken[1:] == [False, True], "the chatter left is refused, the fault is taken (held)"
    assert drain(spool) == [fault.id]


def test_a_smaller_budget_after_a_restart_is_over_budget_until_room_is_made(tmp_path: Path) -> None:
    chatter = [non_fatal("n") for _ in range(4)]
    spool = Spool(tmp_path)
    for event in chatter:
        spool.append(event, actionable=False)

    smaller = Spool(tmp_path, SpoolLimits(max_bytes=2 * size_of(chatter[0]) + 1))
    assert smaller.stats().over_budget
    late = non_fatal("n")
    assert smaller.append(late, actionable=False)  # sheds the oldest until the new one fits
    assert not smaller.stats().over_budget
    assert drain(smaller) == [chatter[3].id, late.id]
