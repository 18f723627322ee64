"""`gpuheal replay LOG…|DIR`: what a policy would have done with recorded logs, with no cluster."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from gpuheal.domain.policy_document import PolicyDocument
from gpuheal.params import PolicyFile
from gpuheal.policyfile import LoadedPolicy
from gpuheal.replay import HEALTH_EVENTS_SUFFIX, KERNEL_LOG_SUFFIX, NodeReplay, UnreadableLog, replay_logs

_LOG_SUFFIXES = (KERNEL_LOG_SUFFIX, HEALTH_EVENTS_SUFFIX)


@click.command()
@click.argument("logs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--policy",
    type=PolicyFile(),
    help="The policy file to replay under (as `gpuheal worker --policy` reads it) [default: the built-in policy].",
)
@click.option(
    "--gpu-nodes",
    type=click.IntRange(min=1, max=10_000_000),
    help="GPU nodes in the fleet, for the budget's and the breaker's shares [default: the nodes replayed].",
)
@click.option(
    "--repair-minutes",
    type=click.FloatRange(min=0, min_open=True, max=7 * 24 * 60),
    callback=lambda _ctx, _param, minutes: _finite(minutes),
    default=15.0,
    show_default=True,
    help="How long a repair is assumed to hold its node out of service (drain, reboot, verify).",
)
@click.option(
    "--year",
    type=click.IntRange(1970, 9999),
    default=lambda: datetime.now(UTC).year,
    show_default="this year",
    help="The year of syslog stamps (`Nov 23 02:07:01`), which name none.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per node, then nothing else.")
def replay(
    logs: tuple[Path, ...],
    policy: LoadedPolicy[PolicyDocument] | None,
    gpu_nodes: int | None,
    repair_minutes: float,
    year: int,
    as_json: bool,
) -> None:
    """Replay recorded logs through the monitors, the policy, the budget and the breaker, and say per
    node what would have happened.

    Each of LOGS is a node's kernel log (`<node>.log`: dmesg, journald, syslog or /dev/kmsg records,
    timed by their own stamps), a health-event stream (`<node>.jsonl`: one intake event per line, in
    the intake's JSON form), or a directory of such files. Nobody acts in a replay: a tripped breaker
    stays tripped, an escalated remediation holds its node to the end, and an approval nobody gives
    runs out as the policy says (approved on gpuheal's behalf, or escalated).
    """
    files = _log_files(logs)
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        # The replayed agents' own news (boots, remediations ended) is the replay's output, said once.
        logging.getLogger("gpuheal.agents").setLevel(logging.WARNING)
    document = policy.document if policy is not None else PolicyDocument()
    try:
        replayed = asyncio.run(
            replay_logs(
                files,
                document,
                gpu_nodes=gpu_nodes or len({path.stem for path in files}),
                repair_time=timedelta(minutes=repair_minutes),
                year=year,
            )
        )
    except UnreadableLog as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        for node in replayed:
            click.echo(json.dumps(node.as_json()))
        return
    _print(replayed, document.version)


def _log_files(paths: tuple[Path, ...]) -> list[Path]:
    """The logs given, and those in the directories given (not their subdirectories), each once; a
    file that is neither kind is refused."""
    files: dict[Path, None] = {}
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in _LOG_SUFFIXES)
            if not found:
                raise click.BadParameter(f"{path} holds no <node>.log or <node>.jsonl files", param_hint="LOGS")
            files.update(dict.fromkeys(p.resolve() for p in found))
        elif path.suffix in _LOG_SUFFIXES:
            files[path.resolve()] = None
        else:
            raise click.BadParameter(
                f"{path}: name a node's log <node>.log (kernel log) or <node>.jsonl (health events)", param_hint="LOGS"
            )
    return list(files)


def _finite(minutes: float) -> float:
    if not math.isfinite(minutes):  # nan passes a range
        raise click.BadParameter(f"{minutes} is not a number of minutes", param_hint="'--repair-minutes'")
    return minutes


def _print(replayed: list[NodeReplay], version: str) -> None:
    click.echo(f"replayed under policy {version}")
    for node in replayed:
        if not node.runs:
            click.echo(f"{node.node}: no remediation")
            continue
        click.echo(f"{node.node}: {len(node.runs)} remediation(s)")
        for run in node.runs:
            waited = f"; waited for its permit: {run.waited}" if run.waited and run.granted_at else ""
            reason = f": {run.reason}" if run.reason else ""
            click.echo(
                f"  {run.started_at.isoformat()}  {run.action.name}, {run.faults} fault(s) -> {run.phase.value}"
                f"{reason}{waited}"
            )
    outcomes = Counter(run.phase.value for node in replayed for run in node.runs)
    click.echo("")
    click.echo(f"{'outcome':<20} remediations")
    for outcome, count in sorted(outcomes.items()):
        click.echo(f"{outcome:<20} {count}")
    click.echo(f"{'nodes':<20} {len(replayed)}")
