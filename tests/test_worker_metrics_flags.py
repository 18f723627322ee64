"""`gpuheal worker --stuck-after`: when a remediation counts as stuck in its phase, as a duration."""

from __future__ import annotations

from datetime import timedelta

import pytest
from click.testing import CliRunner
from temporalio.runtime import MetricBuffer, Runtime, TelemetryConfig

from gpuheal.activities.metrics import OPEN_PHASES, RUNNING, STUCK, VisibilityGauges
from gpuheal.cli import main
from gpuheal.worker import WorkerSettings
from gpuheal_sim.demo.devserver import DevServer


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], timedelta(hours=1)),
        (["--stuck-after", "90m"], timedelta(minutes=90)),
        (["--stuck-after", "2h30m"], timedelta(hours=2, minutes=30)),
        (["--stuck-after", "87600h"], timedelta(days=3650)),
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


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # Zero would count every running remediation as stuck.
        ("0", "'0' must be longer than zero"),
        ("0s", "'0s' must be longer than zero"),
        ("87601h", "'87601h' is longer than 3650 days"),
        # `now - 99999999h` overflowed: no gauge was ever set.
        ("99999999h", "'99999999h' is longer than 3650 days"),
    ],
)
def test_stuck_after_of_zero_or_past_ten_years_is_refused(value: str, expected: str) -> None:
    result = CliRunner().invoke(main, ["worker", "--stuck-after", value])

    assert result.exit_code == 2, result.output
    assert f"Invalid value for '--stuck-after': {expected}" in result.output


async def test_a_stuck_after_reaching_before_year_one_counts_none_stuck_and_still_counts_running(
    dev_server: DevServer,
) -> None:
    """`now - stuck_after` overflowed before any gauge was set, so a worker given one reported nothing."""
    buffer = MetricBuffer(10_000)
    meter = Runtime(telemetry=TelemetryConfig(metrics=buffer)).metric_meter
    gauges = VisibilityGauges(dev_server.client, meter, stuck_after=timedelta(days=999_999_999))

    await gauges.count()

    figures = {(u.metric.name, u.attributes.get("phase")): u.value for u in buffer.retrieve_updates()}
    for phase in OPEN_PHASES:
        assert (RUNNING, phase.value) in figures
        assert figures[STUCK, phase.value] == 0
