"""Fault to cordon on a 2,000-node fleet under the seed's medium event load.

The seed's medium load is `EVENT_RATE=0.067` events/s on every node (the chart's eventgen profile
`medium`: 100 events/s at 1,500 nodes), in `gpuheal-eventgen`'s mix: 64% healthy GPU, 24% system
information, 8% fatal XID 79, 4% NVSwitch warnings. At 2,000 nodes that is 134 events/s, and what
of it leaves the nodes is what every node's agent publishes:

- healthy GPU (~86/s): the node's `GpuHealthy` condition (a status patch) and a Normal Event;
- system information (~32/s): stored, nothing leaves the node;
- fatal XID 79 (~10.7/s): the `GpuHealthy` condition, and a signal-with-start of the node's
  remediation, each of which quarantines, drains, reboots, verifies and releases its node;
- NVSwitch warning (~5.4/s): a Warning Event.

A load process of its own plays the fleet's agents: the generator's events (`eventgen.event`),
converted as the intake converts them, each handed on its schedule (open loop, the n-th at n / rate
seconds) to its node's own `Publisher` with the agent's Kubernetes reporter and Temporal client
(the Device API is the node's own and reaches neither). The API server is the simulator's, with a
worker process remediating as in production. Nodes reserved for sampling get no load: first a few
faults on the idle fleet, each once the last one's remediation has ended (the baseline), then
under the load faults at up to SAMPLE_RATE (at most half the fleet's fatal rate), which take the
place of as many of the load's fatal events, so the fleet's fatal rate stays the medium one. Each is timed from just before its
report to the taint seen on the node watch. Printed beside them: the remediation rate the load
asked for and the cordon rate the fleet saw, and the CPU each process used while sampled (the
machine's cores are what the whole pipeline shares here).

The worker's governor is on, with limits that do not bind: at its defaults (10 remediations at once,
the breaker at a fifth of the fleet within an hour) it holds most of the medium load's 10.7
remediations/s in AwaitingBudget, the node untouched, by design.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import random
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHandle

from bench.latency import UNBOUND_GOVERNOR
from bench.measure import CordonWatch, cpu_seconds, describe, parent_of, percentile, verdict
from bench.stack import RemediationStack, remediation_stack
from gpuheal.agents.intake.convert import to_domain
from gpuheal.agents.intake.validate import IntakeLimits
from gpuheal.agents.publisher import KubernetesReporter, Publisher, TemporalRemediations
from gpuheal.control import remediations
from gpuheal.control.connection import connect_temporal
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.faults import Fault
from gpuheal.kubeclient import connect as connect_kubernetes
from gpuheal.tools import eventgen
from gpuheal_sim.demo.devserver import DevServer
from gpuheal_sim.demo.run import demo_policy
from gpuheal_sim.simulator.fleet import FleetConfig
from gpuheal_sim.simulator.gpus import gpu_uuid

NODES = 2000
MEDIUM_PER_NODE = 0.067  # events/s on each node: the seed's medium load
TARGET_P99 = 0.100
IDLE_SAMPLES = 12
LOADED_SAMPLES = 100
SAMPLE_RATE = 4.0  # sampled faults per second under load, at most
WARM_UP_S = 5.0  # load before the first sample: the first remediations are under way
UNCORDONED_AFTER_S = 30.0  # after the last sampled report, a node not yet cordoned counts as never
GPUS = 8
RemediationHandle = WorkflowHandle[Any, Any]
_READY = "load running"
MIX_SHARE = {kind: weight / sum(eventgen.MIX.values()) for kind, weight in eventgen.MIX.items()}


class _ErrorCount(logging.Handler):
    """Counts the error records logged, and keeps the first one's text."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0
        self.first = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        self.first = self.first or record.getMessage()


@dataclass(frozen=True, slots=True)
class FleetCordon:
    """Fault → cordon samples (seconds) on the idle fleet and under the load, and what the load did."""

    idle: list[float]
    loaded: list[float]
    load: dict[str, Any]


