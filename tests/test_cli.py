"""The `gpuheal` console script as a person runs it."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import re
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.worker import Worker

from gpuheal.cli import describe, main
from gpuheal.control import governor, remediations, updates
from gpuheal.control.governor import governor_id_for
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.faults import Fault
from gpuheal.domain.fleet import FleetPolicy
from gpuheal.domain.phases import Phase
from gpuheal.domain.policy import RemediationPolicy, RepairPolicy
from gpuheal.domain.policy_document import policy_version
from gpuheal.domain.remediation import ApprovalSignal, PhaseEntry, RemediationInput, RemediationStatus
from gpuheal.domain.remediation_contract import REMEDIATION
from gpuheal.worker import WorkerSettings
from gpuheal.workflows import search_attributes as attrs
from gpuheal.workflows.governor import GovernorWorkflow
from gpuheal.workflows.remediation import RemediationWorkflow
from gpuheal_sim.demo.devserver import DevServer
from tests.workflows.fake_activities import FakeFleet, FakeNode
from tests.workflows.test_remediation_logic import Handle, wait_for_phase


def run_gpuheal(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "gpuheal", *args], input=stdin, capture_output=True, timeout=60, check=False
    )


def test_kmsg_parse_prints_one_json_object_per_event_and_skips_the_rest() -> None:
    log = (
        b"3,812,6085126134786,-;NVRM: NVRM: Xid (PCI:0001:00:00.0): 79, GPU has fallen off the bus\n"
        b"[ 4821.337154] NVRM: loading NVIDIA UNIX x86_64 Kernel Module\n"
        b"Nov 23 02:07:01 host kernel: [ 4821.337154] NVRM: Xid (PCI:0000:3b:00): 48, DBE (0x1) detected\n"
        b"\xff\xfe not text at all\n"
    )
    result = run_gpuheal("kmsg", "parse", stdin=log)

    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(e["kind"], e["xid"], e["pci"], e["action"], e["fatal"]) for e in events] == [
        ("xid", 79, "0001:00:00.0", "RESTART_BM", True),
        ("xid", 48, "0000:3b:00", "COMPONENT_RESET", True),
    ]


def test_kmsg_parse_applies_a_policy_override(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"overrides": {"13": "RESTART_BM"}}))
    line = b"[ 1.0] NVRM: Xid (PCI:0000:3b:00): 13, Graphics Exception\n"

    result = run_gpuheal("kmsg", "parse", "--policy", str(policy), stdin=line)

    assert result.returncode == 0, result.stderr
    [event] = [json.loads(x) for x in result.stdout.splitlines()]
    assert (event["action"], event["fatal"]) == ("RESTART_BM", True)


def test_approve_without_a_temporal_server_fails_with_a_clear_reason() -> None:
    result = run_gpuheal("approve", "gpu-node-001", "--by", "alice", "--reason", "ok", "--address", "127.0.0.1:1")

    assert result.returncode == 1
    assert b"cannot reach Temporal" in result.stderr


def test_worker_refuses_an_unknown_provider_before_connecting_anywhere() -> None:
    result = run_gpuheal("worker", "--providers", "aws,ibm", "--address", "127.0.0.1:1")

    assert result.returncode == 2
    assert b"unknown provider(s) ibm; choose from redfish, aws, azure, gcp, nebius, manual" in result.stderr


def test_worker_refuses_a_simulator_url_where_no_provider_reboots_simulated_nodes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The product without gpuheal-sim: the URL would otherwise be ignored and simulated nodes never rebooted."""
    from gpuheal.activities.providers import configured

    without_test_bed = {name: r for name, r in configured._REGISTERED.items() if r.switched_on_by is None}
    monkeypatch.setattr(configured, "_REGISTERED", without_test_bed)

    result = CliRunner().invoke(main, ["worker", "--simulator-url", "https://127.0.0.1:1", "--address", "127.0.0.1:1"])

    assert result.exit_code == 2
    assert "Invalid value for '--simulator-url': no installed reboot provider reboots simulated nodes" in result.output


def test_the_worker_flags_set_the_fleet_limits_and_the_governor_can_be_switched_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    served: list[WorkerSettings] = []

    async def serve(settings: WorkerSettings) -> None:
        served.append(settings)

    monkeypatch.setattr("gpuheal.worker.serve", serve)
    limits = ["--max-remediations", "7", "--budget-group-label", "rack", "--breaker-share", "0.5"]
    for switch in ([], ["--no-fleet-governor"]):
        result = CliRunner().invoke(main, ["worker", "--metrics-address", "", *limits, *switch])
        assert result.exit_code == 0, result.output

    governed, ungoverned = (settings.fleet for settings in served)
    assert (governed.governed, ungoverned.governed) == (True, False)
    assert (governed.budget.max_concurrent, governed.budget.group_label, governed.breaker.share) == (7, "rack", 0.5)


