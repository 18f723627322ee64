"""The assembled agent on a node whose NVML is broken: it still serves and still takes health events."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from gpuheal.agents.agent import Agent, AgentSettings
from gpuheal.agents.nvml.fake import FakeNvml
from gpuheal.demo.devserver import free_port
from gpuheal.protos import gpu_pb2, gpu_pb2_grpc, health_event_pb2, health_event_pb2_grpc


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
