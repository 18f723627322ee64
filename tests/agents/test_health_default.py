"""`gpuheal agent` serves its metrics on loopback unless told otherwise, as the worker does: the
default is `127.0.0.1:9465` (the worker's is 9464), and `--health-address ''` turns the endpoint off."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import gpuheal.agents.agent
import gpuheal.commands.agent
from gpuheal.address import EVERY_ADDRESS
from gpuheal.agents.agent import AgentSettings
from gpuheal.cli import main
from tests.test_cli import run_script


def test_the_help_shows_the_loopback_default() -> None:
    help_text = " ".join(run_script("agent", "--help").stdout.split())

    assert "empty or `off` to disable [env GPUHEAL_HEALTH_ADDRESS]. [default: 127.0.0.1:9465]" in help_text


@pytest.mark.parametrize(
    ("flags", "environment", "expected"),
    [
        ([], {}, ("127.0.0.1", 9465)),
        (["--health-address", ""], {}, None),
        (["--health-address", "off"], {}, None),
        (["--health-address", "*:9100"], {}, (EVERY_ADDRESS, 9100)),
        # click takes an empty variable for an unset one: a pod's environment turns it off with `off`.
        ([], {"GPUHEAL_HEALTH_ADDRESS": "off"}, None),
        ([], {"GPUHEAL_HEALTH_ADDRESS": "OFF"}, None),
    ],
)
def test_the_agent_serves_its_health_where_the_flag_says(
    flags: list[str], environment: dict[str, str], expected: tuple[str, int] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[AgentSettings] = []

    async def serve_agent(settings: AgentSettings) -> None:  # the agent as started, without starting it
        started.append(settings)

    monkeypatch.setattr(gpuheal.agents.agent, "serve_agent", serve_agent)
    monkeypatch.setattr(gpuheal.commands.agent, "name_node_on_every_line", lambda node: None)
    result = CliRunner().invoke(
        main, ["agent", "--node", "n1", "--fake-gpus", "1", "--kernel-log", "", *flags], env=environment
    )

    assert result.exit_code == 0, result.output
    [settings] = started
    assert settings.health_address == expected
