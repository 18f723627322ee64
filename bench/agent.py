"""Kernel-log line to signal: how long from an XID written to the kernel log to the workflow's signal.

One agent (fake NVML, a kernel log file standing in for /dev/kmsg) reports to the shared dev server.
Each sample appends one fatal XID for one GPU and reads, from the workflow's history, when Temporal
recorded the resulting `fault` signal. Samples use distinct GPU and XID pairs, so the monitor's
flood control does not fold them together.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from datetime import UTC, datetime
from itertools import product
from pathlib import Path

from temporalio.service import RPCError, RPCStatusCode

from bench.measure import describe
from gpuheal.agents.agent import Agent
from gpuheal.domain.marks import workflow_id_for
from gpuheal_sim.agent_settings import simulated_agent_settings
from gpuheal_sim.demo.devserver import DevServer

_FATAL_XIDS = (79, 48, 95, 119, 120)
_NODE = "bench-node"


async def _signals(server: DevServer) -> list[datetime]:
    """When each `fault` signal reached the workflow (none before the workflow exists)."""
    try:
        history = await server.client.get_workflow_handle(workflow_id_for(_NODE)).fetch_history()
    except RPCError as error:
        if error.status is RPCStatusCode.NOT_FOUND:
            return []
        raise
    return [
        e.event_time.ToDatetime(tzinfo=UTC)
        for e in history.events
        if e.HasField("workflow_execution_signaled_event_attributes")
    ]


async def run(server: DevServer, samples: int = 40) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as state:
        settings = simulated_agent_settings(
            _NODE,
            Path(state),
            8,
            temporal_address=server.address,
            task_queue="bench-agent-no-worker",
        )
        latencies: list[float] = []
        async with Agent(settings) as agent:
            pairs = list(product(_FATAL_XIDS, range(8)))[:samples]
            for xid, index in pairs:
                pci = agent.nvml.device_info(index).pci_bus_id
                seen = len(await _signals(server))
                written = datetime.now(UTC)
                assert settings.kernel_log is not None
                with settings.kernel_log.open("a") as log:
                    log.write(f"3,1,{time.monotonic_ns()},-;NVRM: Xid (PCI:{pci}): {xid}, bench fault\n")
                while len(signals := await _signals(server)) <= seen:  # noqa: ASYNC110 - the history is what we read
                    await asyncio.sleep(0.01)
                latencies.append((signals[-1] - written).total_seconds())
        await server.client.get_workflow_handle(workflow_id_for(_NODE)).terminate("benchmark done")
    print(f"kernel-log line → fault signal   {describe(latencies)}   (file polled every 0.25 s)")
    return {"kmsg_to_signal_p50": sorted(latencies)[len(latencies) // 2]}
