"""`gpuheal worker --stuck-after`: when a remediation counts as stuck in its phase, as a duration."""

from __future__ import annotations

from datetime import timedelta

import pytest
from click.testing import CliRunner

from gpuheal.cli import main
from gpuheal.worker import WorkerSettings


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], timedelta(hours=1)),
        (["--stuck-after", "90m"], timedelta(minutes=90)),
        (["--stuck-after", "2h30m"], timedelta(hours=2, minutes=30)),
    ],
)
def test_stuck_after_takes_a_duration(monkeypatch: pytest.MonkeyPatch, flags: list[str], expected: timedelta) -> None:
    served: list[WorkerSettings] = []

    async def serve(settings: WorkerSettings) -> None:
        served.append(settings)

    monkeypatch.setattr("gpuheal.worker.serve", serve)
    result = CliRunner().invoke(main, ["worker", "--metrics-address", "", *flags])

    assert result.exit_code == 0, result.output
    assert [settings.stuck_after for settings in served] == [expected]


def test_stuck_after_without_a_unit_is_refused_naming_the_flag() -> None:
    result = CliRunner().invoke(main, ["worker", "--stuck-after", "90"])

    assert result.exit_code == 2
    assert "Invalid value for '--stuck-after'" in result.output
    assert "is not a duration" in result.output
