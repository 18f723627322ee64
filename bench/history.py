"""History events per remediation: what one fault costs Temporal's history store, and that a long
reboot wait costs no more than a short one (the node wait is one activity, not a poll).

Two remediations run on the demo fleet through a `gpuheal worker` process: one whose node reboots at
once, and one whose node takes `SLOW_REBOOT_S` to post its new boot ID. Each run's history is read
back from the server and its events counted, with the events of each kind; the counts are exact,
not timings, so they hold on any machine. A wait that polled (one activity every 2 s) would add
about `SLOW_REBOOT_S / 2 × 3` events to the second run.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path

from temporalio.api.enums.v1 import EventType

from bench.measure import verdict
from bench.stack import remediation_stack
from gpuheal.control import remediations
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.faults import Fault
from gpuheal.domain.phases import Phase
from gpuheal_sim.demo.devserver import DevServer
from gpuheal_sim.demo.run import demo_policy
from gpuheal_sim.simulator.fleet import FleetConfig, default_workloads

TARGET_EVENTS = 60
SLOW_REBOOT_S = 30.0
NODE = "gpu-node-000"
# A remediation of the one-node fleet takes seconds; one that does not end fails the benchmark.
RUN_TIMEOUT_S = 300.0


async def _events_of_one_remediation(server: DevServer, state: Path, reboot_seconds: float) -> Counter[str]:
    workloads = [w for w in default_workloads(1) if w.kind != "Job"]
    config = FleetConfig(nodes=1, gpus_per_node=8, reboot_seconds=reboot_seconds, workloads=workloads)
    path = state / f"history-fleet-{reboot_seconds:g}.json"
    path.write_text(config.model_dump_json())
    async with remediation_stack(server, state / f"history-{reboot_seconds:g}", "--config", str(path)) as stack:
        fault = Fault(node=NODE, action=RecommendedAction.RESTART_BM, xid=79, event_id=str(uuid.uuid4()))
        handle = await remediations.report_fault(server.client, fault, demo_policy(False), task_queue=stack.task_queue)
        status = await asyncio.wait_for(handle.result(), RUN_TIMEOUT_S)
        if status.phase is not Phase.RESOLVED:
            raise RuntimeError(f"the remediation ended {status.phase.value}: {status.reason}")
        history = await handle.fetch_history()
    return Counter(EventType.Name(event.event_type).removeprefix("EVENT_TYPE_") for event in history.events)


async def run(server: DevServer, state: Path) -> None:
    quick = await _events_of_one_remediation(server, state, 0)
    slow = await _events_of_one_remediation(server, state, SLOW_REBOOT_S)
    for name, kinds in (("reboot at once", quick), (f"a {SLOW_REBOOT_S:g} s reboot wait", slow)):
        common = ", ".join(f"{kind.lower()} {count}" for kind, count in kinds.most_common(5))
        print(f"history events, {name}: {kinds.total()}   ({common})")
    verdict("history-happy-path", quick.total() <= TARGET_EVENTS, f"{quick.total()} events", f"≤ {TARGET_EVENTS}")
    verdict(
        "history-long-reboot-wait",
        slow.total() <= TARGET_EVENTS and slow.total() <= quick.total(),
        f"{slow.total()} events with a {SLOW_REBOOT_S:g} s wait, {slow.total() - quick.total():+d} on the happy path",
        f"≤ {TARGET_EVENTS} and no more than the happy path",
    )
