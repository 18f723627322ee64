"""`gpuheal`: the one console script (demo, worker, approve, reject, status, list)."""

from __future__ import annotations

import getpass
import json
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeVar

import click
from temporalio.service import RPCError

from gpuheal.control import governor, remediations, updates
from gpuheal.control.connection import (
    DEFAULT_TASK_QUEUE,
    NamespaceNotFound,
    TemporalUnreachable,
    connect_temporal,
    is_namespace_not_found,
)
from gpuheal.control.governor import governor_id_for
from gpuheal.control.lifetime import ProcessRuntime
from gpuheal.control.logformat import log_as_json
from gpuheal.control.tables import render_table
from gpuheal.domain.decisions import PersonAction
from gpuheal.domain.fleet import GovernorStatus
from gpuheal.domain.operator import ActionRefused, OperatorAction, RecordedAction
from gpuheal.domain.phases import Phase
from gpuheal.domain.policy_document import AgentPolicy, PolicyDocument
from gpuheal.domain.remediation import ApprovalSignal, NodeRelease, RecordedDecision, RemediationStatus
from gpuheal.domain.steps import DrainProgress
from gpuheal.domain.ui_text import elapsed
from gpuheal.params import Duration, HostPort, KubeconfigFile, PolicyFile
from gpuheal.settings_options import setting_option

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

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


def policy_options(
    owner: type[Any], decides: str, model: type[PolicyDocument] | type[AgentPolicy] = PolicyDocument
) -> Callable[[F], F]:
    """The worker's and the agent's `--policy FILE` (read as `model`) and `--policy-reload-seconds` (a
    field of `owner`); `decides` says what of the file the command uses."""

    def apply(command: F) -> F:
        reload = setting_option(
            owner,
            "policy_reload",
            "--policy-reload-seconds",
            type=click.FloatRange(min=0, min_open=True),
            help="How often the policy file is read again.",
        )
        file = click.option(
            "--policy",
            type=PolicyFile(model),
            envvar="GPUHEAL_POLICY",
            help=f"The policy file (YAML; `gpuheal policy schema` prints its JSON schema): {decides}. A file that "
            "cannot be used stops the command, naming each problem's line; the file is read again every "
            "--policy-reload-seconds, and a later bad edit is logged while the policy in force stays "
            "[env GPUHEAL_POLICY; default: the built-in policy].",
        )
        return file(reload(command))

    return apply


# The worker's and the agent's Kubernetes credentials.
kubeconfig_option = click.option(
    "--kubeconfig",
    type=KubeconfigFile(),
    envvar="KUBECONFIG",
    help="Kubeconfig; in a pod the service account is used when unset.",
)


def with_temporal_options(command: Any) -> Any:
    for option in reversed(_temporal_options):
        command = option(command)
    return command


def run_command(main: Callable[[], Coroutine[Any, Any, T]], runtime: ProcessRuntime | None = None) -> T:
    """Run a command's coroutine on the process's own Temporal runtime, released before exit.

    What a person can act on (Temporal or Kubernetes not answering, a namespace or remediation that
    does not exist) ends the command with one line instead of a traceback.
    """
    from gpuheal.kubeprobe import KubernetesUnavailable

    try:
        return (runtime or ProcessRuntime()).run(main)
    except (
        remediations.RemediationNotFound,
        governor.GovernorNotFound,
        governor.GovernorUnanswered,
        ActionRefused,
        updates.ActionUnanswered,
        TemporalUnreachable,
        KubernetesUnavailable,
    ) as error:
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
@click.option(
    "--log-format",
    type=click.Choice(["plain", "json"], case_sensitive=False),
    default="plain",
    show_default=True,
    envvar="GPUHEAL_LOG_FORMAT",
    help="json: one JSON object per line (time, level, logger, message, and workflow_id, node, gpu where "
    "known), for a log pipeline [env GPUHEAL_LOG_FORMAT].",
)
def main(verbose: bool, log_format: str) -> None:
    """gpuheal keeps Kubernetes GPU nodes healthy with durable Temporal remediations."""
    level = logging.DEBUG if verbose else logging.INFO
    if log_format == "json":
        log_as_json(level)
    else:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _decision_command(approve: bool) -> Any:
    verb = "approve" if approve else "reject"

    @with_temporal_options
    @click.argument("node")
    @_who_and_why_options("the workflow", verb="decides")
    def command(address: str | None, namespace: str | None, node: str, by: str | None, reason: str) -> None:
        who = _who_and_why(by, reason, "decides")
        decision = ApprovalSignal(approver=who, reason=reason.strip())

        async def send() -> RecordedDecision:
            client = await connect_temporal(address, namespace)
            return await remediations.send_decision(client, node, decision, approve=approve)

        recorded = run_command(send)
        click.echo(f"{verb}d the remediation of {node} as {recorded.approver} at {recorded.at.isoformat()}")

    command.__doc__ = f"{verb.capitalize()} the pending repair of NODE."
    return main.command(name=verb)(command)


