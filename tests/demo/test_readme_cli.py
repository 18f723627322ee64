"""The README's operator lines work as written, against the demo an operator keeps running
(`make demo DEMO_ARGS="--manual --keep"`): every `temporal workflow …` line of its code blocks, its
`gpuheal status` and `gpuheal list` lines, and the queries of its UI links.

The README is parsed, so an edit to it is tested. The lines run as written: the address and the
namespace come from TEMPORAL_ADDRESS and TEMPORAL_NAMESPACE, as the README tells operators.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from gpuheal.control import remediations
from gpuheal.control.connection import connect_temporal
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.faults import Fault
from gpuheal.domain.phases import Phase
from gpuheal.domain.remediation import RemediationStatus
from gpuheal_sim.demo.run import demo_policy
from tests.demo.test_demo_lifecycle import running_demo

README = Path(__file__).parents[2] / "README.md"
BIN = Path(sys.executable).parent
NODE = "gpu-node-001"  # the node the demo faults, and the README's example
WORKFLOW_ID = f"remediate-{NODE}"
VERBS = {"list", "describe", "query", "signal", "update"}
UI_LINK = re.compile(r"\((http://localhost:8233/namespaces/default/workflows\?query=[^)\s]+)\)")


def code_lines(program: str) -> list[list[str]]:
    """The lines of the README's code blocks that run `program`, split as a shell splits them."""
    found, in_block, command = [], False, ""
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            in_block = not in_block
        elif in_block and line.endswith("\\"):  # continued on the next line
            command += line[:-1]
        elif in_block:
            command, whole = "", command + line
            if whole.startswith(f"{program} "):
                found.append(shlex.split(whole, comments=True))
    return found


def temporal_lines() -> list[list[str]]:
    return [words for words in code_lines("temporal") if words[1] == "workflow" and words[2] in VERBS]


def gpuheal_lines() -> list[list[str]]:
    return [words for words in code_lines("gpuheal") if words[1] in {"status", "list"}]


def option(words: list[str], name: str) -> str:
    return words[words.index(name) + 1] if name in words else ""


class Stage(Enum):
    """What a line needs of the demo: the order they come in is the order the test goes."""

    AWAITING_APPROVAL = 1  # the demo's own remediation waits for a person
    SECOND_AWAITING = 2  # it resolved; a second remediation of the node waits for a person
    ESCALATED = 3  # the second one was rejected and is held for a person
    GOVERNOR = 4  # the fleet's governor, last: pausing it holds every later remediation


def stage_of(words: list[str]) -> Stage:
    if option(words, "--workflow-id").startswith("gpuheal-governor"):
        return Stage.GOVERNOR
    if any("Escalated" in word for word in words) or option(words, "--name") in {"resume", "retry", "release"}:
        return Stage.ESCALATED
    if words[:3] == ["temporal", "workflow", "signal"]:
        return Stage.SECOND_AWAITING
    return Stage.AWAITING_APPROVAL


def test_the_readme_shows_every_temporal_workflow_verb_in_lines_that_run_without_a_shell() -> None:
    lines = temporal_lines()

    assert {words[2] for words in lines} == VERBS
    assert not [words for words in lines if any("$" in word or "…" in word for word in words)]
    assert {option(words, "--name") for words in lines if words[2] == "update"} >= {"approve", "resume"}
    assert [option(words, "--name") for words in lines if words[2] == "signal"] == ["reject"], (
        "the test escalates the second remediation with the README's signal"
    )
    assert UI_LINK.findall(README.read_text()), "the README links the UI's filtered lists"


