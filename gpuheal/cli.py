"""`gpuheal`: the one console script (demo, worker, approve, reject, status, list)."""

from __future__ import annotations

import getpass
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeVar

import click
from temporalio.service import RPCError

from gpuheal.control import remediations
from gpuheal.control.connection import (
    NamespaceNotFound,
    TemporalUnreachable,
    connect_temporal,
    is_namespace_not_found,
)
from gpuheal.control.lifetime import ProcessRuntime
from gpuheal.domain.decisions import DecisionRefused
from gpuheal.domain.remediation import ApprovalSignal, RecordedDecision
from gpuheal.params import HostPort, KubeconfigFile

T = TypeVar("T")

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
        remediations.DecisionUnanswered,
        DecisionRefused,
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
def main(verbose: bool) -> None:
    """gpuheal keeps Kubernetes GPU nodes healthy with durable Temporal remediations."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _decision_command(approve: bool) -> Any:
    verb = "approve" if approve else "reject"

    @with_temporal_options
    @click.argument("node")
    @click.option("--by", "approver", help="Who decides (recorded in the workflow)  [default: your login name]")
    @click.option("--reason", required=True, help="Why (recorded in the workflow).")
    def command(address: str | None, namespace: str | None, node: str, approver: str | None, reason: str) -> None:
        who = _login_name() if approver is None else approver.strip()
        if not who:
            raise click.BadParameter("must name who decides", param_hint="'--by'")
        if not reason.strip():
            raise click.BadParameter("must say why", param_hint="'--reason'")
        decision = ApprovalSignal(approver=who, reason=reason.strip())

        async def send() -> RecordedDecision:
            client = await connect_temporal(address, namespace)
            return await remediations.send_decision(client, node, decision, approve=approve)

        recorded = run_command(send)
        click.echo(f"{verb}d the remediation of {node} as {recorded.approver} at {recorded.at.isoformat()}")

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
@with_temporal_options
@click.argument("node")
def status(address: str | None, namespace: str | None, node: str) -> None:
    """Show the remediation of NODE as JSON (phase, action, faults, decision, phase history)."""

    async def query() -> str:
        client = await connect_temporal(address, namespace)
        return (await remediations.status(client, node)).model_dump_json(indent=2)

    click.echo(run_command(query))


@main.command(name="list")
@with_temporal_options
@click.option("--query", default="", help='Visibility filter, e.g. GpuhealPhase = "AwaitingApproval".')
def list_command(address: str | None, namespace: str | None, query: str) -> None:
    """List remediations, newest first."""

    async def fetch() -> list[remediations.RemediationSummary]:
        client = await connect_temporal(address, namespace)
        return await remediations.list_remediations(client, query)

    try:
        rows = run_command(fetch)
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