def _who_and_why_options(recorded_in: str, verb: str = "acts") -> Callable[[Callable[..., Any]], Any]:
    """--by (default: the login name) and the required --reason, both recorded in `recorded_in`."""

    def add(command: Callable[..., Any]) -> Any:
        command = click.option("--reason", required=True, help=f"Why (recorded in {recorded_in}).")(command)
        return click.option("--by", help=f"Who {verb} (recorded in {recorded_in})  [default: your login name]")(command)

    return add


def _who_and_why(by: str | None, reason: str, verb: str) -> str:
    """Who acts (--by, else the login name), refusing a blank name or reason in one line each."""
    who = _login_name() if by is None else by.strip()
    if not who:
        raise click.BadParameter(f"must name who {verb}", param_hint="'--by'")
    if not reason.strip():
        raise click.BadParameter("must say why", param_hint="'--reason'")
    return who


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


def _act_on_escalation(
    what: PersonAction,
    address: str | None,
    namespace: str | None,
    node: str,
    by: str | None,
    reason: str,
    keep_cordoned: bool = False,
) -> None:
    """Carry out a person's action on NODE's escalated remediation, with who and why, in one line."""
    who, why = _who_and_why(by, reason, "acts"), reason.strip()
    action = (
        NodeRelease(by=who, reason=why, keep_cordoned=keep_cordoned)
        if what is PersonAction.RELEASE
        else OperatorAction(by=who, reason=why)
    )

    async def send() -> RecordedAction:
        client = await connect_temporal(address, namespace)
        return await remediations.act_on_escalation(client, node, what, action)

    taken = run_command(send)
    click.echo(f"{what.done} the remediation of {node} as {taken.by} at {taken.at.isoformat()}")


@main.command()
@with_temporal_options
@click.argument("node")
@_who_and_why_options("the workflow")
def retry(address: str | None, namespace: str | None, node: str, by: str | None, reason: str) -> None:
    """Run the drain or repair that escalated NODE's remediation again."""
    _act_on_escalation(PersonAction.RETRY, address, namespace, node, by, reason)


@main.command()
@with_temporal_options
@click.argument("node")
@_who_and_why_options("the workflow")
@click.option("--keep-cordoned", is_flag=True, help="Leave the node cordoned (gpuheal's taint and marks go).")
def release(
    address: str | None, namespace: str | None, node: str, by: str | None, reason: str, keep_cordoned: bool
) -> None:
    """Let go of escalated NODE as it is, unrepaired: back to service unless --keep-cordoned."""
    _act_on_escalation(PersonAction.RELEASE, address, namespace, node, by, reason, keep_cordoned)


_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def _at(moment: datetime | None) -> str:
    return "" if moment is None else f"{moment.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


