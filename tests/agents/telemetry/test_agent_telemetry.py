"""The assembled agent serves telemetry.sock: a streamer's readings become its metrics, and a DCGM
XID becomes a fault in the same pipeline as a kernel-log one (it waits on disk for Temporal here),
decided by the same policy file."""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from gpuheal.agents.agent import Agent, AgentSettings
from gpuheal.domain.policy_document import AgentPolicy
from gpuheal.domain.xid_policy import XidPolicy
from gpuheal.policyfile import read_policy
from gpuheal.protos import telemetry_pb2_grpc
from gpuheal_sim.demo.devserver import free_port
from tests.agents.telemetry.readings import reading

NODE = "gpu-node-031"
XID = "DCGM_FI_DEV_XID_ERRORS"
HEADER = "timestamp,metric_name,gpu_id,device,uuid,modelName,Hostname,container,pod,namespace,value,labels_raw\n"


def agent_settings(home: Path, **settings: Any) -> AgentSettings:
    """An agent of 3 fake GPUs and no kernel log; Temporal is down, so each fault waits on disk."""
    return AgentSettings(
        node=NODE,
        socket_dir=home / "run",
        spool_dir=home / "spool",
        kernel_log=None,
        fake_gpus=3,
        temporal_address=f"127.0.0.1:{free_port()}",
        **settings,
    )


async def test_a_streamed_xid_is_a_fault_and_every_reading_a_metric(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(short_dir / "missing-kubeconfig"))
    settings = agent_settings(short_dir, health_address=("127.0.0.1", 0))
    async with Agent(settings) as agent:
        assert agent.provider is not None and agent.health is not None and agent.publisher is not None
        gpu = agent.provider.gpus[0].uuid
        csv = short_dir / "dcgm.csv"
        csv.write_text(
            HEADER
            + "".join(
                f"2025-07-18T20:42:3{n}Z,{metric},0,nvidia0,{gpu},NVIDIA H100 80GB HBM3,{NODE},,,,{value},\n"
                for n, (metric, value) in enumerate(
                    [("DCGM_FI_DEV_GPU_UTIL", "75"), ("DCGM_FI_DEV_XID_ERRORS", "0"), ("DCGM_FI_DEV_XID_ERRORS", "79")]
                )
            )
        )
        streamer = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gpuheal.tools.telemetry",
            f"-csv-path={csv}",
            f"-socket={agent.telemetry_socket}",
            "-interval=0",
            "-loop=false",
            stderr=asyncio.subprocess.PIPE,
        )
        _, logs = await asyncio.wait_for(streamer.communicate(), 60)
        assert streamer.returncode == 0, logs.decode()

        assert agent.telemetry_socket.stat().st_mode & 0o777 == 0o660
        assert agent.publisher.pending().get("temporal") == 1, "the XID's fault waits on disk for Temporal"
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{agent.health.port}/metrics") as response,
        ):
            metrics = await response.text()
        labels = f'Hostname="{NODE}",UUID="{gpu}",device="nvidia0",gpu="0",modelName="NVIDIA H100 80GB HBM3"'
        assert f"DCGM_FI_DEV_GPU_UTIL{{{labels}}} 75.0" in metrics
        assert f"DCGM_FI_DEV_XID_ERRORS{{{labels}}} 79.0" in metrics
        assert 'gpuheal_agent_telemetry_readings_total{outcome="accepted"} 3.0' in metrics
        assert "gpuheal_agent_spool_entries" in metrics, "one registry holds the agent's metrics and DCGM's"


async def test_the_policy_file_decides_dcgm_s_xids_and_an_edit_is_followed_without_a_kernel_log(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The catalog leaves XID 31 to the application; the operator's policy file makes it a reboot,
    and an edit takes that back while the agent runs, with no kernel-log monitor to share it with."""
    monkeypatch.setenv("KUBECONFIG", str(short_dir / "missing-kubeconfig"))
    policy = short_dir / "policy.yaml"
    policy.write_text("xids:\n  overrides:\n    31: RESTART_VM\n")
    settings = agent_settings(
        short_dir, policy=read_policy(policy, AgentPolicy), policy_reload=timedelta(milliseconds=50)
    )
    async with Agent(settings) as agent:
        assert agent.provider is not None and agent.publisher is not None and agent.telemetry is not None
        gpus = [gpu.uuid for gpu in agent.provider.gpus]
        async with grpc.aio.insecure_channel(f"unix:{agent.telemetry_socket}") as channel:
            intake = telemetry_pb2_grpc.TelemetryIntakeStub(channel)
            await intake.Publish(reading(XID, "31", gpu=gpus[0], host=NODE))
            assert agent.publisher.pending().get("temporal") == 1, "XID 31 is a reboot by the policy file"

            policy.write_text("xids:\n  overrides: {}\n")
            async with asyncio.timeout(10):  # a hang guard: the agent reads the file every 50 ms
                while agent.telemetry.service.policy != XidPolicy():
                    await asyncio.sleep(0.02)
            await intake.Publish(reading(XID, "31", gpu=gpus[1], host=NODE, gpu_id=1))
            assert agent.publisher.pending().get("temporal") == 1, "XID 31 is the application's again"
            await intake.Publish(reading(XID, "79", gpu=gpus[2], host=NODE, gpu_id=2))
            assert agent.publisher.pending().get("temporal") == 2


async def test_a_restarted_agent_does_not_report_a_replayed_xid_again(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(short_dir / "missing-kubeconfig"))
    settings = agent_settings(short_dir)
    for _ in range(2):  # the same agent, restarted on the same directories; the streamer loops on
        async with Agent(settings) as agent:
            assert agent.provider is not None and agent.publisher is not None
            gpu = agent.provider.gpus[0].uuid
            async with grpc.aio.insecure_channel(f"unix:{agent.telemetry_socket}") as channel:
                intake = telemetry_pb2_grpc.TelemetryIntakeStub(channel)
                await intake.Publish(reading(XID, "79", gpu=gpu, host=NODE, at=1))
            assert agent.publisher.pending().get("temporal") == 1, "one fault waits for Temporal, not two"