def test_a_worker_with_a_policy_file_that_cannot_be_used_stops_at_start_naming_the_line(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("drain:\n  timeout: PT20M\nfleet:\n  budget:\n    max_concurent: 3\n")

    result = run_gpuheal("worker", "--policy", str(policy), "--address", "127.0.0.1:1")

    assert result.returncode == 2
    assert f"{policy} line 5: fleet.budget.max_concurent: Extra inputs are not permitted".encode() in result.stderr
    assert b"Traceback" not in result.stderr


def test_the_policy_file_sets_the_fleet_limits_and_a_flag_that_would_also_set_them_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    served: list[WorkerSettings] = []

    async def serve(settings: WorkerSettings) -> None:
        served.append(settings)

    monkeypatch.setattr("gpuheal.worker.serve", serve)
    with_fleet = tmp_path / "fleet.yaml"
    with_fleet.write_text("fleet:\n  budget:\n    max_concurrent: 4\n")
    without_fleet = tmp_path / "drain.yaml"
    without_fleet.write_text("drain:\n  timeout: PT20M\n")

    taken = CliRunner().invoke(main, ["worker", "--metrics-address", "", "--policy", str(with_fleet)])
    flags_too = CliRunner().invoke(main, ["worker", "--policy", str(with_fleet), "--max-remediations", "7"])
    flags_by_env = CliRunner().invoke(
        main, ["worker", "--policy", str(with_fleet)], env={"GPUHEAL_BREAKER_SHARE": "0.5"}
    )
    flags_and_a_file_without_fleet = CliRunner().invoke(
        main, ["worker", "--metrics-address", "", "--policy", str(without_fleet), "--max-remediations", "7"]
    )

    assert taken.exit_code == 0, taken.output
    assert flags_and_a_file_without_fleet.exit_code == 0, flags_and_a_file_without_fleet.output
    for refused, flag in ((flags_too, "--max-remediations"), (flags_by_env, "--breaker-share")):
        assert refused.exit_code == 2
        assert f"{flag} and the fleet section of {with_fleet} both set the fleet's limits" in refused.output
    in_file, in_flags = served
    assert in_file.policy is not None and in_file.policy.document.fleet is not None
    assert in_file.policy.document.fleet.budget.max_concurrent == 4
    assert in_flags.policy is not None and in_flags.policy.document.fleet is None
    assert in_flags.fleet.budget.max_concurrent == 7


def test_agent_takes_one_of_the_policy_file_and_the_xid_policy_and_refuses_a_bad_policy_file(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("xids:\n  overrides:\n    31: RESTART_VM\n")
    xid_policy = tmp_path / "xids.json"
    xid_policy.write_text('{"overrides": {"31": "RESTART_VM"}}')
    bad = tmp_path / "bad.yaml"
    bad.write_text("xids:\n  overides:\n    31: RESTART_VM\n")

    both = run_gpuheal("agent", "--node", "n1", "--policy", str(policy), "--xid-policy", str(xid_policy))
    refused = run_gpuheal("agent", "--node", "n1", "--policy", str(bad))

    assert both.returncode == 2
    assert b"choose one of --policy (its xids section) and --xid-policy" in both.stderr
    assert refused.returncode == 2
    assert f"{bad} line 2: xids.overides: Extra inputs are not permitted".encode() in refused.stderr


def test_agent_refuses_nvidia_smi_resets_of_fake_gpus() -> None:
    result = run_gpuheal("agent", "--node", "n1", "--fake-gpus", "2", "--gpu-reset", "nvidia-smi")

    assert result.returncode == 2
    assert b"nvidia-smi cannot reset fake GPUs" in result.stderr


def test_agent_reads_its_kernel_log_from_one_end_at_most() -> None:
    result = run_gpuheal("agent", "--node", "n1", "--fake-gpus", "1", "--from-start", "--from-end")

    assert result.returncode == 2
    assert b"choose one of --from-start and --from-end" in result.stderr
    assert b"Traceback" not in result.stderr


def gpuheal_script() -> str:
    """The `gpuheal` console script of this environment, as a person runs it."""
    return str(Path(sys.executable).parent / "gpuheal")


def run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([gpuheal_script(), *args], capture_output=True, text=True, timeout=120, check=False, env=env)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The one `Error: …` line of a refused command (exit status 2), after click's usage hint if any."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error: ")]
    usage = [line for line in lines if line.startswith(("Usage: ", "Try '"))]
    assert len(errors) == 1 and len(errors) + len(usage) == len(lines), result.stderr
    return errors[0]


# What `gpuheal list`, `approve` and the like start without: the worker's and the agent's code
# (the SDKs, the Kubernetes client, gRPC servers) and the test bed. Loading them tripled the start.
_OPERATOR_COMMAND_SKIPS = (
    "gpuheal.worker",
    "gpuheal.agents.agent",
    "gpuheal.agents.publisher",
    "gpuheal.agents.nvml",
    "gpuheal.agents.reset",
    "gpuheal.activities",
    "gpuheal.commands",
    "gpuheal_sim",
)


@pytest.mark.parametrize("command", ["list", "status", "approve", "reject", "pause", "budget"])
def test_an_operator_command_loads_neither_the_worker_nor_the_agent(command: str) -> None:
    probe = (
        "import sys\n"
        "from gpuheal.cli import main\n"
        f"main([{command!r}, '--help'], standalone_mode=False)\n"
        f"print(sorted(m for m in sys.modules if m.startswith({_OPERATOR_COMMAND_SKIPS!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)

    assert result.stdout.splitlines()[-1] == "[]", result.stdout


def test_the_worker_and_agent_commands_load_when_asked_for() -> None:
    assert {"worker", "agent", "demo"} <= set(main.list_commands(click.Context(main)))
    assert run_script("worker", "--help").stdout.startswith("Usage: gpuheal worker")
    assert "--spool-max-mib" in run_script("agent", "--help").stdout


KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: nowhere
  cluster: {{server: "{server}"}}
contexts:
- name: worker
  context: {{cluster: nowhere, user: worker}}
users:
- name: worker
  user: {{token: not-a-real-token}}
current-context: worker
"""


def kubeconfig_to(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "worker.kubeconfig"
    path.write_text(KUBECONFIG.format(server=server))
    return path


def closed_port() -> int:
    """A port nothing listens on (bound for a moment, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (None, "cannot read"),
        ("{bad", "is not an XID policy: Invalid JSON"),
        ('{"overrides": {"79": "REBOOT_PLEASE"}}', "overrides.79: Value error, unknown recommended action"),
        ('{"overides": {}}', "overides: Extra inputs are not permitted"),
    ],
)
def test_agent_refuses_an_unusable_xid_policy_in_one_line(tmp_path: Path, policy: str | None, expected: str) -> None:
    path = tmp_path / "policy.json"
    if policy is not None:
        path.write_text(policy)
    kernel_log = tmp_path / "kmsg.log"
    kernel_log.write_text("")
    # Everything else is usable, so a policy that slipped through would start a whole agent.
    result = run_script(
        *("agent", "--node", "n1", "--fake-gpus", "1", "--xid-policy", str(path)),
        *("--socket-dir", str(tmp_path / "run"), "--spool-dir", str(tmp_path / "spool")),
        *("--kernel-log", str(kernel_log), "--kernel-log-format", "file", "--address", "127.0.0.1:1"),
    )

    error = one_line_error(result)
    assert "'--xid-policy'" in error and expected in error
    assert not (tmp_path / "run").exists(), "nothing started"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read"),
        ("clusters: [unclosed", "is not YAML: expected ',' or ']'"),
        ("", "is not a mapping"),
        ("- a list\n", "is not a mapping"),
        ("apiVersion: v1\nclusters: []\n", "sets no current-context"),
        ("current-context: gone\ncontexts: [{name: other, context: {cluster: c}}]\n", "'gone' is not among"),
        ("current-context: x\ncontexts: [{name: x, context: {cluster: c}}]\n", "names cluster 'c', which it does not"),
        (
            "current-context: x\ncontexts: [{name: x, context: {cluster: c}}]\nclusters: [{name: c, cluster: {}}]\n",
            "cluster 'c' has no server",
        ),
    ],
)
def test_the_worker_refuses_an_unusable_kubeconfig_in_one_line(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    path = tmp_path / "kubeconfig"
    if content is not None:
        path.write_text(content)

    error = one_line_error(run_script("worker", "--kubeconfig", str(path), "--address", "127.0.0.1:1"))

    assert "'--kubeconfig'" in error and expected in error


def test_the_agent_checks_its_kubeconfig_as_the_worker_does(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text("apiVersion: v1\nclusters: []\n")
    node = ["--node", "n1", "--fake-gpus", "1", "--kernel-log", "", "--socket-dir", str(tmp_path / "run")]

    error = one_line_error(run_script("agent", *node, "--kubeconfig", str(path), "--address", "127.0.0.1:1"))

    assert "'--kubeconfig'" in error and "sets no current-context" in error
    assert not (tmp_path / "run").exists(), "nothing started"


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("not an address", "is not HOST:PORT"),
        ("127.0.0.1", "is not HOST:PORT"),
        ("127.0.0.1:99999", "is not HOST:PORT"),
        ("temporal..example:7233", "is not a host name or IP address"),
        ("[::zz]:7233", "is not an IPv6 address"),
    ],
)
def test_the_worker_refuses_an_unparsable_temporal_address_in_one_line(address: str, expected: str) -> None:
    error = one_line_error(run_script("worker", "--address", address))

    assert "'--address'" in error and expected in error