def _summary_cells(row: remediations.RemediationSummary) -> list[str]:
    """NODE, PHASE, SINCE, ACTION, XID, GPUS: the columns both tables begin with."""
    return [
        row.node,
        row.phase,
        _at(row.since),
        row.action,
        "" if row.xid is None else str(row.xid),
        ",".join(row.gpus),
    ]


_SUMMARY_HEADERS = ["NODE", "PHASE", "SINCE", "ACTION", "XID", "GPUS"]


def _echo_summaries(rows: list[remediations.RemediationSummary], as_json: bool, *more: str) -> None:
    """The remediations as a JSON array, or as a table with the `more` columns after the common ones."""
    if as_json:
        click.echo(json.dumps([row.as_json() for row in rows], indent=2))
        return
    extra: dict[str, Callable[[remediations.RemediationSummary], str]] = {
        "RUNNING": lambda row: "yes" if row.running else "no",
        "STARTED": lambda row: _at(row.started),
        "POLICY": lambda row: row.policy,
    }
    cells = [_summary_cells(row) + [extra[column](row) for column in more] for row in rows]
    click.echo(render_table([*_SUMMARY_HEADERS, *more], cells))


def _decision_text(decision: RecordedDecision | None) -> str:
    if decision is None:
        return "none"
    verb = "approved" if decision.approved else "rejected"
    return f"{verb} by {decision.approver} at {_at(decision.at)}: {decision.reason}"


def _drain_text(drain: DrainProgress | None) -> str:
    if drain is None:
        return "not begun"
    return (
        f"{drain.evicted} evicted, {drain.deleted} deleted, {len(drain.remaining)} remaining "
        f"({len(drain.blocked)} blocked by a budget, {len(drain.failed)} failed)"
    )


def describe(status: RemediationStatus, now: datetime) -> str:
    """`gpuheal status NODE`: the run as `key: value` lines, then its phases with how long each lasted
    (the current one so far; an ended run's last phase has no duration)."""
    phase = status.phase.value
    if status.history:
        entered = status.history[-1].entered_at
        phase += f" since {_at(entered)}" + ("" if status.phase.is_final else f" ({elapsed(now - entered)} ago)")
    permit = status.permit
    fields = [
        ("node", status.node),
        ("phase", phase),
        ("reason", status.reason),
        ("action", status.action.name),
        ("xids", ", ".join(map(str, status.xids))),
        ("gpus", ", ".join(status.gpu_uuids)),
        ("faults", str(status.faults)),
        ("decision", _decision_text(status.decision)),
        *[("acted", f"{a.action} by {a.by} at {_at(a.at)}: {a.reason}") for a in status.actions],
        (
            "permit",
            "none" if permit is None else f"{permit.permit_id} of {permit.governor_id} since {_at(permit.granted_at)}",
        ),
        ("drain", _drain_text(status.drain)),
        *[("repair", step) for step in status.repair],
        *[("plan", step) for step in status.plan],
        *[("diagnostics", bundle) for bundle in status.diagnostics],
        ("policy", status.policy_version),
    ]
    width = max(len(key) for key, _ in fields) + 2
    # A value of several lines (a reason) goes on under its first line, not back at the keys' margin.
    lines = [f"{key + ':':<{width}}" + ("\n" + " " * width).join(value.splitlines()) for key, value in fields if value]
    # Each phase lasted until the next began; the last one lasts still, unless the run ended.
    ends = [entry.entered_at for entry in status.history[1:]] + [None if status.phase.is_final else now]
    history = [
        [entry.phase.value, _at(entry.entered_at), "" if end is None else elapsed(end - entry.entered_at)]
        for entry, end in zip(status.history, ends[: len(status.history)], strict=True)
    ]
    return "\n".join(lines) + "\n\n" + render_table(["PHASE", "ENTERED", "FOR"], history)