async def _load(options: argparse.Namespace) -> None:
    """The load process: medium-load events of nodes [0, options.load_nodes) until SIGTERM.

    Prints _READY once connected, and a JSON summary on its last line when stopped. It runs at a
    lower priority: the agents it plays run on the fleet's own machines, not beside Temporal, the
    API server and the worker, and its schedule lag (in the summary) says what that cost it.
    """
    os.nice(10)
    async with await connect_kubernetes(options.kubeconfig) as kubernetes:
        temporal = TemporalRemediations(
            await connect_temporal(options.address), policy=demo_policy(False), task_queue=options.task_queue
        )
        summary = await _drive(options, KubernetesReporter(kubernetes), temporal)
    print(json.dumps(summary), flush=True)


async def _drive(
    options: argparse.Namespace, reporter: KubernetesReporter, temporal: TemporalRemediations
) -> dict[str, Any]:
    """Hand the events on their schedule to their nodes' publishers until SIGTERM; what it did."""
    errors = _ErrorCount()
    logging.getLogger().addHandler(errors)  # the lanes log what they refuse and drop: counted, not printed
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    publishers: dict[str, Publisher] = {}
    names = FleetConfig(nodes=options.nodes).node_names()[: options.load_nodes]
    rng = random.Random(15)
    limits = IntakeLimits()
    # The load's own fatal events, less the sampled ones that stand in for some of them.
    fatal_share = MIX_SHARE[eventgen.Kind.FATAL_XID]
    keep_fatal = 1 - options.sample_rate / (options.rate * fatal_share)
    by_kind = dict.fromkeys((kind.name for kind in eventgen.Kind), 0)
    late: list[float] = []
    delivery: list[float] = []
    calls: set[asyncio.Task[None]] = set()

    async def publish(publisher: Publisher, wire: Any) -> None:
        began = time.perf_counter()
        try:
            await publisher.submit(to_domain(wire, limits))
        except Exception as error:  # a submit that raises (SpoolFull) logs nothing itself
            errors.count += 1
            errors.first = errors.first or repr(error)
        delivery.append(time.perf_counter() - began)

    print(_READY, flush=True)
    began = time.perf_counter()
    sent = 0
    while not stop.is_set():
        due = began + sent / options.rate
        if (wait := due - time.perf_counter()) > 0:
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
            continue
        late.append(-wait)
        sent += 1
        kind = eventgen.choose(rng)
        if kind is eventgen.Kind.FATAL_XID and rng.random() >= keep_fatal:
            continue  # a sampled fault takes this one's place
        by_kind[kind.name] += 1
        node = rng.choice(names)
        if node not in publishers:
            publishers[node] = Publisher(options.spool_dir / node, nodes=reporter, remediations=temporal)
        wire = eventgen.event(kind, node, rng, [gpu_uuid(node, i) for i in range(GPUS)])
        call = asyncio.create_task(publish(publishers[node], wire))
        calls.add(call)
        call.add_done_callback(calls.discard)
    elapsed = time.perf_counter() - began
    await asyncio.gather(*calls)
    # What the lanes still hold for a dependency that was away or slower than the hand-off: load
    # that never reached the fleet.
    undelivered = sum(sum(publisher.pending().values()) for publisher in publishers.values())
    for publisher in publishers.values():
        await publisher.close()
    return {
        "seconds": elapsed,
        "events": sum(by_kind.values()),
        "by_kind": by_kind,
        "errors": errors.count,
        "first_error": errors.first,
        "undelivered": undelivered,
        "late_p99_ms": percentile(late, 0.99) * 1000 if late else 0.0,
        "delivery_p50_ms": percentile(delivery, 0.5) * 1000 if delivery else 0.0,
        "delivery_p99_ms": percentile(delivery, 0.99) * 1000 if delivery else 0.0,
    }


