"""Each default of the worker's and the agent's flags is written once, in the settings class behind the flag."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import click
import pytest
from click.testing import CliRunner

from gpuheal.cli import main
from gpuheal.settings_options import SettingOption, setting_default, setting_option

# The commands whose flags configure a settings class.
CONFIGURED = ["worker", "agent"]


def _command(name: str) -> click.Command:
    # The commands load through their entry points, as `gpuheal NAME` loads them.
    command = main.get_command(click.Context(main), name)
    assert isinstance(command, click.Command)
    return command


@pytest.mark.parametrize("name", CONFIGURED)
def test_every_flag_with_a_default_takes_it_from_a_setting(name: str) -> None:
    command = _command(name)
    written_twice = [
        option.name
        for option in command.params
        if isinstance(option, click.Option) and option.show_default and not isinstance(option, SettingOption)
    ]
    assert written_twice == []


@pytest.mark.parametrize("name", CONFIGURED)
def test_help_shows_each_settings_default(name: str) -> None:
    command = _command(name)
    context = click.Context(command, info_name=name)
    options = [param for param in command.params if isinstance(param, SettingOption)]
    assert options
    for option in options:
        default = setting_default(option.owner, option.field)
        record = option.get_help_record(context)
        assert record is not None
        if default is None:
            assert "default:" not in record[1], option.name
        elif isinstance(default, bool) and option.secondary_opts:  # an on/off pair shows the default's flag
            assert f"default: {(option.opts if default else option.secondary_opts)[0].lstrip('-')}" in record[1]
        else:
            assert f"default: {option.unit.shown(default)}" in record[1], option.name


@dataclasses.dataclass(frozen=True)
class _Settings:
    grace: timedelta = timedelta(seconds=7)
    size: int = 3


def _echo(settings_class: type[_Settings]) -> click.Command:
    @click.command()
    @setting_option(settings_class, "grace", "--grace-seconds")
    @setting_option(settings_class, "size", "--size")
    def command(grace: timedelta, size: int) -> None:
        click.echo(repr(_Settings(grace=grace, size=size)))

    return command


def test_a_flag_follows_its_settings_default_and_hands_over_the_settings_type() -> None:
    @dataclasses.dataclass(frozen=True)
    class Changed(_Settings):
        grace: timedelta = timedelta(minutes=2)

    assert CliRunner().invoke(_echo(_Settings), []).output.strip() == repr(_Settings())
    assert CliRunner().invoke(_echo(Changed), []).output.strip() == repr(_Settings(grace=timedelta(minutes=2)))
    given = CliRunner().invoke(_echo(_Settings), ["--grace-seconds", "1.5", "--size", "9"])
    assert given.output.strip() == repr(_Settings(grace=timedelta(seconds=1.5), size=9))
    assert "[default: 120.0" in CliRunner().invoke(_echo(Changed), ["--help"]).output


def test_a_duration_flag_refuses_a_negative_number_of_seconds() -> None:
    result = CliRunner().invoke(_echo(_Settings), ["--grace-seconds", "-1"])
    assert result.exit_code == 2 and "--grace-seconds" in result.output


@pytest.mark.parametrize("seconds", ["nan", "inf", "1e300"])
def test_a_duration_flag_refuses_seconds_no_duration_can_hold(seconds: str) -> None:
    result = CliRunner().invoke(_echo(_Settings), ["--grace-seconds", seconds])

    assert result.exit_code == 2, result.output
    assert f"Invalid value for '--grace-seconds': '{seconds}' cannot be used" in result.output