@pytest.mark.parametrize(
    "command",
    [
        ["list"],
        ["status", "n1"],
        ["approve", "n1", "--by", "alice", "--reason", "ok"],
        ["reject", "n1", "--reason", "rma"],
        ["agent", "--node", "n1"],
    ],
)
def test_every_command_that_talks_to_temporal_checks_its_address(command: list[str]) -> None:
    error = one_line_error(run_script(*command, "--address", "temporal.example"))

    assert "'--address'" in error and "'temporal.example' is not HOST:PORT" in error


@pytest.mark.parametrize("address", ["localhost:9464", "127.0.0.1:http", "bogus"])
def test_the_worker_refuses_an_unparsable_metrics_address_before_connecting(address: str) -> None:
    error = one_line_error(run_script("worker", "--metrics-address", address, "--address", "127.0.0.1:1"))

    assert "'--metrics-address'" in error and "Invalid Prometheus address" in error


def test_the_worker_says_when_its_metrics_port_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        error = one_line_error(run_script("worker", "--metrics-address", address, "--address", "127.0.0.1:1"))

    assert "'--metrics-address'" in error and f"{address}: " in error and "Address already in use" in error


@pytest.mark.parametrize(("option", "value"), [("--nodes", "0"), ("--gpus-per-node", "0"), ("--nodes", "-3")])
def test_the_demo_refuses_an_empty_fleet_in_one_line(tmp_path: Path, option: str, value: str) -> None:
    error = one_line_error(run_script("demo", option, value, "--state-dir", str(tmp_path / "state")))

    assert f"'{option}'" in error and "x>=1" in error
    assert not (tmp_path / "state").exists(), "nothing started"


async def test_an_unknown_temporal_namespace_is_refused_in_one_line(dev_server: DevServer, tmp_path: Path) -> None:
    kubeconfig = kubeconfig_to(tmp_path, f"https://127.0.0.1:{closed_port()}")
    for command in (
        ["list"],
        ["status", "n1"],
        ["approve", "n1", "--by", "alice", "--reason", "ok"],
        ["worker", "--metrics-address", "", "--kubeconfig", str(kubeconfig)],
    ):
        error = one_line_error(run_script(*command, "--address", dev_server.address, "--namespace", "no-such-ns"))

        assert "'--namespace'" in error and "no-such-ns" in error, command


async def test_list_refuses_a_query_temporal_cannot_parse_in_one_line(dev_server: DevServer) -> None:
    error = one_line_error(run_script("list", "--address", dev_server.address, "--query", "GpuhealPhase ==== 'x'"))

    assert "'--query'" in error and "Temporal refused the query" in error and "GpuhealPhase ==== 'x'" in error


async def test_a_worker_whose_kubernetes_api_does_not_answer_says_so_at_start(
    dev_server: DevServer, tmp_path: Path
) -> None:
    server = f"https://127.0.0.1:{closed_port()}"
    kubeconfig = kubeconfig_to(tmp_path, server)
    result = run_script(
        *("worker", "--address", dev_server.address, "--metrics-address", "", "--kubeconfig", str(kubeconfig)),
        *("--kubernetes-wait-seconds", "2"),
    )

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"Error: the Kubernetes API at {server} did not answer within 2s: " in result.stderr
    # It warned while it waited, and never began polling for remediations.
    assert f"the Kubernetes API at {server} does not answer" in result.stderr
    assert "worker polling" not in result.stderr


