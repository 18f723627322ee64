"""The assembled agent: on a node whose NVML is broken it still serves and takes health events; its
health endpoint reports its spools, and readiness fails while faults wait in memory."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import grpc
import pytest

from gpuheal.agents.agent import Agent, AgentSettings
from gpuheal.agents.nvml.fake import FakeNvml
from gpuheal.agents.publisher import PublisherSettings, RetrySettings, SpoolLimits
from gpuheal.demo.devserver import free_port
from gpuheal.protos import gpu_pb2, gpu_pb2_grpc, health_event_pb2, health_event_pb2_grpc
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
            publisher=PublisherSettings(spool=spool, retry=RetrySettings(delivery_timeout=2, max_backoff=0.2)),
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


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory short enough for unix socket paths (107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="gh-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


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