@asynccontextmanager
async def _load_process(
    kubeconfig: Path,
    server: DevServer,
    task_queue: str,
    spool_dir: Path,
    nodes: int,
    load_nodes: int,
    sample_rate: float,
) -> AsyncIterator[dict[str, Any]]:
    """The load process, running while the block runs; the dict it yields holds its summary afterwards."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.fleet_cordon",
        "--kubeconfig",
        str(kubeconfig),
        "--address",
        server.address,
        "--task-queue",
        task_queue,
        "--spool-dir",
        str(spool_dir),
        "--nodes",
        str(nodes),
        "--load-nodes",
        str(load_nodes),
        "--rate",
        str(MEDIUM_PER_NODE * nodes),
        "--sample-rate",
        str(sample_rate),
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    summary: dict[str, Any] = {}
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        if _READY not in line.decode():
            raise RuntimeError(f"the load process did not start: {line.decode()!r}")
        yield summary
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), 60)
    lines = output.decode().splitlines()
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"the load process exited {process.returncode}")
    summary.update(json.loads(lines[-1]))


async def _cordoned(cordons: CordonWatch, nodes: list[str]) -> None:
    while any(node not in cordons.cordoned_at for node in nodes):
        cordons.changed.clear()
        await cordons.changed.wait()


async def _fault(server: DevServer, stack: RemediationStack, node: str) -> tuple[float, RemediationHandle]:
    """Report a fatal XID on `node`: when it was reported (perf_counter, just before), and its remediation."""
    fault = Fault(node=node, action=RecommendedAction.RESTART_BM, xid=79, event_id=str(uuid.uuid4()))
    started = time.perf_counter()
    handle = await remediations.report_fault(server.client, fault, demo_policy(False), task_queue=stack.task_queue)
    return started, handle


async def _idle(server: DevServer, stack: RemediationStack, nodes: list[str]) -> list[float]:
    """One fault at a time, each once the last one's remediation has ended: nothing else runs."""
    samples = []
    for node in nodes:
        started, handle = await _fault(server, stack, node)
        await asyncio.wait_for(_cordoned(stack.cordons, [node]), 30)
        await asyncio.wait_for(handle.result(), 60)
        samples.append(stack.cordons.cordoned_at[node] - started)
    return samples


async def _under_load(server: DevServer, stack: RemediationStack, nodes: list[str], rate: float) -> list[float]:
    """A fault every 1 / `rate` seconds, each on a node of its own, whether or not the last is cordoned."""
    began = time.perf_counter()

    async def at(index: int, node: str) -> float:
        await asyncio.sleep(max(0.0, began + index / rate - time.perf_counter()))
        started, _ = await _fault(server, stack, node)
        return started

    started = await asyncio.gather(*(at(i, node) for i, node in enumerate(nodes)))
    with suppress(TimeoutError):  # a fault still uncordoned then counts as never
        await asyncio.wait_for(_cordoned(stack.cordons, nodes), UNCORDONED_AFTER_S)
    return [stack.cordons.cordoned_at.get(node, math.inf) - s for node, s in zip(nodes, started, strict=True)]