async def test_list_always_exits_cleanly(dev_server: DevServer) -> None:
    """`gpuheal list` aborted at exit in about 1 run in 14 ("Fatal Python error: PyGILState_Release"):
    the SDK's runtime threads outlived the interpreter. 20 runs pass on the old code only 1 time in 4."""
    for run in range(20):
        result = run_script("list", "--address", dev_server.address)

        assert result.returncode == 0 and result.stderr == "", f"run {run}: {result.returncode} {result.stderr}"
        assert result.stdout.startswith("NODE ")


NO_LOGIN_ENV = {"LOGNAME": "", "USER": "", "LNAME": "", "USERNAME": ""}


async def test_approve_records_the_login_name_when_by_is_not_given(dev_server: DevServer) -> None:
    """$USER may be empty (a container, cron, sudo -i): the password database still names who approved."""
    node = FakeNode(name=f"by-default-{uuid.uuid4().hex[:8]}")
    handle = await start_awaiting_approval(dev_server, node)
    async with Worker(
        dev_server.client, task_queue=handle.queue, workflows=[RemediationWorkflow], activities=node.activities()
    ):
        await wait_for_phase(handle.handle, Phase.AWAITING_APPROVAL)
        env = {**os.environ, **NO_LOGIN_ENV}
        # In a thread: the worker answering the Update runs on this event loop.
        result = await asyncio.to_thread(
            run_script, "approve", node.name, "--reason", "reseated", "--address", dev_server.address, env=env
        )
        status = await handle.handle.result()

    login = pwd.getpwuid(os.getuid()).pw_name
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"approved the remediation of {node.name} as {login} at ")
    assert status.decision is not None
    assert (status.decision.approver, status.decision.reason) == (login, "reseated")


async def test_an_approval_the_remediation_cannot_take_is_refused_in_one_line(dev_server: DevServer) -> None:
    node = FakeNode(name=f"twice-{uuid.uuid4().hex[:8]}", reset_outcome="late")
    handle = await start_awaiting_approval(dev_server, node, RecommendedAction.COMPONENT_RESET)
    async with Worker(
        dev_server.client, task_queue=handle.queue, workflows=[RemediationWorkflow], activities=node.activities()
    ):
        await wait_for_phase(handle.handle, Phase.AWAITING_APPROVAL)
        first, second = [
            await asyncio.to_thread(
                run_script, verb, node.name, "--by", who, "--reason", "why", "--address", dev_server.address
            )
            for verb, who in (("approve", "alice"), ("reject", "bob"))
        ]
        node.reset_outcome = "confirm"
        await handle.handle.result()

    assert first.returncode == 0, first.stderr
    assert second.returncode == 1 and "Traceback" not in second.stderr
    assert second.stderr.startswith(f"Error: the remediation of {node.name} refused it: already approved by alice at ")


async def test_the_temporal_cli_approves_with_the_update_the_readme_shows(dev_server: DevServer) -> None:
    """`temporal workflow update execute … --name approve`: answered with the decision, or refused at once."""
    node = FakeNode(name=f"cli-{uuid.uuid4().hex[:8]}")
    handle = await start_awaiting_approval(dev_server, node)
    temporal = str(Path(sys.executable).parent / "temporal")

    def update(body: str) -> subprocess.CompletedProcess[str]:
        command = [temporal, "workflow", "update", "execute", "--address", dev_server.address]
        command += ["--workflow-id", f"remediate-{node.name}", "--name", "approve", "--input", body]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    async with Worker(
        dev_server.client, task_queue=handle.queue, workflows=[RemediationWorkflow], activities=node.activities()
    ):
        await wait_for_phase(handle.handle, Phase.AWAITING_APPROVAL)
        without_reason = await asyncio.to_thread(update, '{"approver": "alice", "reason": ""}')
        approved = await asyncio.to_thread(update, '{"approver": "alice", "reason": "reseated"}')
        status = await handle.handle.result()

    assert without_reason.returncode != 0 and "say why (reason)" in without_reason.stdout + without_reason.stderr
    assert approved.returncode == 0, approved.stderr
    assert "approved:true approver:alice" in approved.stdout and "reason:reseated" in approved.stdout, approved.stdout
    assert status.decision is not None and (status.decision.approver, status.decision.reason) == ("alice", "reseated")


async def test_a_decision_no_worker_answers_ends_with_one_line_instead_of_waiting(dev_server: DevServer) -> None:
    node = FakeNode(name=f"unanswered-{uuid.uuid4().hex[:8]}")
    await start_awaiting_approval(dev_server, node)  # no worker polls its queue

    with pytest.raises(
        updates.ActionUnanswered, match=r"no gpuheal worker answered for the remediation of .* within 1s"
    ):
        await remediations.send_decision(
            dev_server.client,
            node.name,
            ApprovalSignal(approver="a", reason="b"),
            approve=True,
            wait=timedelta(seconds=1),
        )
    await dev_server.client.get_workflow_handle(f"remediate-{node.name}").terminate()


def test_a_decision_without_a_reason_is_refused_before_connecting() -> None:
    error = one_line_error(run_script("approve", "n1", "--by", "alice", "--reason", " ", "--address", "127.0.0.1:1"))

    assert "'--reason'" in error and "must say why" in error


@dataclass
class Started:
    handle: Handle
    queue: str


async def start_awaiting_approval(
    dev_server: DevServer, node: FakeNode, action: RecommendedAction = RecommendedAction.RESTART_BM
) -> Started:
    """A remediation of the fake node whose policy asks a person before the repair."""
    queue = f"approval-{node.name}"
    fault = Fault(node=node.name, action=action, xid=79, gpu_uuids=("GPU-aaaa",), event_id=str(uuid.uuid4()))
    policy = RemediationPolicy(repair=RepairPolicy(provider="simulator", require_approval=True))
    handle = await remediations.report_fault(dev_server.client, fault, policy, task_queue=queue)
    return Started(handle, queue)