@main.command()
@with_temporal_options
@click.argument("node", required=False)
@_json_option
def status(address: str | None, namespace: str | None, node: str | None, as_json: bool) -> None:
    """Show the remediation of NODE: phase and since when, action, faults, decision, permit, drain,
    repair log and phase history. Without NODE: every running remediation, one line each.

    --json prints the `status` query's answer for NODE, or an array of the running remediations.
    """
    if node is None:

        async def running() -> list[remediations.RemediationSummary]:
            client = await connect_temporal(address, namespace)
            return await remediations.list_remediations(client, running=True)

        _echo_summaries(run_command(running), as_json)
        return

    async def query() -> RemediationStatus:
        client = await connect_temporal(address, namespace)
        return await remediations.status(client, node, wait=remediations.STATUS_WAIT)

    try:
        found = run_command(query)
    except remediations.StatusUnanswered as error:
        raise click.ClickException(str(error)) from None
    click.echo(found.model_dump_json(indent=2) if as_json else describe(found, datetime.now(UTC)))


def _checked_query(ctx: click.Context, param: click.Parameter, query: str) -> str:
    """The --query, refused before connecting when it could not stay one clause of gpuheal's query."""
    try:
        remediations.check_query(query)
    except remediations.InvalidQuery as error:
        raise click.BadParameter(str(error), ctx=ctx, param=param) from None
    return query


# The most remediations one `gpuheal list` prints: past it, a table is no use and a narrower filter is.
_MOST_LISTED = 10_000


