"""The assembled agent: on a node whose NVML is broken it still serves and takes health events; restarted,
it reports what the kernel logged while it was down, once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from gpuheal.agents.agent import Agent, AgentSettings
from gpuheal.agents.kmsg.follow import KernelLogFormat
from gpuheal.agents.nvml.fake import FakeNvml
from gpuheal.demo.devserver import free_port
from gpuheal.domain.health import HealthEvent
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


async def _spooled_faults(spool: Path, count: int) -> list[HealthEvent]:
    """Wait (bounded: a hang guard) until the Temporal lane's spool holds `count` faults; all of them."""
    async with asyncio.timeout(20):
        while True:
            found = [HealthEvent.model_validate_json(path.read_bytes()) for path in sorted(spool.glob("*.json"))]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.02)


async def test_an_xid_logged_while_the_agent_was_down_is_reported_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A regular file of /dev/kmsg records stands in for the ring buffer; Temporal is away, so every
    fault the agent reports waits in its spool, where the test counts them."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    ring = tmp_path / "kmsg"
    ring.write_text("6,1,100,-;Linux version 6.8.0\n")
    boot_id = tmp_path / "boot_id"
    boot_id.write_text("0c9e2b1d-7f3a-4e5b-9c8d-1a2b3c4d5e6f\n")
    settings = AgentSettings(
        node="gpu-node-009",
        socket_dir=tmp_path / "run",
        spool_dir=tmp_path / "spool",
        kernel_log=ring,
        kernel_log_format=KernelLogFormat.KMSG,
        boot_id_path=boot_id,
        fake_gpus=4,
        temporal_address=f"127.0.0.1:{free_port()}",
        kubeconfig=None,
    )
    temporal_spool = settings.spool_dir / "temporal"

    def log_xid(seq: int, gpu: int, xid: int) -> None:
        with ring.open("a") as log:
            log.write(f"3,{seq},{seq * 1000},-;NVRM: Xid (PCI:0000:0{gpu}:00): {xid}, pid=1, name=x, fault\n")

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