@pytest.mark.parametrize("verb", ["approve", "reject"])
def test_approve_without_by_or_any_login_name_says_to_name_one(verb: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """No login name at all: the environment's are empty and the uid has no passwd entry, as in a
    container run under an arbitrary uid. That uid cannot be had here (only root runs this Python),
    so the password database is the one thing replaced; the command is the real one, in process."""

    def no_entry(uid: int) -> pwd.struct_passwd:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    for name, value in NO_LOGIN_ENV.items():
        monkeypatch.setenv(name, value)

    result = CliRunner().invoke(main, [verb, "n1", "--reason", "ok", "--address", "127.0.0.1:1"])

    assert result.exit_code == 2, result.output
    [error] = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert "'--by'" in error and "no login name to record" in error and "--by NAME" in error


async def test_operators_pause_resume_and_read_the_governor_in_one_line_each(dev_server: DevServer) -> None:
    """`gpuheal pause|resume|budget|breaker` reach the governor of the workers' task queue; an action it
    cannot take is refused with its reason, and who acted is recorded."""
    queue = f"cli-governor-{uuid.uuid4().hex[:8]}"
    address = ("--address", dev_server.address, "--task-queue", queue)
    async with Worker(
        dev_server.client, task_queue=queue, workflows=[GovernorWorkflow], activities=FakeFleet({}).activities()
    ):
        await governor.configure(dev_server.client, FleetPolicy(), governor_id_for(queue), queue)

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return run_script(*args, *address)

        # In a thread: the worker answering the Updates runs on this event loop.
        paused = await asyncio.to_thread(cli, "pause", "--by", "alice", "--reason", "driver rollout")
        again = await asyncio.to_thread(cli, "pause", "--by", "alice", "--reason", "twice")
        budget = await asyncio.to_thread(cli, "budget")
        breaker = await asyncio.to_thread(cli, "breaker", "status")
        reset = await asyncio.to_thread(cli, "breaker", "reset", "--by", "bob", "--reason", "x")
        resumed = await asyncio.to_thread(cli, "resume", "--by", "bob", "--reason", "rolled back")
        no_reason = await asyncio.to_thread(cli, "resume", "--by", "bob", "--reason", " ")
        log = await asyncio.to_thread(cli, "breaker", "status")
    missing = await asyncio.to_thread(run_script, "budget", "--address", dev_server.address, "--task-queue", "none")

    assert paused.returncode == 0 and paused.stdout.startswith("paused by alice at "), paused.stderr
    assert again.returncode == 1 and "refused it: already paused by alice" in again.stderr
    assert budget.stdout.splitlines()[:3] == [
        "0 of 1 permits held (0 GPU nodes); 0 waiting",
        "breaker closed: 0 of 5 quarantines within 1:00:00",
        budget.stdout.splitlines()[2],
    ] and budget.stdout.splitlines()[2].startswith("paused by alice")
    assert breaker.stdout.startswith("breaker closed: 0 of 5 quarantines")
    assert reset.returncode == 1 and "the breaker is not tripped" in reset.stderr
    assert resumed.returncode == 0 and resumed.stdout.startswith("not paused"), resumed.stderr
    assert "must say why" in one_line_error(no_reason)
    assert "resume by bob: rolled back" in log.stdout and "pause by alice: driver rollout" in log.stdout
    assert missing.returncode == 1 and "no fleet governor gpuheal-governor-none runs" in missing.stderr


async def test_the_temporal_cli_pauses_the_governor_with_the_update_the_readme_shows(dev_server: DevServer) -> None:
    """`temporal workflow update execute --workflow-id gpuheal-governor… --name pause`, as the README shows it."""
    queue = f"cli-pause-{uuid.uuid4().hex[:8]}"
    temporal = str(Path(sys.executable).parent / "temporal")

    def update(body: str) -> subprocess.CompletedProcess[str]:
        command = [temporal, "workflow", "update", "execute", "--address", dev_server.address]
        command += ["--workflow-id", governor_id_for(queue), "--name", "pause", "--input", body]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    async with Worker(
        dev_server.client, task_queue=queue, workflows=[GovernorWorkflow], activities=FakeFleet({}).activities()
    ):
        await governor.configure(dev_server.client, FleetPolicy(), governor_id_for(queue), queue)
        blank = await asyncio.to_thread(update, '{"by": "alice", "reason": " "}')
        paused = await asyncio.to_thread(update, '{"by": "alice", "reason": "rollout"}')
        status = await governor.status(dev_server.client, governor_id_for(queue))
        await dev_server.client.get_workflow_handle(governor_id_for(queue)).terminate("test over")

    assert blank.returncode != 0 and "say why (reason)" in blank.stdout + blank.stderr
    assert paused.returncode == 0, paused.stderr
    assert status.state.paused is not None and (status.state.paused.by, status.state.paused.reason) == (
        "alice",
        "rollout",
    )


async def start_escalated(dev_server: DevServer, node: FakeNode) -> Started:
    """A remediation of the fake node that escalates: its GPUs still report the fault after the reboot."""
    node.gpus_healthy_after_reboot = False
    queue = f"escalated-{node.name}"
    fault = Fault(node=node.name, action=RecommendedAction.RESTART_BM, xid=79, event_id=str(uuid.uuid4()))
    policy = RemediationPolicy(repair=RepairPolicy(provider="simulator"))
    return Started(await remediations.report_fault(dev_server.client, fault, policy, task_queue=queue), queue)


async def test_operators_resume_and_release_an_escalated_remediation_in_one_line_each(dev_server: DevServer) -> None:
    node = FakeNode(name=f"held-{uuid.uuid4().hex[:8]}")
    started = await start_escalated(dev_server, node)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_script(*args, "--address", dev_server.address)

    async with Worker(
        dev_server.client, task_queue=started.queue, workflows=[RemediationWorkflow], activities=node.activities()
    ):
        await wait_for_phase(started.handle, Phase.ESCALATED)
        # In a thread: the worker answering the Updates runs on this event loop.
        resumed = await asyncio.to_thread(cli, "resume", node.name, "--by", "alice", "--reason", "reseated GPU 3")
        again = await wait_for_phase(started.handle, Phase.ESCALATED)  # its GPUs still report the fault
        released = await asyncio.to_thread(
            cli, "release", node.name, "--by", "bob", "--reason", "RMA 4411", "--keep-cordoned"
        )
        status = await started.handle.result()
    after = await asyncio.to_thread(cli, "retry", node.name, "--by", "bob", "--reason", "once more")

    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith(f"resumed the remediation of {node.name} as alice at ")
    assert again.reason.startswith("resumed by alice, but the node failed the check within 0:05:00")
    assert released.returncode == 0 and released.stdout.startswith(f"released the remediation of {node.name} as bob")
    assert status.phase is Phase.RELEASED and status.reason == "released by bob, left cordoned: RMA 4411"
    assert [(a.action, a.by) for a in status.actions] == [("resume", "alice"), ("release", "bob")]
    assert node.cordoned
    assert after.returncode == 1 and "Traceback" not in after.stderr
    assert after.stderr == f"Error: no running remediation for node {node.name}\n", "a run that ended takes no action"


async def test_the_temporal_cli_releases_with_the_update_the_readme_shows(dev_server: DevServer) -> None:
    """`temporal workflow update execute … --name release`: answered with the action, or refused at once."""
    node = FakeNode(name=f"cli-release-{uuid.uuid4().hex[:8]}")
    started = await start_escalated(dev_server, node)
    temporal = str(Path(sys.executable).parent / "temporal")

    def update(name: str, body: str) -> subprocess.CompletedProcess[str]:
        command = [temporal, "workflow", "update", "execute", "--address", dev_server.address]
        command += ["--workflow-id", f"remediate-{node.name}", "--name", name, "--input", body]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    async with Worker(
        dev_server.client, task_queue=started.queue, workflows=[RemediationWorkflow], activities=node.activities()
    ):
        await wait_for_phase(started.handle, Phase.ESCALATED)
        nobody = await asyncio.to_thread(update, "release", '{"by": " ", "reason": "RMA"}')
        released = await asyncio.to_thread(update, "release", '{"by": "carol", "reason": "false alarm"}')
        status = await started.handle.result()

    assert nobody.returncode != 0 and "say who acts (by)" in nobody.stdout + nobody.stderr
    assert released.returncode == 0, released.stderr
    assert "action:release" in released.stdout and "by:carol" in released.stdout, released.stdout
    assert status.phase is Phase.RELEASED and not node.cordoned


async def test_list_shows_the_policy_each_remediation_decides_by(dev_server: DevServer) -> None:
    node = FakeNode(name=f"listed-{uuid.uuid4().hex[:8]}")
    started = await start_awaiting_approval(dev_server, node)
    given = RemediationPolicy(repair=RepairPolicy(provider="simulator", require_approval=True))
    query = f"GpuhealNode = '{node.name}'"

    async with Worker(
        dev_server.client, task_queue=started.queue, workflows=[RemediationWorkflow], activities=node.activities()
    ):
        rows: list[str] = []
        for _ in range(100):  # visibility follows the run's search attributes a moment later
            listed = await asyncio.to_thread(run_script, "list", "--address", dev_server.address, "--query", query)
            rows = [line for line in listed.stdout.splitlines()[1:] if "AwaitingApproval" in line]
            if rows:
                break
            await asyncio.sleep(0.1)
    await started.handle.terminate("test over")

    assert listed.stdout.splitlines()[0].split()[-1] == "POLICY"
    [row] = rows
    assert row.split()[0] == node.name and row.split()[-1] == policy_version(given)


@dataclass(frozen=True)
class Listed:
    """A remediation as visibility shows it, started with its search attributes and no worker."""

    node: str
    phase: Phase
    since: datetime | None
    running: bool = True


async def list_these(dev_server: DevServer, runs: list[Listed]) -> str:
    """Start each run (ended at once where not `running`) and return a query matching just them, once
    visibility shows them all as they are."""
    for run in runs:
        pairs: list[SearchAttributePair[Any]] = [
            SearchAttributePair(attrs.NODE, run.node),
            SearchAttributePair(attrs.PHASE, run.phase.value),
            SearchAttributePair(attrs.ACTION, "RESTART_BM"),
            SearchAttributePair(attrs.XID, 79),
            SearchAttributePair(attrs.GPUS, ["GPU-1", "GPU-2"]),
        ]
        if run.since is not None:
            pairs.append(SearchAttributePair(attrs.PHASE_SINCE, run.since))
        handle = await dev_server.client.start_workflow(
            REMEDIATION.name,
            RemediationInput(node=run.node),
            id=f"remediate-{run.node}",
            task_queue=f"nobody-{run.node}",  # no worker: the run stays as started
            search_attributes=TypedSearchAttributes(pairs),
        )
        if not run.running:
            await handle.terminate("test: ended")
    names = ", ".join(f"'{run.node}'" for run in runs)
    query = f"GpuhealNode IN ({names})"
    for _ in range(100):  # visibility follows a moment later
        found = await remediations.list_remediations(dev_server.client, query)
        if sorted((row.node, row.running) for row in found) == sorted((run.node, run.running) for run in runs):
            return query
        await asyncio.sleep(0.1)
    raise AssertionError(f"visibility never showed {runs}: {found}")


async def end_all(dev_server: DevServer, runs: list[Listed]) -> None:
    for run in runs:
        if run.running:
            await dev_server.client.get_workflow_handle(f"remediate-{run.node}").terminate("test over")


def table_rows(output: str) -> dict[str, dict[str, str]]:
    """A table the commands print, by its first column, each row's cells by header (a header's cells
    start where it starts)."""
    header, *lines = output.splitlines()
    names = header.split()
    starts = [header.index(f"{name}") for name in names]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    rows = [{name: line[start:end].strip() for name, (start, end) in zip(names, bounds, strict=True)} for line in lines]
    return {row[names[0]]: row for row in rows}


JSON_KEYS = {"node", "phase", "since", "action", "xid", "gpus", "running", "started", "policy"}


async def test_status_without_a_node_tables_every_running_remediation(dev_server: DevServer) -> None:
    tag = uuid.uuid4().hex[:8]
    since = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    waiting, older, ended = (
        Listed(f"table-{tag}-waiting", Phase.AWAITING_APPROVAL, since),
        Listed(f"table-{tag}-older", Phase.ESCALATED, None),  # begun before runs recorded since when
        Listed(f"table-{tag}-ended", Phase.RESOLVED, since, running=False),
    )
    await list_these(dev_server, [waiting, older, ended])

    table = await asyncio.to_thread(run_script, "status", "--address", dev_server.address)
    as_json = await asyncio.to_thread(run_script, "status", "--json", "--address", dev_server.address)
    await end_all(dev_server, [waiting, older, ended])

    assert table.returncode == 0, table.stderr
    assert table.stdout.split("\n", 1)[0].split() == ["NODE", "PHASE", "SINCE", "ACTION", "XID", "GPUS"]
    rows = table_rows(table.stdout)
    assert rows[waiting.node] == {
        "NODE": waiting.node,
        "PHASE": "AwaitingApproval",
        "SINCE": "2026-01-02T03:04:05Z",
        "ACTION": "RESTART_BM",
        "XID": "79",
        "GPUS": "GPU-1,GPU-2",
    }
    assert rows[older.node]["PHASE"] == "Escalated" and rows[older.node]["SINCE"] == ""
    assert ended.node not in rows, "only running remediations"
    listed = {row["node"]: row for row in json.loads(as_json.stdout)}
    assert all(set(row) == JSON_KEYS for row in listed.values())
    assert listed[waiting.node]["since"] == since.isoformat() and listed[waiting.node]["gpus"] == ["GPU-1", "GPU-2"]
    assert listed[older.node]["since"] is None and listed[older.node]["running"] is True
    assert ended.node not in listed


async def test_list_takes_every_filter_together(dev_server: DevServer) -> None:
    tag = uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    stuck, fresh, ended, older = (
        Listed(f"list-{tag}-stuck", Phase.AWAITING_APPROVAL, now - timedelta(hours=2)),
        Listed(f"list-{tag}-fresh", Phase.AWAITING_APPROVAL, now),
        Listed(f"list-{tag}-ended", Phase.AWAITING_APPROVAL, now - timedelta(hours=3), running=False),
        Listed(f"list-{tag}-older", Phase.ESCALATED, None),
    )
    query = await list_these(dev_server, [stuck, fresh, ended, older])

    def nodes(*args: str) -> set[str]:
        result = run_script("list", "--json", "--address", dev_server.address, "--query", query, *args)
        assert result.returncode == 0, result.stderr
        return {row["node"] for row in json.loads(result.stdout)}

    in_approval = await asyncio.to_thread(nodes, "--phase", "AwaitingApproval")
    running = await asyncio.to_thread(nodes, "--running")
    stuck_1h = await asyncio.to_thread(nodes, "--stuck", "1h")
    stuck_approval = await asyncio.to_thread(nodes, "--stuck", "90m", "--phase", "Escalated")
    limited = await asyncio.to_thread(nodes, "--limit", "1")
    table = await asyncio.to_thread(run_script, "list", "--address", dev_server.address, "--query", query)
    await end_all(dev_server, [stuck, fresh, ended, older])

    assert in_approval == {stuck.node, fresh.node, ended.node}
    assert running == {stuck.node, fresh.node, older.node}
    assert stuck_1h == {stuck.node}, "running, and in its phase for longer than an hour"
    assert stuck_approval == set(), "every filter holds"
    assert len(limited) == 1
    rows = table_rows(table.stdout)
    assert table.stdout.split("\n", 1)[0].split() == [
        *["NODE", "PHASE", "SINCE", "ACTION", "XID", "GPUS"],
        *["RUNNING", "STARTED", "POLICY"],
    ]
    assert rows[ended.node]["RUNNING"] == "no" and rows[stuck.node]["RUNNING"] == "yes"
    assert rows[stuck.node]["SINCE"] == f"{stuck.since:%Y-%m-%dT%H:%M:%SZ}" and rows[older.node]["SINCE"] == ""


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--phase", "Approving", "'Approving' is not one of 'Detected', 'OnHold', 'AwaitingBudget'"),
        ("--stuck", "an hour", "'an hour' is not a duration"),
        ("--stuck", "0", "'0' must be longer than zero"),
        # `now - 99999999h` overflowed: a traceback, exit 1.
        ("--stuck", "99999999h", "'99999999h' is longer than 3650 days"),
        ("--limit", "0", "0 is not in the range 1<=x<=10000"),
        ("--limit", "10001", "10001 is not in the range 1<=x<=10000"),
        # gpuheal ANDs `(query)` to its own clauses: this one listed workflows of any type.
        ("--query", "GpuhealNode = 'a') OR (WorkflowType = 'Nope'", "closes a parenthesis it did not open"),
        ("--query", "(GpuhealNode = 'a'", "opens a parenthesis it does not close"),
        ("--query", "GpuhealNode = 'a", "leaves a ' quote open"),
        ("--query", "GpuhealNode = 'a' Order  By StartTime", "has ORDER BY: gpuheal lists remediations newest first"),
    ],
)
def test_list_refuses_a_filter_it_cannot_use_before_connecting(option: str, value: str, expected: str) -> None:
    error = one_line_error(run_script("list", option, value, "--address", f"127.0.0.1:{closed_port()}"))

    assert f"'{option}'" in error and expected in error, error


