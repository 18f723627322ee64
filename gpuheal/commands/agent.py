"""`gpuheal agent`: the per-node agent."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import click

from gpuheal.agents.agent import AgentSettings
from gpuheal.agents.check import GPU_CHECK_MODES, GpuCheckMode
from gpuheal.agents.diagnostics import COLLECTOR_MODES, CollectorMode, destination
from gpuheal.agents.health import HealthEndpointSettings
from gpuheal.agents.kmsg.follow import KernelLogFormat, ReadFrom
from gpuheal.agents.publisher import PublisherSettings, RetrySettings, SpoolLimits
from gpuheal.agents.publisher.spool import MIB
from gpuheal.agents.reset import ResetSettings
from gpuheal.cli import BadSetting, kubeconfig_option, policy_options, with_temporal_options
from gpuheal.control.lifetime import ProcessRuntime
from gpuheal.control.logformat import name_node_on_every_line
from gpuheal.domain.policy_document import AgentPolicy
from gpuheal.params import XidPolicyFile
from gpuheal.policyfile import LoadedPolicy
from gpuheal.settings_options import PATH_OR_OFF, TEXT_OR_OFF, FlagUnit, setting_option

# The spool's budget is set in bytes and written on the command line in MiB.
MEBIBYTES = FlagUnit(shown=lambda size: size // MIB, taken=lambda mebibytes: mebibytes * MIB)


@click.command()
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
@policy_options(
    AgentSettings,
    "its xids section overrides the catalog, in place of --xid-policy (the other sections are the worker's)",
    AgentPolicy,
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
@setting_option(
    HealthEndpointSettings,
    "health_address",
    "--health-address",
    unit=TEXT_OR_OFF,
    envvar="GPUHEAL_HEALTH_ADDRESS",
    help="Serve GET /metrics and /readyz over HTTP on HOST:PORT (a bare PORT: 127.0.0.1; *:PORT: every "
    "address, IPv4 and IPv6); empty or `off` to disable [env GPUHEAL_HEALTH_ADDRESS].",
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
@setting_option(
    AgentSettings,
    "gpu_check",
    "--gpu-check",
    type=click.Choice(GPU_CHECK_MODES),
    envvar="GPUHEAL_GPU_CHECK",
    help="Carry out GPU check orders (policy validation.level) with `dcgmi diag` where installed, else "
    "NVML (auto), with one of them, or answer them with a failure (off) [env GPUHEAL_GPU_CHECK].",
)
@setting_option(
    AgentSettings,
    "gpu_check_timeout",
    "--gpu-check-timeout-seconds",
    type=click.FloatRange(min=1),
    envvar="GPUHEAL_GPU_CHECK_TIMEOUT_SECONDS",
    help="How long one dcgmi diag may run before it is killed and the check proves nothing; keep it "
    "within the policy's validation.timeout [env GPUHEAL_GPU_CHECK_TIMEOUT_SECONDS].",
)
@setting_option(
    AgentSettings,
    "dcgmi",
    "--dcgmi",
    envvar="GPUHEAL_DCGMI",
    help="The dcgmi binary (a bare name is looked up on PATH) [env GPUHEAL_DCGMI].",
)
@setting_option(
    AgentSettings,
    "diagnostics_to",
    "--diagnostics-to",
    envvar="GPUHEAL_DIAGNOSTICS_TO",
    help="Where diagnostics bundles go before a reboot (policy diagnostics.collect): a directory, or "
    "s3://BUCKET[/PREFIX] with the standard AWS credentials and endpoint settings; off when unset "
    "[env GPUHEAL_DIAGNOSTICS_TO].",
)
@setting_option(
    AgentSettings,
    "diagnostics",
    "--diagnostics",
    type=click.Choice(COLLECTOR_MODES),
    envvar="GPUHEAL_DIAGNOSTICS",
    help="Who collects a bundle: nvidia-bug-report.sh where installed, else an NVML probe (auto), or "
    "one of them [env GPUHEAL_DIAGNOSTICS].",
)
@setting_option(
    AgentSettings,
    "bug_report",
    "--nvidia-bug-report",
    envvar="GPUHEAL_NVIDIA_BUG_REPORT",
    help="The nvidia-bug-report.sh script (a bare name is looked up on PATH) [env GPUHEAL_NVIDIA_BUG_REPORT].",
)
@with_temporal_options
@setting_option(AgentSettings, "task_queue", "--task-queue", envvar="GPUHEAL_TASK_QUEUE")
@kubeconfig_option
def agent(
    node: str,
    socket_dir: Path,
    spool_dir: Path,
    kernel_log: Path | None,
    kernel_log_format: KernelLogFormat,
    from_start: bool,
    from_end: bool,
    xid_policy: Path | None,
    policy: LoadedPolicy[AgentPolicy] | None,
    policy_reload: timedelta,
    fake_gpus: int | None,
    nvml_poll: timedelta,
    device_api_tcp_port: int | None,
    intake_tcp_port: int | None,
    max_bytes: int,
    shutdown_grace: timedelta,
    health_address: str,
    gpu_reset: str,
    nvidia_smi: str,
    confirm_timeout: timedelta,
    gpu_check: GpuCheckMode,
    gpu_check_timeout: timedelta,
    dcgmi: str,
    diagnostics_to: str | None,
    diagnostics: CollectorMode,
    bug_report: str,
    address: str | None,
    namespace: str | None,
    task_queue: str,
    kubeconfig: Path | None,
) -> None:
    """Run the per-node agent: Device API, health event intake, NVML and kernel-log monitors.

    It serves even when Temporal or the Kubernetes API cannot be reached; events wait on disk.
    """
    from gpuheal.address import parse_listen_address
    from gpuheal.agents.agent import serve_agent
    from gpuheal.agents.health import HealthServerError
    from gpuheal.agents.nvml.backends import UnknownNvmlBackend

    if policy is not None and xid_policy is not None:
        raise click.UsageError("choose one of --policy (its xids section) and --xid-policy")
    if from_start and from_end:
        raise click.BadParameter("choose one of --from-start and --from-end", param_hint="--from-start")
    if fake_gpus is not None and gpu_reset == "nvidia-smi":
        raise click.BadParameter(
            "nvidia-smi cannot reset fake GPUs; use --gpu-reset off with --fake-gpus", param_hint="'--gpu-reset'"
        )
    if diagnostics_to is not None:
        try:
            destination(diagnostics_to)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="'--diagnostics-to'") from None
    if fake_gpus is not None and diagnostics == "nvidia-bug-report":
        raise click.BadParameter(
            "nvidia-bug-report.sh cannot report on fake GPUs; use --diagnostics auto or nvml with --fake-gpus",
            param_hint="'--diagnostics'",
        )
    if fake_gpus is not None and gpu_check == "dcgmi":
        raise click.BadParameter(
            "dcgmi cannot check fake GPUs; use --gpu-check auto or nvml with --fake-gpus", param_hint="'--gpu-check'"
        )
    try:
        health = parse_listen_address(health_address) if health_address else None
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
        policy=policy,
        policy_reload=policy_reload,
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
        gpu_check=gpu_check,
        gpu_check_timeout=gpu_check_timeout,
        dcgmi=dcgmi,
        diagnostics_to=diagnostics_to,
        diagnostics=diagnostics,
        bug_report=bug_report,
        publisher=PublisherSettings(
            spool=SpoolLimits(max_bytes=max_bytes), retry=RetrySettings(shutdown_grace=shutdown_grace)
        ),
        health_address=health,
    )
    name_node_on_every_line(node)
    try:
        ProcessRuntime().run(lambda: serve_agent(settings))
    except HealthServerError as error:
        raise BadSetting(f"--health-address: {error}") from error
    except UnknownNvmlBackend as error:
        raise BadSetting(f"--fake-gpus: {error}") from None
