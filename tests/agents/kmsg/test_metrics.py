"""The kernel-log monitor's lines and GPU events, as the agent's metrics count them."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.registry import CollectorRegistry

from gpuheal.agents.kmsg.monitor import KernelLogMonitor
from gpuheal.agents.metrics import AgentMetrics
from tests.agents.kmsg.test_monitor import XID_48_A, Sink


async def test_every_line_read_is_counted_and_the_gpu_events_found_in_them(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry)
    sink = Sink()
    monitor = KernelLogMonitor("gpu-node-7", sink, boot_id_path=tmp_path / "boot_id", on_line=metrics.kernel_log_line)

    await monitor.feed("[ 4821.300000] usb 1-1: new high-speed USB device number 2")
    await monitor.feed(XID_48_A)
    await monitor.feed(XID_48_A)  # a repeat: found again, dropped by flood control

    assert registry.get_sample_value("gpuheal_agent_kernel_log_lines_total") == 3
    assert registry.get_sample_value("gpuheal_agent_kernel_log_faults_total") == 2
    assert len(sink.events) == 1
