"""`gpuheal`: the one console script (demo, worker, approve, reject, status, list)."""

from __future__ import annotations

import getpass
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from datetime import timedelta
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeVar

import click
from temporalio.service import RPCError

from gpuheal.agents.agent import AgentSettings
from gpuheal.agents.kmsg.follow import KernelLogFormat, ReadFrom
from gpuheal.agents.publisher import PublisherSettings, RetrySettings, SpoolLimits
from gpuheal.agents.publisher.spool import MIB
from gpuheal.agents.reset import ResetSettings
from gpuheal.control import remediations
from gpuheal.control.connection import (
    NamespaceNotFound,
    TemporalUnreachable,
    connect_temporal,
    is_namespace_not_found,
)
from gpuheal.control.lifetime import ProcessRuntime
from gpuheal.domain.remediation import ApprovalSignal
from gpuheal.params import HostPort, KubeconfigFile, XidPolicyFile
from gpuheal.settings_options import PATH_OR_OFF, TEXT_OR_OFF, FlagUnit, setting_option
from gpuheal.worker import WorkerSettings

T = TypeVar("T")

# The spool's budget is set in bytes and written on the command line in MiB.
MEBIBYTES = FlagUnit(shown=lambda size: size // MIB, taken=lambda mebibytes: mebibytes * MIB)

COMMANDS_GROUP = "gpuheal.commands"

_temporal_options = [
    click.option(
        "--address",
        type=HostPort(),
        envvar="TEMPORAL_ADDRESS",
        help="Temporal frontend host:port [env TEMPORAL_ADDRESS].",
    ),
    click.option("--namespace", envvar="TEMPORAL_NAMESPACE", help="Temporal namespace [env TEMPORAL_NAMESPACE]."),
]


def _with_temporal_options(command: Any) -> Any:
    for option in reversed(_temporal_options):
        command = option(command)
    return command


def _run(main: Callable[[], Coroutine[Any, Any, T]], runtime: ProcessRuntime | None = None) -> T:
    """Run a command's coroutine on the process's own Temporal runtime, released before exit.

    What a person can act on (Temporal or Kubernetes not answering, a namespace or remediation that
    does not exist) ends the command with one line instead of a traceback.
    """
    from gpuheal.kubeprobe import KubernetesUnavailable

    try:
        return (runtime or ProcessRuntime()).run(main)
    except (remediations.RemediationNotFound, TemporalUnreachable, KubernetesUnavailable) as error:
        raise click.ClickException(str(error)) from None
    except NamespaceNotFound as error:
        raise click.BadParameter(str(error), param_hint="'--namespace'") from None
    except RPCError as error:
        if is_namespace_not_found(error):
            raise click.BadParameter(error.message, param_hint="'--namespace'") from None
        raise


class BadSetting(click.ClickException):
    """A setting found unusable only once the command runs (a port in use): one line, exit 2 as a bad flag."""

    exit_code = 2


class _Commands(click.Group):
    """gpuheal's commands, and those other installed distributions add in the `gpuheal.commands` entry
    point group (the test bed's `demo`), each imported only when it is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *(entry.name for entry in entry_points(group=COMMANDS_GROUP))})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        found = entry_points(group=COMMANDS_GROUP, name=cmd_name)
        return next((entry.load() for entry in found), None)


@click.group(cls=_Commands)
@click.option("-v", "--verbose", is_flag=True, help="Log at debug level.")
def main(verbose: bool) -> None:
    """gpuheal keeps Kubernetes GPU nodes healthy with durable Temporal remediations."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@main.command()
@_with_temporal_options
@setting_option(WorkerSettings, "task_queue", "--task-queue", envvar="GPUHEAL_TASK_QUEUE")
@click.option(
    "--kubeconfig",
    type=KubeconfigFile(),
    envvar="KUBECONFIG",
    help="Kubeconfig; in a pod the service account is used when unset.",
)
@click.option("--simulator-url", envvar="GPUHEAL_SIMULATOR_URL", help="Enable the simulator reboot provider.")
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
    help="host:port for Prometheus metrics; empty to disable.",
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
def worker(
    address: str | None,
    namespace: str | None,
    task_queue: str,
    kubeconfig: Path | None,
    simulator_url: str | None,
    providers: str | None,
    metrics_address: str | None,
    max_concurrent_activities: int,
    graceful_shutdown: timedelta,
    sticky_queue_timeout: timedelta,
    kubernetes_wait: timedelta,
) -> None:
    """Run the Temporal worker for remediations (Ctrl-C or SIGTERM stops it gracefully).

    It exits with the reason when the Kubernetes API does not answer within --kubernetes-wait-seconds
    of its start, or when the Temporal namespace does not exist.
    """
    from gpuheal.worker import MetricsUnavailable, process_runtime, serve

    settings = WorkerSettings(
        task_queue=task_queue,
        temporal_address=address,
        temporal_namespace=namespace,
        kubeconfig=kubeconfig,
        simulator_url=simulator_url,
        providers=_provider_names(providers),
        metrics_address=metrics_address,
        max_concurrent_activities=max_concurrent_activities,
        graceful_shutdown=graceful_shutdown,
        sticky_queue_timeout=sticky_queue_timeout,
        kubernetes_wait=kubernetes_wait,
    )
    try:
        runtime = process_runtime(settings)
    except MetricsUnavailable as error:
        raise click.BadParameter(str(error), param_hint="'--metrics-address'") from None
    _run(lambda: serve(settings), runtime)


def _provider_names(option: str | None) -> tuple[str, ...]:
    """The --providers list, checked before anything connects; all providers when unset."""
    from gpuheal.activities.providers.configured import DEFAULT_PROVIDERS, UnknownProvider, provider_names

    if not option:
        return DEFAULT_PROVIDERS
    try:
        return provider_names(name.strip() for name in option.split(",") if name.strip())
    except UnknownProvider as error:
        raise click.BadParameter(str(error), param_hint="'--providers'") from None


def _decision_command(approve: bool) -> Any:
    verb = "approve" if approve else "reject"

    @_with_temporal_options
    @click.argument("node")
    @click.option("--by", "approver", help="Who decides (recorded in the workflow)  [default: your login name]")
    @click.option("--reason", default="", help="Why.")
    def command(address: str | None, namespace: str | None, node: str, approver: str | None, reason: str) -> None:
        who = _login_name() if approver is None else approver.strip()
        if not who:
            raise click.BadParameter("must name who decides", param_hint="'--by'")
        decision = ApprovalSignal(approver=who, reason=reason)

        async def send() -> None:
            client = await connect_temporal(address, namespace)
            await remediations.send_decision(client, node, decision, approve=approve)

        _run(send)
        click.echo(f"{verb}d the remediation of {node} as {who}")

    command.__doc__ = f"{verb.capitalize()} the pending repair of NODE."
    return main.command(name=verb)(command)


def _login_name() -> str:
    """Who runs this command: $LOGNAME, $USER, $LNAME or $USERNAME where set and not empty, else the
    password database's name for this uid (a container's uid often has none)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        raise click.BadParameter(
            f"no login name to record (LOGNAME and USER are unset or empty, and uid {os.getuid()} has no "
            "passwd entry); say who decides with --by NAME",
            param_hint="'--by'",
        ) from None


_decision_command(approve=True)
_decision_command(approve=False)


@main.command()
@_with_temporal_options
@click.argument("node")
def status(address: str | None, namespace: str | None, node: str) -> None:
    """Show the remediation of NODE as JSON (phase, action, faults, decision, phase history)."""

    async def query() -> str:
        client = await connect_temporal(address, namespace)
        return (await remediations.status(client, node)).model_dump_json(indent=2)

    click.echo(_run(query))


@main.command(name="list")
@_with_temporal_options
@click.option("--query", default="", help='Visibility filter, e.g. GpuhealPhase = "AwaitingApproval".')
def list_command(address: str | None, namespace: str | None, query: str) -> None:
    """List remediations, newest first."""

    async def fetch() -> list[remediations.RemediationSummary]:
        client = await connect_temporal(address, namespace)
        return await remediations.list_remediations(client, query)

    try:
        rows = _run(fetch)
    except remediations.InvalidQuery as error:
        raise click.BadParameter(str(error), param_hint="'--query'") from None
    click.echo(f"{'NODE':<24} {'PHASE':<18} {'ACTION':<16} {'XID':>5}  {'RUNNING':<7}  STARTED")
    for row in rows:
        xid = "" if row.xid is None else str(row.xid)
        click.echo(
            f"{row.node:<24} {row.phase:<18} {row.action:<16} {xid:>5}  {'yes' if row.running else 'no':<7}  "
            f"{row.started:%Y-%m-%d %H:%M:%S}"
        )


@main.group()
def kmsg() -> None:
    """Kernel log tools."""


@kmsg.command(name="parse")
@click.option(
    "--policy",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="XID policy (JSON) overriding the catalog's action for any XID.",
)
def kmsg_parse(policy: Path | None) -> None:
    """Read kernel log lines on stdin; print one JSON object per GPU event found.

    Raw /dev/kmsg records, dmesg and journald lines are understood; lines that are not GPU events
    are skipped, and no input makes it fail.
    """
    from gpuheal.agents.kmsg.cli import main as parse_main

    sys.exit(parse_main(sys.stdin, sys.stdout, policy))


@main.command()
@click.option("--node", required=True, envvar="NODE_NAME", help="This node's Kubernetes name [env NODE_NAME].")
@setting_option(
    AgentSettings,
    "socket_dir",
    "--socket-dir",
    envvar="GPUHEAL_SOCKET_DIR",
    help="Where device-api.sock and health-events.sock are created.",
)
@setting_option(
    AgentSettings,
    "spool_dir",
    "--spool-dir",
    envvar="GPUHEAL_SPOOL_DIR",
    help="On-disk queue for undelivered events.",
)
@setting_option(
    AgentSettings,
    "kernel_log",
    "--kernel-log",
    unit=PATH_OR_OFF,
    envvar="GPUHEAL_KERNEL_LOG",
    help="Kernel log source; empty turns the kernel-log monitor off.",
)
@setting_option(AgentSettings, "kernel_log_format", "--kernel-log-format", envvar="GPUHEAL_KERNEL_LOG_FORMAT")
@click.option(
    "--from-start",
    is_flag=True,
    help="Read the whole kernel log (ring buffer or file) instead of resuming where the agent left off.",
)
@click.option("--from-end", is_flag=True, help="Read only what the kernel logs from now on, instead of resuming.")
@click.option(
    "--xid-policy",
    type=XidPolicyFile(),
    envvar="GPUHEAL_XID_POLICY",
    help="JSON policy overriding the catalog's action for any XID.",
)
@click.option(
    "--fake-gpus",
    type=click.IntRange(0, 1024),
    default=None,
    help="Run on a fake NVML with N GPUs instead of the real one.",
)
@setting_option(AgentSettings, "nvml_poll", "--nvml-poll-seconds", type=click.FloatRange(min=0.1))
@setting_option(
    AgentSettings,
    "device_api_tcp_port",
    "--device-api-tcp-port",
    type=int,
    help="Also serve the Device API on 127.0.0.1:PORT.",
)
@setting_option(
    AgentSettings, "intake_tcp_port", "--intake-tcp-port", type=int, help="Also take health events on 127.0.0.1:PORT."
)
@setting_option(
    SpoolLimits,
    "max_bytes",
    "--spool-max-mib",
    unit=MEBIBYTES,
    type=click.IntRange(min=1),
    envvar="GPUHEAL_SPOOL_MAX_MIB",
    help="Disk budget of each dependency's spool; non-actionable events are shed first, and faults the "
    "disk refuses wait in memory [env GPUHEAL_SPOOL_MAX_MIB].",
)
@setting_option(
    RetrySettings,
    "shutdown_grace",
    "--shutdown-grace-seconds",
    envvar="GPUHEAL_SHUTDOWN_GRACE_SECONDS",
    help="On SIGTERM, how long faults held in memory (the spool's disk refused them) are still delivered "
    "or written to disk before those left are logged as lost [env GPUHEAL_SHUTDOWN_GRACE_SECONDS].",
)
@click.option(
    "--health-address",
    envvar="GPUHEAL_HEALTH_ADDRESS",
    help="Serve GET /metrics and /readyz over HTTP on HOST:PORT (a bare PORT: 127.0.0.1); off when "
    "unset [env GPUHEAL_HEALTH_ADDRESS].",
)
@setting_option(
    AgentSettings,
    "gpu_reset",
    "--gpu-reset",
    type=click.Choice(["off", "nvidia-smi"]),
    envvar="GPUHEAL_GPU_RESET",
    help="Carry out GPU reset orders with `nvidia-smi --gpu-reset` (needs a privileged agent); "
    "off answers them with a failure, so the node is rebooted instead [env GPUHEAL_GPU_RESET].",
)
@setting_option(
    ResetSettings,
    "nvidia_smi",
    "--nvidia-smi",
    envvar="GPUHEAL_NVIDIA_SMI",
    help="The nvidia-smi binary (a bare name is looked up on PATH) [env GPUHEAL_NVIDIA_SMI].",
)
@setting_option(
    ResetSettings,
    "confirm_timeout",
    "--gpu-reset-confirm-seconds",
    type=click.FloatRange(min=0.1),
    envvar="GPUHEAL_GPU_RESET_CONFIRM_SECONDS",
    help="How long a reset may take to be confirmed (kernel log or NVML) before it counts as failed "
    "[env GPUHEAL_GPU_RESET_CONFIRM_SECONDS].",
)
@_with_temporal_options
@setting_option(AgentSettings, "task_queue", "--task-queue", envvar="GPUHEAL_TASK_QUEUE")
@click.option(
    "--kubeconfig",
    type=KubeconfigFile(),
    envvar="KUBECONFIG",
    help="Kubeconfig; in a pod the service account is used when unset.",
)
def agent(
    node: str,
    socket_dir: Path,
    spool_dir: Path,
    kernel_log: Path | None,
    kernel_log_format: KernelLogFormat,
    from_start: bool,
    from_end: bool,
    xid_policy: Path | None,
    fake_gpus: int | None,
    nvml_poll: timedelta,
    device_api_tcp_port: int | None,
    intake_tcp_port: int | None,
    max_bytes: int,
    shutdown_grace: timedelta,
    health_address: str | None,
    gpu_reset: str,
    nvidia_smi: str,
    confirm_timeout: timedelta,
    address: str | None,
    namespace: str | None,
    task_queue: str,
    kubeconfig: Path | None,
) -> None:
    """Run the per-node agent: Device API, health event intake, NVML and kernel-log monitors.

    It serves even when Temporal or the Kubernetes API cannot be reached; events wait on disk.
    """
    from gpuheal.agents.agent import serve_agent
    from gpuheal.agents.health import HealthServerError, parse_address
    from gpuheal.agents.nvml.backends import UnknownNvmlBackend

    if from_start and from_end:
        raise click.BadParameter("choose one of --from-start and --from-end", param_hint="--from-start")
    if fake_gpus is not None and gpu_reset == "nvidia-smi":
        raise click.BadParameter(
            "nvidia-smi cannot reset fake GPUs; use --gpu-reset off with --fake-gpus", param_hint="'--gpu-reset'"
        )
    try:
        health = parse_address(health_address) if health_address else None
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--health-address") from error
    settings = AgentSettings(
        node=node,
        socket_dir=socket_dir,
        spool_dir=spool_dir,
        kernel_log=kernel_log,
        kernel_log_format=kernel_log_format,
        kernel_log_read_from=ReadFrom.START if from_start else ReadFrom.END if from_end else ReadFrom.RESUME,
        xid_policy=xid_policy,
        fake_gpus=fake_gpus,
        nvml_poll=nvml_poll,
        device_api_tcp_port=device_api_tcp_port,
        intake_tcp_port=intake_tcp_port,
        temporal_address=address,
        temporal_namespace=namespace,
        task_queue=task_queue,
        kubeconfig=kubeconfig,
        gpu_reset=gpu_reset,
        gpu_reset_settings=ResetSettings(nvidia_smi=nvidia_smi, confirm_timeout=confirm_timeout),
        publisher=PublisherSettings(
            spool=SpoolLimits(max_bytes=max_bytes), retry=RetrySettings(shutdown_grace=shutdown_grace)
        ),
        health_address=health,
    )
    try:
        ProcessRuntime().run(lambda: serve_agent(settings))
    except HealthServerError as error:
        raise BadSetting(f"--health-address: {error}") from error
    except UnknownNvmlBackend as error:
        raise BadSetting(f"--fake-gpus: {error}") from None