class Demo:
    """The demo as an operator keeps it: its output drained in the background (a full pipe would stop it)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        self.output: list[str] = []
        for line in process.stdout:
            self.output.append(line)
            if match := re.search(r"export TEMPORAL_ADDRESS=(\S+?)\)?\s", line):
                self.address = match.group(1)
                break
        else:
            raise AssertionError(f"the demo printed no Temporal address: {''.join(self.output)}")
        threading.Thread(target=lambda: self.output.extend(process.stdout or ()), daemon=True).start()
        self.env = {**os.environ, "TEMPORAL_ADDRESS": self.address, "TEMPORAL_NAMESPACE": "default"}

    def run(self, words: list[str]) -> subprocess.CompletedProcess[str]:
        command = [str(BIN / words[0]), *words[1:]]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, env=self.env)

    def status(self) -> RemediationStatus | None:
        shown = self.run(["gpuheal", "status", NODE, "--json"])
        return RemediationStatus.model_validate_json(shown.stdout) if shown.returncode == 0 else None

    def wait_for(self, done: Callable[[RemediationStatus], bool], what: str) -> RemediationStatus:
        for _ in range(300):
            status = self.status()
            if status is not None and done(status):
                return status
        raise AssertionError(f"{NODE} never {what}: last {status}; demo said {''.join(self.output)[-3000:]}")

    def fault_again(self) -> None:
        """A second fault on the node, reported as its agent does, under the demo's manual policy."""

        async def report() -> None:
            client = await connect_temporal(self.address, "default")
            fault = Fault(node=NODE, action=RecommendedAction.RESTART_BM, xid=79, event_id=str(uuid.uuid4()))
            await remediations.report_fault(client, fault, demo_policy(manual=True))

        asyncio.run(report())


def check(demo: Demo, words: list[str], status: RemediationStatus | None) -> None:
    """Run one README line and check that it shows what the README says it shows."""
    result = demo.run(words)
    line = shlex.join(words)
    assert result.returncode == 0, f"{line}: {result.stdout}{result.stderr}"
    if words[0] == "gpuheal":
        assert result.stderr == "", f"{line}: {result.stderr}"
        if "--stuck" not in words:  # the demo's runs are minutes old
            assert NODE in result.stdout, f"{line}: {result.stdout}"
        return
    verb = words[2]
    if verb in {"list", "describe"}:
        assert WORKFLOW_ID in result.stdout, f"{line} does not show {WORKFLOW_ID}: {result.stdout}"
    if verb == "describe":
        assert "RemediationWorkflow" in result.stdout, result.stdout
    if verb == "query" and option(words, "--workflow-id") == WORKFLOW_ID:
        assert status is not None and f'"phase":"{status.phase.value}"' in result.stdout.replace(" ", ""), result.stdout
    if verb == "update":
        # The answer is the decision or action as recorded: the fields sent, as the CLI prints them.
        for key, value in json.loads(option(words, "--input")).items():
            assert f"{key}:{value}" in result.stdout, f"{line}: {result.stdout}"
    if verb == "signal":
        sent = json.loads(option(words, "--input"))
        decided = demo.wait_for(lambda s: s.decision is not None, "recorded the signalled decision").decision
        assert decided is not None and decided.approver == sent["approver"]
        assert decided.approved is (option(words, "--name") == "approve")


def acts(words: list[str]) -> bool:
    return words[0] == "temporal" and words[2] in {"update", "signal"}


@pytest.mark.timeout(300)
def test_the_readme_lines_work_as_written_against_the_kept_demo(tmp_path: Path) -> None:
    lines = gpuheal_lines() + temporal_lines()
    by_stage = {stage: [words for words in lines if stage_of(words) is stage] for stage in Stage}
    reads = {Stage.AWAITING_APPROVAL, Stage.ESCALATED}
    with running_demo(tmp_path / "state", "--manual", "--keep") as process:
        demo = Demo(process)
        waiting = demo.wait_for(lambda s: s.phase is Phase.AWAITING_APPROVAL, "waited for approval")

        for url in UI_LINK.findall(README.read_text()):
            [query] = parse_qs(urlsplit(url).query)["query"]
            check(demo, ["temporal", "workflow", "count", "--query", query], None)

        for stage in Stage:
            status = demo.status()
            # Lines that only read come before those that act (an update moves the run on).
            ordered = sorted(by_stage[stage], key=acts)
            for words in ordered:
                check(demo, words, status if stage in reads else None)
            if stage is Stage.AWAITING_APPROVAL:
                demo.wait_for(lambda s: s.phase is Phase.RESOLVED, "resolved after the approval")
                demo.fault_again()
                demo.wait_for(
                    lambda s: (
                        s.phase is Phase.AWAITING_APPROVAL and s.history[0].entered_at > waiting.history[-1].entered_at
                    ),
                    "waited for approval a second time",
                )
            if stage is Stage.SECOND_AWAITING:
                demo.wait_for(lambda s: s.phase is Phase.ESCALATED, "escalated after the rejection")

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0, "".join(demo.output)[-3000:]
