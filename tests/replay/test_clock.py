"""A recorded line's time, from each stamp a kernel log comes with, and where a node's boots begin."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gpuheal.replay.clock import EPOCH, NodeClock, Stamp, read_stamp

BODY = "NVRM: Xid (PCI:0000:3b:00): 79, pid=0, GPU has fallen off the bus."


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # journald short-iso, RFC 5424 syslog (with its version), dmesg --time-format iso
        (f"2026-11-23T02:07:01+0000 host kernel: {BODY}", Stamp(at=datetime(2026, 11, 23, 2, 7, 1, tzinfo=UTC))),
        (
            f"<34>1 2026-11-23T03:07:01.250+01:00 host kernel - - - {BODY}",
            Stamp(at=datetime(2026, 11, 23, 2, 7, 1, 250000, tzinfo=UTC)),
        ),
        (f"2026-11-23T03:07:01+01 {BODY}", Stamp(at=datetime(2026, 11, 23, 2, 7, 1, tzinfo=UTC))),
        (f"2026-11-23T02:07:01,123456Z {BODY}", Stamp(at=datetime(2026, 11, 23, 2, 7, 1, 123456, tzinfo=UTC))),
        # dmesg -T
        (f"[Mon Nov 23 02:07:01 2026] {BODY}", Stamp(at=datetime(2026, 11, 23, 2, 7, 1, tzinfo=UTC))),
        # BSD syslog: the year is the caller's
        (f"Nov  3 02:07:01 host kernel: {BODY}", Stamp(at=datetime(2025, 11, 3, 2, 7, 1, tzinfo=UTC))),
        (f"Nov 23 02:07:01.5 host kernel: {BODY}", Stamp(at=datetime(2025, 11, 23, 2, 7, 1, 500000, tzinfo=UTC))),
        # /dev/kmsg records and plain dmesg count from the boot
        (f"3,812,6085126134,-;{BODY}", Stamp(since_boot=timedelta(microseconds=6085126134))),
        (f"[ 4821.337154] {BODY}", Stamp(since_boot=timedelta(seconds=4821.337154))),
        # no stamp; a date that does not exist; dates beyond the calendar: none
        (BODY, None),
        (f"Feb 30 02:07:01 host kernel: {BODY}", None),
        (f"9999-12-31T23:59:59-01:00 {BODY}", None),
        (f"3,1,{'9' * 20},-;{BODY}", None),
    ],
)
def test_each_stamp_is_read(line: str, expected: Stamp | None) -> None:
    assert read_stamp(line, 2025) == expected


def test_boot_relative_stamps_go_on_from_the_boot_before_and_a_boot_begins_where_they_go_back() -> None:
    clock = NodeClock(2026)

    first = clock.read(f"3,1,5000000000,-;{BODY}")
    second = clock.read(f"3,2,100000000,-;{BODY}")  # 100 s into the next boot
    banner = clock.read("3,3,200000000,-;Linux version 6.8.0")  # a banner, though the stamp goes on

    assert first == (EPOCH + timedelta(seconds=5000), False)
    assert second == (EPOCH + timedelta(seconds=5100), True)
    assert banner == (EPOCH + timedelta(seconds=5100) + timedelta(seconds=200), True)


def test_a_line_stamped_before_the_line_ahead_is_taken_as_written_with_it_and_syslog_crosses_new_year() -> None:
    clock = NodeClock(2026)

    clock.read(f"2026-11-23T03:00:00Z {BODY}")
    late = clock.read(f"2026-11-23T02:00:00Z {BODY}")
    plain = clock.read(BODY)
    december = NodeClock(2026)
    december.read(f"Dec 31 23:59:00 host kernel: {BODY}")
    january = december.read(f"Jan  1 00:30:00 host kernel: {BODY}")

    assert late == plain == (datetime(2026, 11, 23, 3, tzinfo=UTC), False)
    assert clock.backwards == 1
    assert january == (datetime(2027, 1, 1, 0, 30, tzinfo=UTC), False)
