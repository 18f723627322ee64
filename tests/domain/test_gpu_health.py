"""The rule that decides whether a GpuHealthy report proves a repair (gpuheal.domain.gpu_health)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gpuheal.domain.gpu_health import GpuHealthReport, HealthBar, gpu_health_problem, read_stamp, stamp_message

T0 = datetime(2026, 3, 1, 10, 0, 0, 250_000, tzinfo=UTC)
REBOOT = HealthBar(boot_id_before="boot-a", after=T0, after_what="the reboot request")
RESET = HealthBar(after=T0, after_what="the GPU reset's answer")


def report(boot: str = "", at: datetime | None = None, status: str = "True", **times: datetime) -> GpuHealthReport:
    return GpuHealthReport(status=status, message="All 8 GPUs are healthy", boot_id=boot, reported_at=at, **times)


def test_the_stamp_round_trips_and_an_unstamped_message_stays_as_it_is() -> None:
    text = stamp_message("All 8 GPUs are healthy", "0b5e-11", T0)
    assert text == "All 8 GPUs are healthy [boot 0b5e-11, at 2026-03-01T10:00:00.250000Z]"
    assert read_stamp(text) == ("All 8 GPUs are healthy", "0b5e-11", T0)
    assert read_stamp("XID 79 [GPU 3]") == ("XID 79 [GPU 3]", "", None)
    assert read_stamp("x [boot b, at yesterday]") == ("x [boot b, at yesterday]", "", None)


def test_a_report_on_the_boot_after_the_reboot_is_accepted_whatever_its_clock_says() -> None:
    assert gpu_health_problem(report("boot-b", T0 - timedelta(hours=1)), "boot-b", REBOOT) is None


def test_a_report_on_the_boot_before_the_reboot_is_not() -> None:
    problem = gpu_health_problem(report("boot-a", T0 + timedelta(minutes=5)), "boot-b", REBOOT)
    assert problem == "GpuHealthy=True was reported on boot boot-a, before the reboot"


def test_a_report_on_some_other_boot_is_not() -> None:
    problem = gpu_health_problem(report("boot-x", T0 + timedelta(minutes=5)), "boot-b", REBOOT)
    assert problem == "GpuHealthy=True was reported on boot boot-x, not on the node's current boot boot-b"


def test_without_a_new_boot_the_stamped_moment_must_follow_the_repair() -> None:
    # A GPU reset (no reboot): the agent's own clock orders its report after its own answer.
    assert gpu_health_problem(report("boot-a", T0 + timedelta(microseconds=1)), "boot-a", RESET) is None
    problem = gpu_health_problem(report("boot-a", T0), "boot-a", RESET)
    assert problem is not None and "before the GPU reset's answer at 2026-03-01T10:00:00.250000Z" in problem
    # A provider that repairs without rebooting: the same on the boot the node is still on.
    assert gpu_health_problem(report("boot-a", T0 - timedelta(seconds=1)), "boot-a", REBOOT) is not None


def test_a_writer_that_names_no_boot_is_judged_by_its_timestamps_strictly_after() -> None:
    after = T0.replace(microsecond=0) + timedelta(seconds=1)
    assert gpu_health_problem(report(heartbeat=after), "boot-b", REBOOT) is None
    assert gpu_health_problem(report(transition=after), "boot-b", REBOOT) is None
    same_second = T0.replace(microsecond=0)  # whole seconds: written up to a second before the request
    problem = gpu_health_problem(report(heartbeat=same_second, transition=same_second), "boot-b", REBOOT)
    assert problem == (
        "GpuHealthy=True was last reported at 2026-03-01T10:00:00.000000Z, "
        "before the reboot request at 2026-03-01T10:00:00.250000Z"
    )
    assert "unknown time" in (gpu_health_problem(report(), "boot-b", REBOOT) or "")


def test_without_a_request_time_only_a_new_boot_proves_anything() -> None:
    bar = HealthBar(boot_id_before="boot-a")
    assert gpu_health_problem(report("boot-b"), "boot-b", bar) is None
    assert gpu_health_problem(report(heartbeat=T0), "boot-b", bar) is not None


def test_unhealthy_or_missing_reports_say_so() -> None:
    assert gpu_health_problem(None, "boot-b", REBOOT) == (
        "the node has no GpuHealthy condition (is the gpuheal agent running on it?)"
    )
    faulty = GpuHealthReport(status="False", message="XID 79 on GPU 3", boot_id="boot-b")
    assert gpu_health_problem(faulty, "boot-b", REBOOT) == "XID 79 on GPU 3"
    assert gpu_health_problem(
        report("boot-b", status="Unknown").model_copy(update={"message": ""}), "boot-b", REBOOT
    ) == ("GpuHealthy=Unknown")


def test_times_without_a_zone_are_read_as_utc() -> None:
    naive = T0.replace(tzinfo=None)
    assert gpu_health_problem(report("boot-a", naive + timedelta(seconds=1)), "boot-a", RESET) is None
    assert gpu_health_problem(report(heartbeat=naive), "boot-b", REBOOT) is not None