def _cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) used so far by this process and by each of its children, by name."""
    used = {"bench (node watch, sampled reports)": sum(os.times()[:2])}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if parent_of(pid := int(entry.name)) != os.getpid():
                continue
            argv = [part.decode() for part in (entry / "cmdline").read_bytes().split(b"\0") if part]
            seconds = cpu_seconds(pid)
        except OSError:  # gone meanwhile
            continue
        name = " ".join(a for a in argv[2:4] if a[:1] != "-") if argv[1:2] == ["-m"] else Path(argv[0]).name
        used[name] = used.get(name, 0.0) + seconds
    return used


async def run(server: DevServer, state: Path, nodes: int = NODES) -> FleetCordon:
    load_nodes = nodes - IDLE_SAMPLES - LOADED_SAMPLES
    sample_rate = min(SAMPLE_RATE, MEDIUM_PER_NODE * nodes * MIX_SHARE[eventgen.Kind.FATAL_XID] / 2)
    reserved = FleetConfig(nodes=nodes).node_names()[load_nodes:]
    fleet_args = ("--nodes", str(nodes), "--reboot-seconds", "0", "--no-workloads")
    async with remediation_stack(server, state / "fleet-cordon", *fleet_args, worker_args=UNBOUND_GOVERNOR) as stack:
        idle = await _idle(server, stack, reserved[:IDLE_SAMPLES])
        spool = state / "fleet-cordon-spools"
        load_of = _load_process(stack.fleet.kubeconfig, server, stack.task_queue, spool, nodes, load_nodes, sample_rate)
        async with load_of as load:
            await asyncio.sleep(WARM_UP_S)
            cpu_before, began = _cpu_seconds(), time.perf_counter()
            loaded = await _under_load(server, stack, reserved[IDLE_SAMPLES:], sample_rate)
            cpu = {
                name: (used - cpu_before.get(name, 0.0)) / (time.perf_counter() - began)
                for name, used in _cpu_seconds().items()
            }
        quarantined = len(set(stack.cordons.cordoned_at) - set(reserved))
    rate = load["events"] / load["seconds"]
    kinds = ", ".join(f"{kind.lower().replace('_', ' ')} {count}" for kind, count in load["by_kind"].items())
    print(
        f"fault → cordon on {nodes:,} nodes, medium load ({MEDIUM_PER_NODE}/s per node = {MEDIUM_PER_NODE * nodes:.0f}/s)"
    )
    print(f"  idle fleet (baseline)   {describe(idle)}")
    missing = sum(1 for seconds in loaded if math.isinf(seconds))
    never = f"   {missing} not cordoned {UNCORDONED_AFTER_S:.0f} s after the last report: ∞" if missing else ""
    print(f"  under the medium load   {describe(loaded)}{never}")
    ratio = percentile(loaded, 0.99) / percentile(idle, 0.99)
    print(f"  p99 ratio loaded / idle {ratio:.2f}")
    print(
        f"  load: {load['events']} events in {load['seconds']:.0f} s ({rate:.0f}/s, and {sample_rate:.1f}/s sampled faults; {kinds}), "
        f"{quarantined} load nodes quarantined; its delivery p50 {load['delivery_p50_ms']:.0f} ms, "
        f"p99 {load['delivery_p99_ms']:.0f} ms, schedule lag p99 {load['late_p99_ms']:.0f} ms, "
        f"{load['errors']} errors{' (' + load['first_error'] + ')' if load['errors'] else ''}, "
        f"{load['undelivered']} still spooled at its end"
    )
    fatal = (load["by_kind"][eventgen.Kind.FATAL_XID.name] + len(loaded)) / load["seconds"]
    cordoned = (quarantined + len(loaded)) / load["seconds"]
    behind = (
        ": fewer, so the backlog (and the time to cordon) grew while the load lasted" if cordoned < 0.95 * fatal else ""
    )
    print(f"  remediations asked for {fatal:.1f}/s, nodes cordoned {cordoned:.1f}/s{behind}")
    shares = ", ".join(f"{name} {share:.0%}" for name, share in sorted(cpu.items(), key=lambda item: -item[1]))
    print(f"  CPU while sampled (of one core): {shares}")
    p99 = percentile(loaded, 0.99)
    # A load that did not reach the fleet (refused, spooled, behind its schedule) makes no medium load.
    offered = (load["events"] + len(loaded)) / load["seconds"]
    delivered = load["errors"] == 0 and load["undelivered"] == 0 and offered >= 0.95 * MEDIUM_PER_NODE * nodes
    verdict(
        "fault-to-cordon-2000",
        p99 < TARGET_P99 and delivered,
        f"p99 {p99 * 1000:.0f} ms under the medium load, {offered:.0f} events/s offered"
        + ("" if delivered else ", but the load was not all delivered"),
        f"< {TARGET_P99 * 1000:.0f} ms, all of {MEDIUM_PER_NODE * nodes:.0f} events/s delivered",
    )
    return FleetCordon(idle, loaded, load)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_cordon", description="the load process")
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--spool-dir", type=Path, required=True)
    parser.add_argument("--nodes", type=int, required=True, help="the fleet's size, for its node names")
    parser.add_argument("--load-nodes", type=int, required=True, help="nodes 0 … N-1 carry the load")
    parser.add_argument("--rate", type=float, required=True, help="events/s, fleet-wide")
    parser.add_argument("--sample-rate", type=float, required=True, help="sampled faults/s standing in for the load's")
    asyncio.run(_load(parser.parse_args()))
