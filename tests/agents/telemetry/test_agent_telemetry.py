"""The assembled agent serves telemetry.sock: a streamer's readings become its metrics, and a DCGM
XID becomes a fault in the same pipeline as a kernel-log one (it waits on disk for Temporal here)."""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from gpuheal.agents.agent import Agent, AgentSettings
from gpuheal_sim.demo.devserver import free_port

NODE = "gpu-node-031"
HEADER = "timestamp,metric_name,gpu_id,device,uuid,modelName,Hostname,container,pod,namespace,value,labels_raw\n"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory short enough for unix socket paths (107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="gh-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_a_streamed_xid_is_a_fault_and_every_reading_a_metric(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(short_dir / "missing-kubeconfig"))
    settings = AgentSettings(
        node=NODE,
        socket_dir=short_dir / "run",
        spool_dir=short_dir / "spool",
        kernel_log=None,
        fake_gpus=2,
        temporal_address=f"127.0.0.1:{free_port()}",  # Temporal is down: the fault waits on disk
        health_address=("127.0.0.1", 0),
    )
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
