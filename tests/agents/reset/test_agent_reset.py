"""The assembled agent answers reset orders: a simulated agent plays the driver, `off` refuses, nvidia-smi releases NVML."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from gpuheal.agents.agent import Agent, AgentSettings
from gpuheal.agents.reset import DISABLED
from gpuheal.domain.gpu_health import GpuHealthReport, HealthBar, gpu_health_problem, read_stamp
from gpuheal.domain.gpu_reset import GPU_RESET
from gpuheal_sim.agent_settings import simulated_agent_settings
from gpuheal_sim.demo.devserver import free_port
from gpuheal_sim.fake_nvml import FakeNvml
from tests.agents.reset.conftest import FAST, GPUS, Cluster, eventually


def simulated(cluster: Cluster, home: Path, **settings: Any) -> AgentSettings:
    """The agent of the cluster's node, as `simulated_agent_settings` builds it; Temporal is unreachable."""
    settings.setdefault("gpu_reset_settings", FAST)
    return simulated_agent_settings(
        cluster.node,
        home,
        GPUS,
        kubeconfig=cluster.sim.kubeconfig,
        temporal_address=f"127.0.0.1:{free_port()}",
        **settings,
    )


async def test_a_simulated_agent_resets_through_its_kernel_log(cluster: Cluster, tmp_path: Path) -> None:
    settings = simulated(cluster, tmp_path / "agent")
    assert settings.gpu_reset == "kernel-log"
    async with Agent(settings) as agent:
        assert agent.order_watcher is not None
        gpu = agent.nvml.device_info(5 % GPUS)
        order = await cluster.order([gpu.uuid])
        status, reason, report = await cluster.report(order.id)
    assert (status, reason) == ("True", GPU_RESET.reason_ok)
    assert (report.id, report.ok, report.confirmed_by) == (order.id, True, "kernel-log")
    assert settings.kernel_log is not None
    assert f"GPU {gpu.pci}: GPU reset complete" in settings.kernel_log.read_text()


async def test_an_agent_with_reset_off_refuses_orders(cluster: Cluster, tmp_path: Path) -> None:
    async with Agent(simulated(cluster, tmp_path / "agent", gpu_reset="off")) as agent:
        order = await cluster.order([agent.nvml.device_info(0).uuid])
        status, reason, report = await cluster.report(order.id)
    assert (status, reason, report.detail) == ("False", GPU_RESET.reason_failed, DISABLED)


async def test_nvidia_smi_runs_while_the_agent_has_let_go_of_nvml(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "nvidia-smi"
    # The fake refuses, as nvidia-smi does, while anything holds NVML; the agent's FakeNvml says whether it does.
    held = tmp_path / "nvml-held"
    script.write_text(f'#!/bin/sh\nif [ -e "{held}" ]; then echo "In use by another client"; exit 255; fi\nexit 0\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")

    class HeldNvml(FakeNvml):
        def init(self) -> None:
            super().init()
            held.touch()

        def shutdown(self) -> None:
            super().shutdown()
            held.unlink(missing_ok=True)

    settings = simulated(cluster, tmp_path / "agent", gpu_reset="nvidia-smi")
    nvml = HeldNvml(cluster.node, GPUS)
    async with Agent(settings, nvml=nvml) as agent:
        assert held.exists()
        order = await cluster.order([nvml.gpus[1].uuid])
        status, _, report = await cluster.report(order.id)
        assert held.exists(), "NVML is taken up again after the reset"
        assert agent.provider is not None
    assert (status, report.confirmed_by) == ("True", "nvml"), report.detail
    assert (nvml.init_calls, nvml.shutdown_calls) == (2, 2)


def test_the_kernel_log_resetter_is_the_simulated_default(tmp_path: Path) -> None:
    settings = simulated_agent_settings("n", tmp_path, 1)
    assert settings.gpu_reset == "kernel-log"
    assert AgentSettings(node="n").gpu_reset == "off"


async def test_after_answering_a_reset_the_agent_reports_gpu_health_anew(cluster: Cluster, tmp_path: Path) -> None:
    """The worker accepts GPU health after a reset only when it was reported after the answer; the
    agent writes GpuHealthy again once the report is out, naming its boot and the moment."""
    home = tmp_path / "agent"
    cluster.sim.attach_agent(cluster.node, home / "boot_id")  # the simulated GPU agent stays out
    async with Agent(simulated(cluster, home)) as agent:
        order = await cluster.order([agent.nvml.device_info(1).uuid])
        status, _, report = await cluster.report(order.id)
        assert status == "True"
        core: Any = cluster.core
        boot = (await core.read_node(cluster.node)).status.node_info.boot_id
        bar = HealthBar(after=report.at, after_what="the GPU reset's answer")

        async def reported_after() -> bool:
            node = await core.read_node(cluster.node)
            cond = next(c for c in node.status.conditions if c.type == "GpuHealthy")
            text, boot_id, at = read_stamp(cond.message)
            found = GpuHealthReport(status=cond.status, message=text, boot_id=boot_id, reported_at=at)
            return gpu_health_problem(found, boot, bar) is None

        await eventually(reported_after, "GpuHealthy=True reported after the reset's answer")
