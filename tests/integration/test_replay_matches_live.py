"""`gpuheal replay` of a node's kernel log makes the decisions the live run of the same log made.

Live: the node's agent follows its kernel log, the real worker remediates on the simulated fleet. The
log: an XID 79, its repeat half a second later (flood control folds it), and, once that remediation
has rebooted the node back into service, the same GPU's XID 79 again, stamped three hours on: a
repeat offender under the policy's GPU window. Then the same log, and the same policy, replayed.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner

from gpuheal.cli import main
from gpuheal.domain.fleet import FleetPolicy
from gpuheal.domain.phases import Phase
from gpuheal.domain.policy import LoopPolicy
from gpuheal.domain.policy_document import PolicyDocument
from gpuheal.domain.remediation import RemediationStatus
from gpuheal_sim.fake_nvml import FakeNvml
from tests.integration.conftest import StackFactory, eventually, fast_policy, settled
from tests.integration.test_agent_remediation import node_agent, report_through_the_agent
from tests.integration.test_remediation import NODE

HOUR_US = 3600 * 1_000_000
# A GPU of the node no other test faults (the agent tests fault GPU 3): the dev server, and its
# visibility, outlive each test, and under the policy's GPU window a fault of a GPU another test
# remediated would be a repeat offence of that test's run.
GPU = 6


async def test_replay_of_a_node_s_log_makes_the_decisions_of_its_live_run(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    stack = await make_stack(workloads=False)
    policy = fast_policy(loops=LoopPolicy(max_per_node=0, gpu_window=timedelta(days=7)))
    live: list[RemediationStatus] = []
    async with node_agent(stack, tmp_path, stack.server.address, remediation_policy=policy) as (agent, kernel_log):
        assert isinstance(agent.nvml, FakeNvml)
        pci = agent.nvml.device_info(GPU).pci_bus_id

        def record(sequence: int, microseconds: int) -> str:
            return f"3,{sequence},{microseconds},-;NVRM: Xid (PCI:{pci}): 79, pid=0, GPU has fallen off the bus\n"

        first = await report_through_the_agent(
            agent, kernel_log, stack, 79, records=record(1, 1_000_000) + record(2, 1_500_000)
        )
        live.append(await settled(first))
        again = await report_through_the_agent(agent, kernel_log, stack, 79, records=record(3, 3 * HOUR_US))

        async def escalated() -> bool:
            status: RemediationStatus = await again.query("status", result_type=RemediationStatus)
            return status.phase is Phase.ESCALATED

        await eventually(escalated, "the repeat offence held for a person", timeout=30)
        live.append(await again.query("status", result_type=RemediationStatus))
        logged = kernel_log.read_text()

    replay_dir = tmp_path / "replay"
    replay_dir.mkdir()
    (replay_dir / f"{NODE}.log").write_text(logged)
    policy_file = tmp_path / "policy.yaml"
    document = PolicyDocument(**policy.model_dump(), fleet=FleetPolicy())
    policy_file.write_text(json.dumps(document.model_dump(mode="json")))  # JSON is YAML
    arguments = ["replay", str(replay_dir), "--json", "--policy", str(policy_file)]
    arguments += ["--gpu-nodes", str(len(stack.cluster.node_names()))]
    # The command runs its own event loop, as it does from a shell: not on the test's.
    result = await asyncio.to_thread(CliRunner().invoke, main, arguments)
    assert result.exit_code == 0, result.output
    [replayed] = [json.loads(line) for line in result.output.splitlines()]

    assert [status.phase.value for status in live] == ["Resolved", "Escalated"]
    assert [status.faults for status in live] == [1, 1], "flood control folded the repeat"
    assert replayed["remediations"] == len(live)
    assert replayed["outcomes"] == [status.phase.value for status in live]
    assert [run["faults"] for run in replayed["runs"]] == [status.faults for status in live]
    assert [run["action"] for run in replayed["runs"]] == [status.action.name for status in live]
    for run, status in zip(replayed["runs"], live, strict=True):
        assert run["reason"].split(" GPU ")[0] == status.reason.split(" GPU ")[0]
