"""The assembled agent: on a node whose NVML is broken it still serves and takes health events; its
health endpoint reports its spools, and readiness fails while faults wait in memory; restarted, it
reports what the kernel logged while it was down, once."""

from __future__ import annotations

import asyncio
import socket
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from gpuheal.agents.agent import Agent, AgentSettings
from gpuheal.agents.kmsg.follow import KernelLogFormat
from gpuheal.agents.publisher import PublisherSettings, RetrySettings, SpoolLimits
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.health import HealthEvent
from gpuheal.domain.policy_document import AgentPolicy
from gpuheal.domain.xid_policy import XidPolicy
from gpuheal.policyfile import read_policy
from gpuheal.protos import gpu_pb2, gpu_pb2_grpc, health_event_pb2, health_event_pb2_grpc
from gpuheal_sim.demo.devserver import free_port
from gpuheal_sim.fake_nvml import FakeNvml
from tests.test_cli import run_gpuheal


async def test_without_nvml_the_agent_serves_and_takes_health_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))  # no cluster either
    settings = AgentSettings(
        node="broken-node",
        socket_dir=tmp_path / "run",
        spool_dir=tmp_path / "spool",
        kernel_log=None,
        temporal_address=f"127.0.0.1:{free_port()}",  # Temporal unreachable too
    )
    async with Agent(settings, nvml=FakeNvml("broken-node", 2, available=False)) as agent:
        assert agent.provider is None
        async with grpc.aio.insecure_channel(f"unix://{agent.device_api_socket}") as channel:
            listed = await gpu_pb2_grpc.GpuServiceStub(channel).ListGpus(gpu_pb2.ListGpusRequest())
        assert list(listed.gpu_list.items) == [], "served (not UNAVAILABLE), with no GPUs to show"

        event = health_event_pb2.HealthEvent(
            nodeName="broken-node", isFatal=True, recommendedAction=health_event_pb2.RESTART_BM, errorCode=["79"]
        )
        async with grpc.aio.insecure_channel(f"unix://{agent.health_events_socket}") as channel:
            await health_event_pb2_grpc.PlatformConnectorStub(channel).HealthEventOccurredV1(
                health_event_pb2.HealthEvents(events=[event])
            )
        assert agent.publisher is not None
        assert agent.publisher.pending().get("temporal") == 1, "the fault waits on disk for Temporal"
        assert agent.health_events_socket.stat().st_mode & 0o777 == 0o660


async def test_the_agent_takes_health_events_only_for_its_own_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    settings = AgentSettings(
        node="gpu-node-007",
        socket_dir=tmp_path / "run",
        spool_dir=tmp_path / "spool",
        kernel_log=None,
        fake_gpus=1,
        temporal_address=f"127.0.0.1:{free_port()}",
        kubeconfig=None,
    )
    async with Agent(settings) as agent:
        other = health_event_pb2.HealthEvent(
            nodeName="gpu-node-008", isFatal=True, recommendedAction=health_event_pb2.RESTART_BM
        )
        async with grpc.aio.insecure_channel(f"unix://{agent.health_events_socket}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await health_event_pb2_grpc.PlatformConnectorStub(channel).HealthEventOccurredV1(
                    health_event_pb2.HealthEvents(events=[other])
                )
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "events[0].nodeName 'gpu-node-008' is not this agent's node 'gpu-node-007'" in (
            refused.value.details() or ""
        )
        assert agent.publisher is not None
        assert sum(agent.publisher.pending().values()) == 0, "nothing of a refused request goes anywhere"


def fatal(node: str, index: int) -> health_event_pb2.HealthEvents:
    event = health_event_pb2.HealthEvent(
        nodeName=node,
        isFatal=True,
        recommendedAction=health_event_pb2.RESTART_BM,
        errorCode=["79"],
        message=f"#{index}",
    )
    return health_event_pb2.HealthEvents(events=[event])


