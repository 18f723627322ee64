"""`gpuheal worker`: the Temporal worker that runs remediations."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import click
from click.core import ParameterSource

from gpuheal.cli import kubeconfig_option, policy_options, run_command, with_temporal_options
from gpuheal.domain.fleet import BreakerPolicy, FleetBudget, FleetPolicy
from gpuheal.domain.policy_document import PolicyDocument
from gpuheal.params import Duration
from gpuheal.policyfile import LoadedPolicy
from gpuheal.settings_options import TEXT_OR_OFF, FlagUnit, setting_option
from gpuheal.worker import WorkerRole, WorkerSettings


@click.command()
@with_temporal_options
@setting_option(WorkerSettings, "task_queue", "--task-queue", envvar="GPUHEAL_TASK_QUEUE")
@setting_option(
    WorkerSettings,
    "role",
    "--role",
    envvar="GPUHEAL_WORKER_ROLE",
    help="Poll for remediations, for the fleet's governor, or both: a large fleet may run the governor "
    "in a process of its own.",
)
@kubeconfig_option
@click.option(
    "--simulator-url",
    envvar="GPUHEAL_SIMULATOR_URL",
    help="Enable the simulator reboot provider (it comes with gpuheal-sim).",
)
@click.option(
    "--providers",
    envvar="GPUHEAL_PROVIDERS",
    help="Reboot providers to enable, comma-separated, from those installed (an unknown name is refused "
    "with their list) [default: all]; each node's providerID picks one of them.",
)
@setting_option(
    WorkerSettings,
    "metrics_address",
    "--metrics-address",
    unit=TEXT_OR_OFF,
    envvar="GPUHEAL_METRICS_ADDRESS",
    help="host:port for Prometheus metrics; empty or `off` to disable.",
)
@setting_option(
    WorkerSettings,
    "stuck_after",
    "--stuck-after",
    unit=FlagUnit(shown=lambda after: f"{after.total_seconds():g}s", taken=lambda after: after),
    type=Duration(),
    metavar="DURATION",
    envvar="GPUHEAL_STUCK_AFTER",
    help="A remediation in one phase for longer than this (a duration: 90m, 1h) counts as stuck in the "
    "gpuheal_remediations_stuck metric.",
)
@setting_option(WorkerSettings, "max_concurrent_activities", "--max-concurrent-activities")
@setting_option(WorkerSettings, "graceful_shutdown", "--graceful-shutdown-seconds", type=float)
@setting_option(
    WorkerSettings,
    "sticky_queue_timeout",
    "--sticky-queue-timeout-seconds",
    type=float,
    help="How soon another worker takes over this worker's workflows if it dies.",
)
@setting_option(
    WorkerSettings,
    "kubernetes_wait",
    "--kubernetes-wait-seconds",
    envvar="GPUHEAL_KUBERNETES_WAIT_SECONDS",
    help="How long the worker waits at start for the Kubernetes API to answer before it exits "
    "[env GPUHEAL_KUBERNETES_WAIT_SECONDS].",
)
@setting_option(
    FleetBudget,
    "max_concurrent",
    "--max-remediations",
    type=click.IntRange(min=1),
    envvar="GPUHEAL_MAX_REMEDIATIONS",
    help="Remediations that may hold their nodes out of service at once, fleet-wide.",
)
@setting_option(
    FleetBudget,
    "max_percent",
    "--max-remediating-percent",
    type=click.FloatRange(min=0, max=100, min_open=True),
    envvar="GPUHEAL_MAX_REMEDIATING_PERCENT",
    help="… and at most this share of the GPU nodes (nodes labelled nvidia.com/gpu.present), one at least.",
)
@setting_option(
    FleetBudget,
    "group_label",
    "--budget-group-label",
    envvar="GPUHEAL_BUDGET_GROUP_LABEL",
    help="A node label (a rack, a zone, an NVLink domain) whose nodes --max-per-group limits together.",
)
@setting_option(FleetBudget, "max_per_group", "--max-per-group", type=click.IntRange(min=1))
@setting_option(
    BreakerPolicy,
    "share",
    "--breaker-share",
    type=click.FloatRange(min=0, max=1, min_open=True),
    envvar="GPUHEAL_BREAKER_SHARE",
    help="Trip the circuit breaker when this share of the GPU nodes was quarantined within its window.",
)
@setting_option(
    BreakerPolicy,
    "at_least",
    "--breaker-at-least",
    type=click.IntRange(min=1),
    help="… but never for fewer quarantines than this.",
)
@setting_option(BreakerPolicy, "window", "--breaker-window-seconds", type=click.FloatRange(min=0, min_open=True))
@policy_options(
    WorkerSettings,
    "how remediations run, and the fleet's limits where it has a fleet section (the fleet flags then stay unset)",
)
@setting_option(
    FleetPolicy,
    "governed",
    "--fleet-governor/--no-fleet-governor",
    help="Off, every remediation goes at once, with no budget, breaker or pause: to measure what the "
    "governor costs, never on a real fleet.",
)
def worker(
    address: str | None,
    namespace: str | None,
    task_queue: str,
    role: WorkerRole,
    kubeconfig: Path | None,
    simulator_url: str | None,
    providers: str | None,
    metrics_address: str | None,
    stuck_after: timedelta,
    max_concurrent_activities: int,
    graceful_shutdown: timedelta,
    sticky_queue_timeout: timedelta,
    kubernetes_wait: timedelta,
    max_concurrent: int,
    max_percent: float,
    group_label: str,
    max_per_group: int,
    share: float,
    at_least: int,
    window: timedelta,
    policy: LoadedPolicy[PolicyDocument] | None,
    policy_reload: timedelta,
    governed: bool,
) -> None:
    """Run the Temporal worker for remediations (Ctrl-C or SIGTERM stops it gracefully).

    It exits with the reason when the Kubernetes API does not answer within --kubernetes-wait-seconds
    of its start, or when the Temporal namespace does not exist.
    """
    from gpuheal.worker import MetricsUnavailable, SearchAttributesMissing, process_runtime, serve

    if policy is not None and policy.document.fleet is not None:
        _refuse_fleet_flags(policy)
    fleet = FleetPolicy(
        governed=governed,
        budget=FleetBudget(
            max_concurrent=max_concurrent,
            max_percent=max_percent,
            group_label=group_label.strip(),
            max_per_group=max_per_group,
        ),
        breaker=BreakerPolicy(share=share, at_least=at_least, window=window),
    )

    settings = WorkerSettings(
        task_queue=task_queue,
        role=role,
        temporal_address=address,
        temporal_namespace=namespace,
        kubeconfig=kubeconfig,
        simulator_url=_simulator_url(simulator_url),
        providers=_provider_names(providers),
        metrics_address=metrics_address,
        stuck_after=stuck_after,
        max_concurrent_activities=max_concurrent_activities,
        graceful_shutdown=graceful_shutdown,
        sticky_queue_timeout=sticky_queue_timeout,
        kubernetes_wait=kubernetes_wait,
        fleet=fleet,
        policy=policy,
        policy_reload=policy_reload,
    )
    try:
        runtime = process_runtime(settings)
    except MetricsUnavailable as error:
        raise click.BadParameter(str(error), param_hint="'--metrics-address'") from None
    try:
        run_command(lambda: serve(settings), runtime)
    except SearchAttributesMissing as error:
        raise click.ClickException(str(error)) from None


# The flags the policy file's fleet section replaces.
FLEET_FLAGS = (
    "max_concurrent",
    "max_percent",
    "group_label",
    "max_per_group",
    "share",
    "at_least",
    "window",
    "governed",
)


def _refuse_fleet_flags(policy: LoadedPolicy[PolicyDocument]) -> None:
    """A fleet limit set both by a flag (or its variable) and by the policy file's fleet section is
    refused: one of the two would be silently ignored."""
    ctx = click.get_current_context()
    for name in FLEET_FLAGS:
        source = ctx.get_parameter_source(name)
        if source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            flag = next(param for param in ctx.command.params if param.name == name)
            raise click.UsageError(
                f"{flag.opts[0]} and the fleet section of {policy.path} both set the fleet's limits: set them in "
                "one place (the file's fleet section, or the flags with no fleet section in the file)"
            )


def _simulator_url(url: str | None) -> str | None:
    """--simulator-url, refused where no installed provider reboots simulated nodes (gpuheal-sim's does)."""
    from gpuheal.activities.providers.configured import switched_on_by
    from gpuheal.activities.providers.registration import SIMULATOR_URL_ENV

    if url and not switched_on_by(SIMULATOR_URL_ENV):
        raise click.BadParameter(
            "no installed reboot provider reboots simulated nodes; the simulator's comes with gpuheal-sim",
            param_hint="'--simulator-url'",
        )
    return url


def _provider_names(option: str | None) -> tuple[str, ...]:
    """The --providers list, checked before anything connects; all providers when unset."""
    from gpuheal.activities.providers.configured import DEFAULT_PROVIDERS, UnknownProvider, provider_names

    if not option:
        return DEFAULT_PROVIDERS
    try:
        return provider_names(name.strip() for name in option.split(",") if name.strip())
    except UnknownProvider as error:
        raise click.BadParameter(str(error), param_hint="'--providers'") from None
