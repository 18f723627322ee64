"""`gpuheal replay`: recorded logs through the monitors, the policy, the budget and the breaker."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from gpuheal.cli import main

FALLEN = "NVRM: Xid (PCI:0000:{bus}:00): 79, pid=0, GPU has fallen off the bus."
MMU = "NVRM: Xid (PCI:0000:3b:00): 31, pid=1234, name=python, Ch 00000008, intr 10000000. MMU Fault"
DBE = "NVRM: Xid (PCI:0000:5e:00): 48, pid=0, An uncorrectable double bit error"


def at(clock: str, text: str) -> str:
    return f"2026-11-23T{clock}+00:00 node kernel: {text}\n"


def replay(*args: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(main, ["replay", "--json", *args])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines()]


def by_node(replayed: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {node["node"]: node for node in replayed}


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    """Three nodes' kernel logs of one night."""
    (tmp_path / "gpu-node-001.log").write_text(
        at("02:07:01", FALLEN.format(bus="3b"))
        + at("02:07:02", FALLEN.format(bus="3b"))  # the same fault again: flood control folds it
        + at("05:07:02", FALLEN.format(bus="3b"))  # the same GPU, three hours after its repair
    )
    (tmp_path / "gpu-node-002.log").write_text(at("02:08:00", MMU) + at("02:09:00", DBE))
    (tmp_path / "gpu-node-003.log").write_text(f"[Mon Nov 23 02:07:30 2026] {FALLEN.format(bus='3b')}\n")
    (tmp_path / "gpu-node-004.log").write_text(at("02:00:00", MMU))  # the application's: nothing to repair
    return tmp_path


def test_each_node_says_what_would_have_happened(logs: Path) -> None:
    nodes = by_node(replay(str(logs), "--gpu-nodes", "100"))

    assert sorted(nodes) == ["gpu-node-001", "gpu-node-002", "gpu-node-003", "gpu-node-004"]
    first, again = nodes["gpu-node-001"]["runs"]
    assert nodes["gpu-node-001"]["outcomes"] == ["Resolved", "Escalated"]
    assert first["faults"] == 1  # the repeat a second later was folded by flood control
    assert again["reason"].startswith(f"repeat offender: GPU {first['gpus'][0]} faulted again within 7 days")
    assert f"run {first['run']}, Resolved" in again["reason"]
    assert (nodes["gpu-node-002"]["remediations"], nodes["gpu-node-002"]["runs"][0]["action"]) == (
        1,
        "COMPONENT_RESET",
    )
    assert nodes["gpu-node-003"]["outcomes"] == ["Resolved"]
    assert nodes["gpu-node-004"] == {"node": "gpu-node-004", "remediations": 0, "outcomes": [], "runs": []}


def test_a_repeat_offender_is_replaced_where_the_policy_allows(logs: Path, tmp_path: Path) -> None:
    policy = tmp_path / "replace.yaml"
    policy.write_text("repair:\n  replace: true\n")

    nodes = by_node(replay(str(logs), "--gpu-nodes", "100", "--policy", str(policy)))

    first, again = nodes["gpu-node-001"]["runs"]
    assert nodes["gpu-node-001"]["outcomes"] == ["Resolved", "Replaced"]
    assert again["reason"].startswith(f"repeat offender: GPU {first['gpus'][0]} faulted again within 7 days")
    assert again["reason"].endswith("; replaced") and again["ended_at"] is not None

    # The policy approves repairs on its own after 20 minutes, but never a termination: nobody acts here.
    policy.write_text("repair:\n  replace: true\n  require_approval: true\n  auto_approve_after: PT20M\n")
    approved = by_node(replay(str(logs), "--gpu-nodes", "100", "--policy", str(policy)))["gpu-node-001"]["runs"]
    assert [run["phase"] for run in approved] == ["Resolved", "Escalated"]