def table_cells(line: str) -> list[str]:
    """A table line's cells (a cell may hold one blank: `4m 05s`; columns are two apart)."""
    return re.split(r" {2,}", line.strip())


def summary_fields(text: str) -> dict[str, str]:
    """`key: value` lines by key (the first line of each key)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, value = line.split(":", 1)
        found.setdefault(key, value.strip())
    return found


async def test_status_of_a_node_reads_as_lines_then_its_phase_history(dev_server: DevServer) -> None:
    node = FakeNode(name=f"summary-{uuid.uuid4().hex[:8]}")
    started = await start_awaiting_approval(dev_server, node)
    async with Worker(
        dev_server.client, task_queue=started.queue, workflows=[RemediationWorkflow], activities=node.activities()
    ):
        waiting = await wait_for_phase(started.handle, Phase.AWAITING_APPROVAL)
        shown = await asyncio.to_thread(run_script, "status", node.name, "--address", dev_server.address)
        as_json = await asyncio.to_thread(run_script, "status", node.name, "--json", "--address", dev_server.address)
        await remediations.send_decision(
            dev_server.client, node.name, ApprovalSignal(approver="alice", reason="reseated"), approve=True
        )
        ended = await started.handle.result()
        # An ended run's query is answered by a worker too (it replays the run).
        after = await asyncio.to_thread(run_script, "status", node.name, "--address", dev_server.address)
    unanswered = await asyncio.to_thread(run_script, "status", node.name, "--address", dev_server.address)

    assert shown.returncode == 0, shown.stderr
    fields, history = shown.stdout.split("\n\n")
    lines = summary_fields(fields)
    entered = waiting.history[-1].entered_at
    assert lines["node"] == node.name
    assert lines["phase"].startswith(f"AwaitingApproval since {entered:%Y-%m-%dT%H:%M:%SZ} (")
    assert lines["phase"].endswith(" ago)")
    assert lines["action"] == "RESTART_BM" and lines["xids"] == "79"
    assert lines["gpus"] == "GPU-aaaa" and lines["decision"] == "none"
    assert lines["drain"].endswith("0 remaining (0 blocked by a budget, 0 failed)")
    rows = [table_cells(line) for line in history.splitlines()]
    assert rows[0] == ["PHASE", "ENTERED", "FOR"]
    assert [row[0] for row in rows[1:]] == [entry.phase.value for entry in waiting.history]
    assert all(len(row) == 3 for row in rows[1:]), "each phase says how long it lasted, the current one so far"
    assert RemediationStatus.model_validate_json(as_json.stdout).phase is Phase.AWAITING_APPROVAL

    assert ended.phase is Phase.RESOLVED
    decided = ended.decision
    assert decided is not None
    ended_fields = summary_fields(after.stdout.split("\n\n")[0])
    assert ended_fields["decision"] == f"approved by alice at {decided.at:%Y-%m-%dT%H:%M:%SZ}: reseated"
    assert ended_fields["phase"] == f"Resolved since {ended.history[-1].entered_at:%Y-%m-%dT%H:%M:%SZ}"
    last = after.stdout.rstrip("\n").splitlines()[-1].split()
    assert last[0] == "Resolved" and len(last) == 2, "an ended run's last phase has no duration"
    assert unanswered.returncode == 1 and "Traceback" not in unanswered.stderr, unanswered.stderr
    [line] = unanswered.stderr.splitlines()
    assert line.startswith(f"Error: no gpuheal worker answered for the remediation of {node.name} (")
    assert line.endswith(
        f"""`gpuheal list --query 'GpuhealNode = "{node.name}"'` shows what Temporal's visibility knows"""
    )