async def get(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status, await response.text()


async def test_readiness_fails_while_faults_wait_in_memory_and_past_the_hold_the_intake_says_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))

    def settings(node: str, spool: SpoolLimits) -> AgentSettings:
        return AgentSettings(
            node=node,
            socket_dir=tmp_path / node / "run",
            spool_dir=tmp_path / node / "spool",
            kernel_log=None,
            fake_gpus=1,
            temporal_address=f"127.0.0.1:{free_port()}",  # Temporal is down
            publisher=PublisherSettings(
                spool=spool,
                retry=RetrySettings(delivery_timeout=timedelta(seconds=2), max_backoff=timedelta(seconds=0.2)),
            ),
            health_address=("127.0.0.1", 0),
        )

    # A disk budget no event fits, and room in memory for one fault: the first is held, the second refused.
    cramped = settings("cramped", SpoolLimits(max_bytes=1, max_held_bytes=1))
    async with Agent(cramped) as agent, Agent(settings("roomy", SpoolLimits())) as neighbour:
        assert agent.health is not None and neighbour.health is not None
        assert await get(agent.health.port, "/readyz") == (200, "ok\n")
        async with grpc.aio.insecure_channel(f"unix://{agent.health_events_socket}") as channel:
            intake = health_event_pb2_grpc.PlatformConnectorStub(channel)
            await intake.HealthEventOccurredV1(fatal("cramped", 1))

            status, reason = await get(agent.health.port, "/readyz")
            assert (status, reason) == (503, "temporal: 1 actionable events held in memory (the disk refused them)\n")
            status, metrics = await get(agent.health.port, "/metrics")
            assert status == 200
            assert 'gpuheal_agent_spool_held_events{lane="temporal"} 1.0' in metrics
            assert 'gpuheal_agent_spool_entries{lane="temporal"} 0.0' in metrics

            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await intake.HealthEventOccurredV1(fatal("cramped", 2))
            assert refused.value.code() is grpc.StatusCode.UNAVAILABLE, "the sender keeps the fault and retries"
        _, metrics = await get(agent.health.port, "/metrics")
        assert 'gpuheal_agent_spool_refused_total{actionable="true",lane="temporal"} 1.0' in metrics
        assert agent.publisher is not None and agent.publisher.pending()["temporal"] == 1

        # Each agent has its own registry: the neighbour in the same process reports only its own spools.
        assert await get(neighbour.health.port, "/readyz") == (200, "ok\n")
        _, theirs = await get(neighbour.health.port, "/metrics")
        assert 'gpuheal_agent_spool_held_events{lane="temporal"} 0.0' in theirs


@pytest.mark.parametrize("address", ["nowhere", "127.0.0.1:99999", "host:port"])
def test_a_bad_health_address_is_named_with_exit_2(address: str) -> None:
    result = run_gpuheal("agent", "--node", "n1", "--health-address", address)
    assert result.returncode == 2
    assert f"Error: Invalid value for --health-address: '{address}' is not HOST:PORT".encode() in result.stderr
    assert b"Traceback" not in result.stderr


def test_a_health_port_in_use_is_one_line_and_exit_2(short_dir: Path) -> None:
    home = short_dir
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_gpuheal(
            "agent",
            "--node",
            "n1",
            "--socket-dir",
            str(home / "run"),
            "--spool-dir",
            str(home / "spool"),
            "--kernel-log",
            "",
            "--fake-gpus",
            "1",
            "--address",
            f"127.0.0.1:{free_port()}",
            "--health-address",
            f"127.0.0.1:{port}",
        )
    assert result.returncode == 2, result.stderr
    [line] = [line for line in result.stderr.decode().splitlines() if line.startswith("Error:")]
    assert (
        line == f"Error: --health-address: cannot serve the agent's health on 127.0.0.1:{port}: Address already in use"
    )
    assert "Traceback" not in result.stderr.decode()


async def _spooled_faults(spool: Path, count: int) -> list[HealthEvent]:
    """Wait (bounded: a hang guard) until the Temporal lane's spool holds `count` faults; all of them."""
    async with asyncio.timeout(20):
        while True:
            found = [HealthEvent.model_validate_json(path.read_bytes()) for path in sorted(spool.glob("*.json"))]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.02)