def test_the_budget_holds_the_later_faults_until_a_permit_frees(logs: Path) -> None:
    """Four GPU nodes at 10%: one remediation at a time, in arrival order."""
    nodes = by_node(replay(str(logs), "--repair-minutes", "30"))

    first = nodes["gpu-node-001"]["runs"][0]
    third = nodes["gpu-node-003"]["runs"][0]
    second = nodes["gpu-node-002"]["runs"][0]
    assert first["granted_at"] == "2026-11-23T02:07:01+00:00"
    assert third["waited"] == "budget full: 1 of 1 remediations under way"
    assert third["granted_at"] == first["ended_at"] == "2026-11-23T02:37:01+00:00"
    assert second["granted_at"] == third["ended_at"] == "2026-11-23T03:07:01+00:00"


def test_a_storm_trips_the_breaker_and_the_rest_wait_for_a_person(tmp_path: Path) -> None:
    for n in range(10):
        (tmp_path / f"gpu-node-{n:03}.log").write_text(at(f"02:00:{n:02}", FALLEN.format(bus="3b")))
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "fleet:\n  budget: {max_concurrent: 10, max_percent: 100}\n  breaker: {share: 0.3, at_least: 3}\n"
    )

    nodes = replay(str(tmp_path), "--policy", str(policy))

    outcomes = [node["outcomes"][0] for node in nodes]
    assert outcomes == ["Resolved"] * 3 + ["AwaitingBudget"] * 7
    assert nodes[9]["runs"][0]["reason"].startswith("circuit breaker tripped: 3 GPU nodes quarantined within 1:00:00")


def test_the_policy_decides_the_xids_and_who_approves(logs: Path, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "xids:\n  overrides: {31: RESTART_VM, 79: NONE}\nrepair:\n  approval_for: [RESTART_VM]\n"
        "fleet:\n  budget: {max_percent: 100}\n"
    )

    nodes = by_node(replay(str(logs), "--policy", str(policy)))

    assert nodes["gpu-node-001"]["remediations"] == 0  # XID 79 overridden to nothing
    # Nobody approves in a replay: the wait runs out and the remediation escalates, as a live one would.
    assert nodes["gpu-node-004"]["outcomes"] == ["Escalated"]
    assert nodes["gpu-node-004"]["runs"][0]["reason"] == "no approval within 1 day, 0:00:00"
    assert nodes["gpu-node-002"]["runs"][0]["action"] == "RESTART_VM"  # raised by the XID 31 before the 48


def intake_event(event_id: str, node: str = "gpu-node-007", at: str = "2026-11-23T02:00:00Z") -> str:
    """A health event as the intake takes it, in the protobuf's JSON form."""
    return json.dumps(
        {
            "id": event_id,
            "nodeName": node,
            "agent": "dcgm",
            "isFatal": True,
            "isHealthy": False,
            "recommendedAction": "RESTART_VM",
            "errorCode": ["79"],
            "entitiesImpacted": [{"entityType": "GPU_UUID", "entityValue": "GPU-0c9e2b1d-7f3a-4e5b-9c8d-1a2b3c4d5e6f"}],
            "generatedTimestamp": at,
        }
    )


def test_health_event_streams_replay_too_an_event_delivered_twice_counting_once(tmp_path: Path) -> None:
    stream = tmp_path / "gpu-node-007.jsonl"
    stream.write_text(intake_event("e1") + "\n\n" + intake_event("e2") + "\n" + intake_event("e2") + "\n")

    [node] = replay(str(tmp_path), str(stream))  # the same file twice (a DIR and a file in it) counts once

    assert (node["node"], node["remediations"], node["runs"][0]["faults"]) == ("gpu-node-007", 1, 2)