@main.command(name="list")
@with_temporal_options
@click.option(
    "--query",
    default="",
    callback=_checked_query,
    help='Visibility filter, e.g. GpuhealNode = "gpu-node-001" (no ORDER BY: newest come first).',
)
@click.option(
    "--phase",
    type=click.Choice([phase.value for phase in Phase]),
    help="Only remediations in this phase.",
)
@click.option("--running", is_flag=True, help="Only running remediations (Escalated ones are running).")
@click.option(
    "--stuck",
    type=Duration(),
    metavar="DURATION",
    help="Only running remediations in their phase for longer than this (1h, 30m, 1h30m).",
)
@click.option(
    "--limit", type=click.IntRange(min=1, max=_MOST_LISTED), help=f"At most this many (up to {_MOST_LISTED:,})."
)
@_json_option
def list_command(
    address: str | None,
    namespace: str | None,
    query: str,
    phase: str | None,
    running: bool,
    stuck: timedelta | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """List remediations, newest first, matching every filter given."""

    async def fetch() -> list[remediations.RemediationSummary]:
        client = await connect_temporal(address, namespace)
        wanted = None if phase is None else Phase(phase)
        return await remediations.list_remediations(
            client, query, phase=wanted, running=running, stuck=stuck, limit=limit
        )

    try:
        rows = run_command(fetch)
    except remediations.InvalidQuery as error:
        raise click.BadParameter(str(error), param_hint="'--query'") from None
    _echo_summaries(rows, as_json, "RUNNING", "STARTED", "POLICY")


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


# ---- the fleet governor ---------------------------------------------------------------------------------

_governor_queue_option = click.option(
    "--task-queue",
    default=DEFAULT_TASK_QUEUE,
    show_default=True,
    envvar="GPUHEAL_TASK_QUEUE",
    help="The workers' task queue, whose governor to reach.",
)


def _governor_action(
    what: str, address: str | None, namespace: str | None, queue: str, by: str | None, reason: str
) -> GovernorStatus:
    """Carry out an operator's action on the governor, with who and why, and return its status after."""
    who = _who_and_why(by, reason, "acts")

    async def send() -> GovernorStatus:
        client = await connect_temporal(address, namespace)
        return await governor.act(client, what, OperatorAction(by=who, reason=reason.strip()), governor_id_for(queue))

    return run_command(send)


def _governor_status(address: str | None, namespace: str | None, queue: str) -> GovernorStatus:
    async def query() -> GovernorStatus:
        client = await connect_temporal(address, namespace)
        return await governor.status(client, governor_id_for(queue))

    return run_command(query)


def _operator_command(name: str, what: str, summary: str) -> Callable[[Callable[..., Any]], click.Command]:
    """A command that takes --by and --reason and carries `what` out on the governor."""

    def make(group_command: Callable[..., Any]) -> click.Command:
        @with_temporal_options
        @_governor_queue_option
        @_who_and_why_options("the governor")
        def command(address: str | None, namespace: str | None, task_queue: str, by: str | None, reason: str) -> None:
            status = _governor_action(what, address, namespace, task_queue, by, reason)
            click.echo(_breaker_line(status) if what == "reset_breaker" else _pause_line(status))

        command.__doc__ = summary
        return group_command(name=name)(command)  # type: ignore[no-any-return]

    return make


def _pause_line(status: GovernorStatus) -> str:
    paused = status.state.paused
    if paused is None:
        return f"not paused; {len(status.state.waiting)} remediation(s) waiting may go on as the budget allows"
    return f"paused by {paused.by} at {paused.at.isoformat(timespec='seconds')}: {paused.reason}"


def _breaker_line(status: GovernorStatus) -> str:
    window = status.policy.breaker.window
    counted = f"{status.quarantined_in_window} of {status.threshold} quarantines within {window}"
    tripped = status.state.tripped
    if tripped is None:
        return f"breaker closed: {counted}"
    return f"breaker TRIPPED at {tripped.at.isoformat(timespec='seconds')}: {tripped.reason}"


@main.group()
def breaker() -> None:
    """The fleet's circuit breaker: it trips when too many GPU nodes were quarantined lately."""


@breaker.command(name="status")
@with_temporal_options
@_governor_queue_option
def breaker_status(address: str | None, namespace: str | None, task_queue: str) -> None:
    """Whether the breaker is tripped, and the quarantines within its window."""
    status = _governor_status(address, namespace, task_queue)
    click.echo(_breaker_line(status))
    for action in status.state.log[-5:]:
        click.echo(f"  {action.at.isoformat(timespec='seconds')} {action.action} by {action.by}: {action.reason}")


_operator_command(
    "reset", "reset_breaker", "Reset the tripped breaker: the waiting remediations go on in arrival order."
)(breaker.command)
_operator_command("pause", "pause", "Pause the governor: new remediations wait, those under way finish.")(main.command)


@main.command()
@with_temporal_options
@_governor_queue_option
@click.argument("node", required=False)
@_who_and_why_options("the workflow")
def resume(
    address: str | None, namespace: str | None, task_queue: str, node: str | None, by: str | None, reason: str
) -> None:
    """Resume NODE's escalated remediation, or without NODE lift the fleet's pause.

    With NODE: its hardware is fixed; gpuheal checks that the node is Ready with healthy GPUs and
    puts it back in service. Without NODE: the governor of --task-queue lets waiting remediations go
    on as the budget allows (`gpuheal pause` set the pause).
    """
    if node is None:
        click.echo(_pause_line(_governor_action("resume", address, namespace, task_queue, by, reason)))
        return
    _act_on_escalation(PersonAction.RESUME, address, namespace, node, by, reason)


@main.command()
@with_temporal_options
@_governor_queue_option
def budget(address: str | None, namespace: str | None, task_queue: str) -> None:
    """The fleet budget: the permits held, and who waits and why."""
    status = _governor_status(address, namespace, task_queue)
    state = status.state
    click.echo(
        f"{len(state.held)} of {status.limit} permits held ({state.gpu_nodes} GPU nodes); {len(state.waiting)} waiting"
    )
    click.echo(_breaker_line(status))
    click.echo(_pause_line(status))
    for permit in state.held:
        group = f" [{status.policy.budget.group_label}={permit.group}]" if permit.group else ""
        click.echo(f"  held     {permit.node}{group} since {permit.granted_at.isoformat(timespec='seconds')}")
    for waiting in state.waiting:
        click.echo(f"  waiting  {waiting.request.node}: {waiting.why or 'just asked'}")