ENTERED = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def awaiting_approval(reason: str = "") -> RemediationStatus:
    """A run that spent 3s in Detected, then entered AwaitingApproval at ENTERED."""
    return RemediationStatus(
        node="n1",
        phase=Phase.AWAITING_APPROVAL,
        action=RecommendedAction.RESTART_BM,
        xids=[79],
        gpu_uuids=[],
        faults=1,
        reason=reason,
        history=[
            PhaseEntry(phase=Phase.DETECTED, entered_at=ENTERED - timedelta(seconds=3)),
            PhaseEntry(phase=Phase.AWAITING_APPROVAL, entered_at=ENTERED),
        ],
    )


def test_status_of_a_node_never_says_its_phase_began_in_the_future() -> None:
    """A local clock behind the server's printed `(-1 day, 23:59:55 ago)`: the time is at least zero."""
    fields, history = describe(awaiting_approval(), ENTERED - timedelta(seconds=5)).split("\n\n")

    assert summary_fields(fields)["phase"] == "AwaitingApproval since 2026-12-07T12:00:00Z (0.0s ago)"
    assert [table_cells(line) for line in history.splitlines()[1:]] == [
        ["Detected", "2026-12-07T11:59:57Z", "3.0s"],
        ["AwaitingApproval", "2026-12-07T12:00:00Z", "0.0s"],
    ]


def test_status_of_a_node_goes_on_with_a_value_of_several_lines_under_its_first() -> None:
    fields = describe(awaiting_approval("XID 79\nthe GPU fell off the bus"), ENTERED).split("\n\n")[0]

    lines = fields.splitlines()
    at = next(number for number, line in enumerate(lines) if line.startswith("reason:"))
    margin = lines[at].index("XID 79")
    assert lines[at][margin:] == "XID 79"
    assert lines[at + 1] == " " * margin + "the GPU fell off the bus"
    assert lines[at + 2].startswith("action:")
