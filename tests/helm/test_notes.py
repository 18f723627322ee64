"""NOTES.txt, what a person reads after an install: every `gpuheal` command it shows is one the CLI has."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import click
import helm_python as helm
import pytest

from gpuheal.cli import main
from tests.chart import NAMESPACE, NOTES, RELEASE
from tests.helm.test_chart import SCENARIOS, chart

__all__ = ["chart"]  # test_chart's fixture

TEAM_QUEUE = "gpu-team-a"


def notes(chart: helm.Chart, values: dict[str, Any]) -> str:
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    [text] = [text for name, text in rendered.items() if name.endswith(NOTES)]
    return text


def gpuheal_commands(text: str) -> list[list[str]]:
    """The NOTES' command lines (indented) that run `gpuheal`, split as a shell would."""
    return [
        shlex.split(line) for line in text.splitlines() if line[:1].isspace() and line.strip().startswith("gpuheal ")
    ]


def parse(argv: list[str]) -> click.Context:
    """`argv` (after `gpuheal`) resolved as the CLI would: each command in the path must exist and
    each option be one it takes, with a value it accepts, and none it requires be missing."""
    command: click.Command = main
    ctx = main.make_context("gpuheal", [], resilient_parsing=True)
    args = list(argv)
    while isinstance(command, click.Group):
        assert args, f"{argv} names the group {ctx.command_path!r}, not a command"
        name, *args = args
        sub = command.get_command(ctx, name)
        assert sub is not None, f"{ctx.command_path!r} has no command {name!r}"
        command = sub
        if isinstance(command, click.Group):
            ctx = command.make_context(name, [], parent=ctx, resilient_parsing=True)
    return command.make_context(name, args, parent=ctx)


@pytest.mark.parametrize("scenario", ["defaults", "everything-on"])
def test_every_gpuheal_command_in_the_notes_is_one_the_cli_takes(
    chart: helm.Chart, scenario: str, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"  # the NOTES' placeholder TOKEN_FILE must name a file that exists
    token_file.write_text("t")
    commands = gpuheal_commands(notes(chart, SCENARIOS[scenario]))
    assert len(commands) >= 7
    for argv in commands:
        assert argv[0] == "gpuheal"
        parse([str(token_file) if arg == "TOKEN_FILE" else arg for arg in argv[1:]])


def test_the_parser_refuses_what_the_cli_does_not_have() -> None:
    for argv in (["budget", "status"], ["breaker", "state"], ["list", "--queue", "x"], ["breaker"]):
        with pytest.raises((AssertionError, click.UsageError)):
            parse(argv)


def test_the_notes_reach_the_governor_of_the_releases_task_queue(chart: helm.Chart) -> None:
    commands = gpuheal_commands(notes(chart, {"temporal": {"taskQueue": TEAM_QUEUE}}))
    governor = [argv for argv in commands if argv[1] in ("budget", "breaker")]
    assert len(governor) == 2
    for argv in governor:
        assert parse(argv[1:]).params["task_queue"] == TEAM_QUEUE
