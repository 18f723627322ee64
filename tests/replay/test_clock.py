"""A recorded line's time, from each stamp a kernel log comes with."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gpuheal.replay.clock import EPOCH, line_time

BEFORE = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)
BODY = "NVRM: Xid (PCI:0000:3b:00): 79, pid=0, GPU has fallen off the bus."


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # journald short-iso, RFC 5424 syslog, dmesg --time-format iso
        (f"2026-11-23T02:07:01+0000 host kernel: {BODY}", datetime(2026, 11, 23, 2, 7, 1, tzinfo=UTC)),
        (f"<3>2026-11-23T03:07:01.250+01:00 host kernel: {BODY}", datetime(2026, 11, 23, 2, 7, 1, 250000, tzinfo=UTC)),
        (f"2026-11-23T02:07:01,123456Z {BODY}", datetime(2026, 11, 23, 2, 7, 1, 123456, tzinfo=UTC)),
        # dmesg -T
        (f"[Mon Nov 23 02:07:01 2026] {BODY}", datetime(2026, 11, 23, 2, 7, 1, tzinfo=UTC)),
        # BSD syslog: the year is the caller's
        (f"Nov  3 02:07:01 host kernel: {BODY}", datetime(2025, 11, 3, 2, 7, 1, tzinfo=UTC)),
        (f"Nov 23 02:07:01.5 host kernel: {BODY}", datetime(2025, 11, 23, 2, 7, 1, 500000, tzinfo=UTC)),
        # /dev/kmsg records and plain dmesg count from the boot
        (f"3,812,6085126134,-;{BODY}", EPOCH + timedelta(microseconds=6085126134)),
        (f"[ 4821.337154] {BODY}", EPOCH + timedelta(seconds=4821.337154)),
        # no stamp, or a date that does not exist: when the line before was written
        (BODY, BEFORE),
        (f"Feb 30 02:07:01 host kernel: {BODY}", BEFORE),
    ],
)
def test_each_stamp_gives_the_time_the_line_was_written(line: str, expected: datetime) -> None:
    assert line_time(line, BEFORE, 2025) == expected