def test_a_repeat_after_the_remediation_ended_is_a_new_fault_as_the_live_agent_reports_it(tmp_path: Path) -> None:
    """Inside flood control's minute of the repeat before it, but after the remediation ended: the live
    agent sees the end (the node's marks go, a new boot) and forgets its windows."""
    (tmp_path / "gpu-node-001.log").write_text(
        at("02:00:00", FALLEN.format(bus="3b"))
        + at("02:14:45", FALLEN.format(bus="3b"))
        + at("02:15:20", FALLEN.format(bus="3b"))
    )

    [node] = replay(str(tmp_path), "--repair-minutes", "15")

    assert node["outcomes"] == ["Resolved", "Escalated"]
    # 02:14:45 joins the remediation under way (a quarter of an hour on: no flood); 02:15:20 is inside
    # its flood-control minute, but the remediation ended at 02:15:00.
    assert node["runs"][0]["faults"] == 2


def test_a_new_boot_in_the_log_forgets_flood_control(tmp_path: Path) -> None:
    kmsg = "3,{seq},{usec},-;" + FALLEN.format(bus="3b") + "\n"
    (tmp_path / "gpu-node-001.log").write_text(
        kmsg.format(seq=1, usec=5_000_000_000) + kmsg.format(seq=1, usec=10_000_000)  # 10 s into the next boot
    )

    [node] = replay(str(tmp_path), "--repair-minutes", "0.1")

    assert node["remediations"] == 2


def test_approvals_nobody_gives_run_out_as_the_policy_says_and_a_dry_run_does_nothing(tmp_path: Path) -> None:
    (tmp_path / "gpu-node-001.log").write_text(at("02:00:00", FALLEN.format(bus="3b")))
    auto = tmp_path / "auto.yaml"
    auto.write_text("repair:\n  approval_for: [RESTART_BM]\n  auto_approve_after: PT1H\n")
    timeout = tmp_path / "timeout.yaml"
    timeout.write_text("repair:\n  require_approval: true\n  approval_timeout: PT1H\n")
    dry = tmp_path / "dry.yaml"
    dry.write_text("dry_run: true\n")

    [approved] = replay(str(tmp_path), "--policy", str(auto))
    [escalated] = replay(str(tmp_path), "--policy", str(timeout))
    [rehearsed] = replay(str(tmp_path), "--policy", str(dry))

    assert (approved["outcomes"], approved["runs"][0]["ended_at"]) == (["Resolved"], "2026-11-23T03:15:00+00:00")
    assert (escalated["outcomes"], escalated["runs"][0]["reason"]) == (["Escalated"], "no approval within 1:00:00")
    assert (rehearsed["outcomes"], rehearsed["runs"][0]["granted_at"]) == (["DryRun"], None)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("gpu-node-001.txt", "", "name a node's log <node>.log (kernel log) or <node>.jsonl (health events)"),
        ("gpu-node-001.jsonl", '{"id": "e1"}\n', "gpu-node-001.jsonl line 1: nodeName is required"),
        (
            "gpu-node-001.jsonl",
            intake_event("e1", node="gpu-node-002") + "\n",
            "is not this agent's node 'gpu-node-001'",
        ),
        ("gpu-node-001.jsonl", '{"nodeName": 7}\n', "gpu-node-001.jsonl line 1: not an intake event"),
    ],
)
def test_a_log_that_cannot_be_replayed_is_refused_naming_it(
    tmp_path: Path, name: str, text: str, expected: str
) -> None:
    path = tmp_path / name
    path.write_text(text)

    result = CliRunner().invoke(main, ["replay", str(path)])

    assert result.exit_code != 0
    assert expected in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    empty = CliRunner().invoke(main, ["replay", str(tmp_path / "nothing")])
    assert empty.exit_code == 2


def test_a_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "gpu-node-001.log")

    result = CliRunner().invoke(main, ["replay", str(tmp_path / "gpu-node-001.log")])

    assert result.exit_code == 1
    assert "gpu-node-001.log: not a regular file" in result.output


@pytest.mark.parametrize("minutes", ["nan", "inf"])
def test_repair_minutes_must_be_a_number_of_minutes(logs: Path, minutes: str) -> None:
    result = CliRunner().invoke(main, ["replay", str(logs), "--repair-minutes", minutes])

    assert result.exit_code == 2 and "--repair-minutes" in result.output