def kernel_log_agent(tmp_path: Path, node: str, **settings: Any) -> AgentSettings:
    """An agent with four fake GPUs whose kernel log is a regular file of /dev/kmsg records (standing
    in for the ring buffer), and whose Temporal is away: every fault it reports waits in its spool."""
    ring = tmp_path / "kmsg"
    ring.write_text("6,1,100,-;Linux version 6.8.0\n")
    boot_id = tmp_path / "boot_id"
    boot_id.write_text("0c9e2b1d-7f3a-4e5b-9c8d-1a2b3c4d5e6f\n")
    return AgentSettings(
        node=node,
        socket_dir=tmp_path / "run",
        spool_dir=tmp_path / "spool",
        kernel_log=ring,
        kernel_log_format=KernelLogFormat.KMSG,
        boot_id_path=boot_id,
        fake_gpus=4,
        temporal_address=f"127.0.0.1:{free_port()}",
        kubeconfig=None,
        **settings,
    )


def log_xid_to(settings: AgentSettings, seq: int, gpu: int, xid: int) -> None:
    """The kernel logs an XID on the GPU at PCI 0000:0<gpu>:00."""
    assert settings.kernel_log is not None
    with settings.kernel_log.open("a") as log:
        log.write(f"3,{seq},{seq * 1000},-;NVRM: Xid (PCI:0000:0{gpu}:00): {xid}, pid=1, name=x, fault\n")


async def test_an_xid_logged_while_the_agent_was_down_is_reported_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A regular file of /dev/kmsg records stands in for the ring buffer; Temporal is away, so every
    fault the agent reports waits in its spool, where the test counts them."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    settings = kernel_log_agent(tmp_path, "gpu-node-009")
    temporal_spool = settings.spool_dir / "temporal"

    def log_xid(seq: int, gpu: int, xid: int) -> None:
        log_xid_to(settings, seq, gpu, xid)

    async with Agent(settings):
        log_xid(2, 1, 79)
        await _spooled_faults(temporal_spool, 1)
    log_xid(3, 2, 48)  # while the agent is down (a rollout, an OOM kill)
    async with Agent(settings):
        await _spooled_faults(temporal_spool, 2)
        log_xid(4, 3, 79)  # a barrier: a record read twice would have been reported before it
        faults = await _spooled_faults(temporal_spool, 3)
    assert [(fault.xid, fault.entities[-1].value) for fault in faults] == [
        (79, "0000:01:00"),
        (48, "0000:02:00"),
        (79, "0000:03:00"),
    ]
    assert len({fault.id for fault in faults}) == 3


async def test_the_agent_decides_xids_by_its_policy_file_and_follows_an_edit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The catalog says XID 31 is for the application to handle (nothing to repair); the operator's
    policy file makes it a reboot, and an edit takes that back while the agent runs."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    policy = tmp_path / "policy.yaml"
    policy.write_text("xids:\n  overrides:\n    31: RESTART_VM\n")
    settings = kernel_log_agent(
        tmp_path, "gpu-node-010", policy=read_policy(policy, AgentPolicy), policy_reload=timedelta(milliseconds=50)
    )
    temporal_spool = settings.spool_dir / "temporal"

    def log_xid(seq: int, gpu: int, xid: int) -> None:
        log_xid_to(settings, seq, gpu, xid)

    async with Agent(settings) as agent:
        log_xid(2, 1, 31)
        [first] = await _spooled_faults(temporal_spool, 1)
        assert (first.xid, first.action) == (31, RecommendedAction.RESTART_VM)

        policy.write_text("xids:\n  overrides: {}\n")
        assert agent.monitor is not None
        async with asyncio.timeout(10):  # a hang guard: the agent reads the file every 50 ms
            while agent.monitor.policy != XidPolicy():
                await asyncio.sleep(0.02)
        log_xid(3, 2, 31)
        log_xid(4, 3, 79)  # a barrier: the XID 31 before it was read first
        faults = await _spooled_faults(temporal_spool, 2)

    assert [(fault.xid, fault.entities[-1].value) for fault in faults] == [(31, "0000:01:00"), (79, "0000:03:00")]
