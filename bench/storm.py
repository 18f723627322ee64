"""A fault storm: half of a 1,500-node fleet reports a fatal XID at once, beside bare Temporal.

Every faulty node gets a full remediation (quarantine, drain, reboot, wait, verify, release) on a
fleet without workloads and with instant reboots, with the fleet governor handing out permits with
no limit that binds, run as a large fleet deploys it, in a worker process of its own (what is
measured is the cost of asking for them). Each storm, and each baseline, runs on a dev server of
its own, so none inherits another's workflows.

Two baselines run beside each storm, with the same worker options, on fresh dev servers:

- as many bare workflows started with signal-with-start, each running, on its signal, one no-op
  local activity in its first workflow task (where a remediation quarantines its node): the
  quarantine rate is set beside their rate (workflows over the seconds from the first start to the
  last completion);
- as many bare workflows each running a no-op for each step a remediation ran, in its order (a local
  activity for each of its local activities, an activity for each of its activities): all back in
  service is set beside their last completion. That ratio is what gpuheal's work and design cost
  beside the plain Temporal way of running those steps.

The shape of the run: `runs` governed storms (`python -m bench --storm-runs N`), each with its two
baselines, and one storm with the governor switched off, watched only up to its last cordon (all
its figure needs), whose quarantine rate is set beside the governed storms' median. Each storm's
ratios are reported and a verdict is met only where every storm of the run meets it. By default one
governed storm: on two cores a governed storm of 750 remediations with its baselines takes about
2½ minutes (the storm alone a minute, CPU-bound), so the storm part keeps to the 4–5 of `make
bench`'s 10 minutes it has; three pairs of full storms took more than 6. The target's "every run of
three" is then three runs of `make bench`, or one with `--storm-runs 3` (about 8 minutes). The
baselines' servers and workers start while a storm's idle worker is watched after it.

Along the way: the CPU seconds each process used (the profile that shows what bounds the ratio on
two cores), the history of one remediation (events, workflow tasks, payload bytes) beside a bare
one's, the workflow tasks that timed out in all of them, and the remediations worker's resident set
from before the storm to `AFTER_S` after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType, TimeoutType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHandle, WorkflowHistory

from bench import plot
from bench.baseline import BareSignalled, BareWorkflow
from bench.measure import CpuAccount, describe, verdict
from bench.memory import MIB, resident_bytes, sampling_rss
from bench.stack import RemediationStack, enter_together, remediation_stack, worker_process
from gpuheal.control import remediations
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.faults import Fault
from gpuheal.domain.fleet import PERMIT_SIGNAL
from gpuheal.domain.marks import workflow_id_for
from gpuheal.domain.phases import Phase
from gpuheal.domain.steps import Step
from gpuheal_sim.demo.devserver import DevServer, start_dev_server
from gpuheal_sim.demo.run import demo_policy

TARGET_QUARANTINE_RATIO = 0.6
# The storms the all-back target must hold in (`--storm-runs`).
RUNS_THE_TARGET_NEEDS = 3
TARGET_RATIO = 1.25
TARGET_GOVERNED_RATIO = 0.8
T = TypeVar("T")
_IN_FLIGHT = 100
# How long the worker's resident set is sampled after the last remediation ended, and how far it may
# grow over that time and still count as flat: a few of the allocator's arenas, against the tens of
# MiB a storm adds.
AFTER_S = 15.0
# Bounds that end a storm which cannot finish (a dead governor, a watch that died) instead of hanging.
STORM_TIMEOUT_S = 600.0
WATCH_TIMEOUT_S = 120.0
FLAT_BYTES = 4 * MIB


@dataclass(frozen=True, slots=True)
class Timed:
    """Workflows started and awaited, in seconds since the first start was sent."""

    results: list[Any]
    # When each start returned, and when each result came.
    started: list[float]
    ended: list[float]
    # perf_counter() at the first start.
    origin: float

    @property
    def finished(self) -> float:
        return max(self.ended)

    def most_in_flight(self) -> int:
        """The most workflows started and not yet ended at any one time."""
        changes = sorted([(at, 1) for at in self.started] + [(at, -1) for at in self.ended])
        running = most = 0
        for _, change in changes:
            running += change
            most = max(most, running)
        return most


async def _all(count: int, start: Callable[[int], Awaitable[WorkflowHandle[Any, Any]]]) -> Timed:
    """Start workflow i for every i, at most _IN_FLIGHT starts at a time, then wait for all results.

    Only the starts are limited, as a fleet's agents each send one; the workflows all run at once.
    """
    gate = asyncio.Semaphore(_IN_FLIGHT)
    started = [0.0] * count
    ended = [0.0] * count
    origin = time.perf_counter()

    async def one(index: int) -> Any:
        async with gate:
            handle = await start(index)
        started[index] = time.perf_counter() - origin
        result = await handle.result()
        ended[index] = time.perf_counter() - origin
        return result

    results = await asyncio.gather(*(one(i) for i in range(count)))
    return Timed(list(results), started, ended, origin)


@dataclass(frozen=True, slots=True)
class Shape:
    """One workflow's history: its events and the bytes of the payloads in them, by kind of event."""

    kinds: Counter[str]
    payloads: Counter[str]

    @classmethod
    def of(cls, history: WorkflowHistory) -> Shape:
        kinds: Counter[str] = Counter()
        payloads: Counter[str] = Counter()
        for event in history.events:
            kind = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_").lower()
            kinds[kind] += 1
            payloads[kind] += _payload_bytes(event)
        return cls(kinds, payloads)

    def describe(self) -> str:
        tasks = self.kinds["workflow_task_completed"]
        return (
            f"{self.kinds.total()} events, {tasks} workflow tasks, {self.payloads.total() / 1024:.1f} KiB of payloads"
        )

    def details(self) -> str:
        events = ", ".join(f"{kind} {count}" for kind, count in self.kinds.most_common())
        heaviest = ", ".join(f"{kind} {size / 1024:.1f}" for kind, size in self.payloads.most_common(4) if size)
        return f"{events}; KiB of payloads: {heaviest}"


def _payload_bytes(message: Message) -> int:
    """The bytes of every Payload in the message (inputs, results, markers, headers, search attributes)."""
    if isinstance(message, Payload):
        return message.ByteSize()
    total = 0
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].message_type is None:
                continue
            values = list(value.values())
        else:
            values = list(value) if field.is_repeated else [value]
        total += sum(_payload_bytes(each) for each in values)
    return total


@dataclass(frozen=True, slots=True)
class Rss:
    """The remediations worker's resident set over a storm, in bytes."""

    idle: int
    peak: int
    # The most remediations in flight at once.
    in_flight: int
    # Its growth over the last AFTER_S seconds, all after the last remediation ended.
    after: int
    # What it still held at the end beside before the storm (the allocator keeps freed arenas).
    retained: int

    @property
    def per_thousand(self) -> float:
        return (self.peak - self.idle) / self.in_flight * 1000

    @property
    def flat(self) -> bool:
        return self.after <= FLAT_BYTES

    def describe(self) -> str:
        return (
            f"idle {self.idle / MIB:.0f} MiB, peak {self.peak / MIB:.0f} MiB with {self.in_flight} in flight: "
            f"{self.per_thousand / MIB:.1f} MiB per 1,000; {self.after / MIB:+.1f} MiB over the {AFTER_S:g} s after, "
            f"{self.retained / MIB:+.0f} MiB held beside before the storm"
        )


@dataclass(frozen=True, slots=True)
class StormRun:
    timed: Timed
    # Seconds from the first report to each node's cordon and its return to service (the node watch's).
    cordoned: list[float]
    back: list[float]
    # The steps of one remediation, in order: True for a local activity, False for an activity.
    steps: list[bool]
    # Seconds from each remediation's ask for a permit to the governor's grant (none ungoverned) …
    permit_waits: list[float]
    # … and how many of the grants the asks collected themselves (the rest came as signals).
    collected: int
    cpu: CpuAccount
    rss: Rss
    shape: Shape
    # Workflow tasks timed out in all the storm's histories, by kind of timeout: each is a task done again.
    task_timeouts: Counter[str]

    @property
    def last_cordon(self) -> float:
        return max(self.cordoned)


@dataclass(frozen=True, slots=True)
class BareRun:
    timed: Timed
    cpu: CpuAccount
    shape: Shape


@dataclass(frozen=True, slots=True)
class Storm:
    """A stack ready for a storm: its faulty nodes, and the processes whose CPU time is counted."""

    server: DevServer
    stack: RemediationStack
    names: list[str]
    pids: dict[str, int]

    async def report(self, index: int) -> WorkflowHandle[Any, Any]:
        """Report a fatal XID on the index-th faulty node, as its agent would."""
        fault = Fault(node=self.names[index], action=RecommendedAction.RESTART_BM, xid=79, event_id=str(uuid.uuid4()))
        return await remediations.report_fault(self.server.client, fault, _POLICY, task_queue=self.stack.task_queue)


_POLICY = demo_policy(False)


@asynccontextmanager
async def _storm(
    server: DevServer, state: Path, nodes: int, faulty: int, *worker_args: str, name: str, governed: bool
) -> AsyncIterator[Storm]:
    """A fleet and workers for a storm on `server`; a governed one runs its governor in a worker
    process of its own, as a large fleet deploys it."""
    fleet_args = ("--nodes", str(nodes), "--reboot-seconds", "0", "--no-workloads")
    stack_of = remediation_stack(server, state / name, *fleet_args, worker_args=worker_args, governor_apart=governed)
    async with stack_of as stack:
        width = max(3, len(str(nodes - 1)))  # as the simulator names its nodes
        names = [f"gpu-node-{i:0{width}d}" for i in range(0, nodes, max(1, nodes // faulty))][:faulty]
        workers = {f"worker {role}": pid for role, pid in stack.worker_pids.items()}
        pids = {"server": server.process.pid, "simulator": stack.fleet.pid, **workers, "bench": os.getpid()}
        yield Storm(server, stack, names, pids)


async def _remediations(
    server: DevServer,
    state: Path,
    nodes: int,
    faulty: int,
    *,
    worker_args: Sequence[str],
    name: str,
    meanwhile: Callable[[], Awaitable[Any]],
) -> StormRun:
    """A governed storm, every remediation to its end. The remediations worker's resident set is
    watched until `AFTER_S` after it, while `meanwhile` runs (it must not load the worker)."""
    async with _storm(server, state, nodes, faulty, *worker_args, name=name, governed=True) as storm:
        worker = storm.stack.worker_pids["remediations"]
        cordons = storm.stack.cordons
        idle = resident_bytes(worker)
        async with sampling_rss(worker) as rss:
            cpu = CpuAccount(storm.pids)
            async with asyncio.timeout(STORM_TIMEOUT_S):
                timed = await _all(len(storm.names), storm.report)
            cpu.stop()
            failed = [r for r in timed.results if r.phase is not Phase.RESOLVED]
            if failed:
                raise RuntimeError(f"{len(failed)} remediations did not resolve, e.g. {failed[0].reason}")
            async with asyncio.timeout(WATCH_TIMEOUT_S):  # a watch that died must not hang the run
                await cordons.wait_for(len(storm.names))
                await cordons.wait_for_back(len(storm.names))
            histories, *_ = await asyncio.gather(
                _histories(server.client, storm.names), asyncio.sleep(AFTER_S), meanwhile()
            )
        end = rss.samples[-1][0]
        memory = Rss(idle, rss.peak, timed.most_in_flight(), rss.growth(end - AFTER_S, end), rss.samples[-1][1] - idle)
        cordoned = sorted(at - timed.origin for at in cordons.cordoned_at.values())
        back = sorted(at - timed.origin for at in cordons.back_at.values())
    steps = [_is_local(e) for e in histories[0].events if _is_step(e)]
    granted = [(h, r.permit) for h, r in zip(histories, timed.results, strict=True) if r.permit is not None]
    if len(granted) != len(storm.names):
        raise RuntimeError(f"only {len(granted)} of {len(storm.names)} remediations received a permit")
    waits = [(permit.granted_at - _asked_at(h)).total_seconds() for h, permit in granted]
    collected = sum(1 for h, _ in granted if not any(_is_permit(e) for e in h.events))
    timeouts = Counter(
        TimeoutType.Name(e.workflow_task_timed_out_event_attributes.timeout_type).removeprefix("TIMEOUT_TYPE_").lower()
        for h in histories
        for e in h.events
        if e.HasField("workflow_task_timed_out_event_attributes")
    )
    shape = Shape.of(histories[0])
    return StormRun(timed, cordoned, back, steps, waits, collected, cpu, memory, shape, timeouts)


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A storm watched up to its last cordon: the seconds from the first report to it."""

    last_cordon: float
    cpu: CpuAccount


async def _quarantined(server: DevServer, state: Path, nodes: int, faulty: int, *worker_args: str) -> Quarantined:
    """An ungoverned storm, up to its last cordon: its server and fleet are thrown away with the rest."""
    async with _storm(server, state, nodes, faulty, *worker_args, name="ungoverned", governed=False) as storm:
        cpu = CpuAccount(storm.pids)
        started = time.perf_counter()
        reporting = asyncio.create_task(_all(len(storm.names), storm.report))
        cordoned = asyncio.create_task(storm.stack.cordons.wait_for(len(storm.names)))
        try:
            # A report that failed ends the wait with its error, as does a storm that never ends.
            done, _ = await asyncio.wait(
                {reporting, cordoned}, timeout=STORM_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                raise TimeoutError(f"the storm was not all cordoned within {STORM_TIMEOUT_S:g} s")
            if cordoned not in done:
                reporting.result()  # a failed report's error; else every run ended and its cordons are on their way
                await asyncio.wait_for(cordoned, WATCH_TIMEOUT_S)
        finally:
            cordoned.cancel()
            reporting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporting
        cpu.stop()
        return Quarantined(max(storm.stack.cordons.cordoned_at.values()) - started, cpu)


async def _on_own_server(storm: Callable[[DevServer], Awaitable[T]]) -> T:
    """Run `storm` on a fresh in-memory dev server."""
    own = await start_dev_server()
    try:
        return await storm(own)
    finally:
        await own.shutdown()


async def _histories(client: Client, nodes: list[str]) -> list[WorkflowHistory]:
    gate = asyncio.Semaphore(_IN_FLIGHT)

    async def one(node: str) -> WorkflowHistory:
        async with gate:
            return await client.get_workflow_handle(workflow_id_for(node)).fetch_history()

    return list(await asyncio.gather(*(one(n) for n in nodes)))


def _is_step(event: HistoryEvent) -> bool:
    return event.HasField("activity_task_scheduled_event_attributes") or _is_local(event)


def _is_local(event: HistoryEvent) -> bool:
    """A local activity's marker (not a patch's)."""
    marker = event.marker_recorded_event_attributes
    return event.HasField("marker_recorded_event_attributes") and marker.marker_name == "core_local_activity"


def _asked_at(history: WorkflowHistory) -> datetime:
    """When the remediation first asked for its permit: the start of the workflow task that ran the
    ask, which is the `asked_at` it sent the governor (the workflow's clock)."""
    task_started: datetime | None = None
    for event in history.events:
        if event.HasField("workflow_task_started_event_attributes"):
            task_started = event.event_time.ToDatetime(UTC)
        elif _is_ask(event) and task_started is not None:
            return task_started
    raise RuntimeError(f"{history.workflow_id} never asked for a permit")


def _is_ask(event: HistoryEvent) -> bool:
    """The marker of an ask's local activity (one that waits for its grant, or not)."""
    details = event.marker_recorded_event_attributes.details
    if not event.HasField("marker_recorded_event_attributes") or "data" not in details:
        return False
    step = json.loads(details["data"].payloads[0].data).get("activity_type")
    return step in (Step.ASK_PERMIT.value, Step.COLLECT_PERMIT.value, Step.COLLECT_UNLESS_HELD.value)


def _is_permit(event: HistoryEvent) -> bool:
    signaled = event.workflow_execution_signaled_event_attributes
    return event.HasField("workflow_execution_signaled_event_attributes") and signaled.signal_name == PERMIT_SIGNAL.name


@dataclass(frozen=True, slots=True)
class BareRig:
    """A fresh dev server and a baseline worker polling a queue of its own there."""

    server: DevServer
    task_queue: str
    worker: int


@asynccontextmanager
async def _bare_rig() -> AsyncIterator[BareRig]:
    server = await start_dev_server()
    try:
        task_queue = f"bench-bare-{uuid.uuid4()}"
        args = ("-m", "bench.baseline_worker", "--address", server.address, "--task-queue", task_queue)
        async with worker_process(*args) as worker:
            yield BareRig(server, task_queue, worker)
    finally:
        await server.shutdown()


async def _bare(
    rig: BareRig, count: int, start: Callable[[Client, str, int], Awaitable[WorkflowHandle[Any, Any]]]
) -> BareRun:
    """`count` bare workflows, each started by `start(client, task queue, index)`."""
    client: Client = rig.server.client
    cpu = CpuAccount({"server": rig.server.process.pid, "worker": rig.worker, "bench": os.getpid()})
    timed = await _all(count, lambda index: start(client, rig.task_queue, index))
    cpu.stop()
    history = await client.get_workflow_handle(_bare_id(rig.task_queue, 0)).fetch_history()
    return BareRun(timed, cpu, Shape.of(history))


def _bare_id(task_queue: str, index: int) -> str:
    return f"{task_queue}-{index}"


def _steps(steps: list[bool]) -> Callable[[Client, str, int], Awaitable[WorkflowHandle[Any, Any]]]:
    """Starts a BareWorkflow that runs `steps`."""

    async def start(client: Client, task_queue: str, index: int) -> WorkflowHandle[Any, Any]:
        return await client.start_workflow(
            BareWorkflow.run, steps, id=_bare_id(task_queue, index), task_queue=task_queue
        )

    return start


async def _signalled(client: Client, task_queue: str, index: int) -> WorkflowHandle[Any, Any]:
    """Signal-with-start of a BareSignalled."""
    return await client.start_workflow(
        BareSignalled.run, id=_bare_id(task_queue, index), task_queue=task_queue, start_signal="go"
    )


@dataclass(frozen=True, slots=True)
class Run:
    """A governed storm and its two baselines."""

    storm: StormRun
    signalled: BareRun
    steps: BareRun

    @property
    def rate(self) -> float:
        return len(self.storm.cordoned) / self.storm.last_cordon

    @property
    def bare_rate(self) -> float:
        return len(self.signalled.timed.ended) / self.signalled.timed.finished

    @property
    def ratio(self) -> float:
        return self.storm.timed.finished / self.steps.timed.finished


async def run(server: DevServer, state: Path, nodes: int, faulty: int, plots: Path, runs: int = 1) -> dict[str, float]:
    """The storm `runs` times with the governor and its baselines, then once without the governor.

    `server` is not used: every storm and baseline runs on a dev server of its own."""
    del server
    print(f"storm: {faulty} of {nodes} nodes faulted at once, {runs} time(s) with the governor, once without it")
    # The governor hands out permits to all at once: its limits are not what this storm measures,
    # the cost of asking for them is.
    governed_args = (
        *("--max-remediations", "100000", "--max-remediating-percent", "100"),
        *("--breaker-share", "1", "--breaker-at-least", "100000"),
    )

    governed: list[Run] = []
    for index in range(1, runs + 1):
        storm = partial(
            _remediations, state=state, nodes=nodes, faulty=faulty, worker_args=governed_args, name=f"governed-{index}"
        )
        governed.append(await _governed_run(storm, faulty))
        _print_run(index, governed[-1])
    ungoverned = await _on_own_server(lambda own: _quarantined(own, state, nodes, faulty, "--no-fleet-governor"))
    return _summary(governed, ungoverned, faulty, plots)


async def _governed_run(storm: Callable[..., Awaitable[StormRun]], faulty: int) -> Run:
    """A governed storm (`storm(server, meanwhile=…)`), then its baselines, whose fresh servers and
    workers start while the storm's idle worker is watched."""
    async with contextlib.AsyncExitStack() as rigs:
        ready: list[BareRig] = []

        async def prepare() -> None:
            ready.extend(await enter_together(rigs, [_bare_rig(), _bare_rig()]))

        governed = await _on_own_server(partial(storm, meanwhile=prepare))
        signalled, as_many = ready
        return Run(
            governed, await _bare(signalled, faulty, _signalled), await _bare(as_many, faulty, _steps(governed.steps))
        )


def _print_run(index: int, one: Run) -> None:
    storm = one.storm
    print(
        f"  run {index}: all {len(storm.cordoned)} cordoned after {storm.last_cordon:6.2f} s ({one.rate:5.1f}/s; "
        f"bare signal-with-start {one.bare_rate:5.1f}/s: {one.rate / one.bare_rate:.2f} ×); "
        f"all back in service after {storm.timed.finished:6.2f} s (bare {one.steps.timed.finished:6.2f} s: {one.ratio:.2f} ×)",
        flush=True,
    )
    print(f"    CPU s, storm:       {storm.cpu.describe()}")
    print(f"    CPU s, bare steps:  {one.steps.cpu.describe()}")
    print(f"    CPU s, bare signal: {one.signalled.cpu.describe()}")
    print(f"    worker RSS: {one.storm.rss.describe()}", flush=True)


def _summary(runs: Sequence[Run], ungoverned: Quarantined, faulty: int, plots: Path) -> dict[str, float]:
    median = sorted(runs, key=lambda one: one.ratio)[len(runs) // 2]
    governed = median.storm
    rate_off = faulty / ungoverned.last_cordon
    rate = statistics.median(one.rate for one in runs)
    print(f"  governor off: all cordoned after {ungoverned.last_cordon:.2f} s ({rate_off:.1f}/s)")
    print(f"  CPU s, to the last cordon without the governor: {ungoverned.cpu.describe()}")
    print(f"  ask → permit granted   {describe(governed.permit_waits)}   (the median run)")
    print(f"  grants collected by the ask (not signalled): {governed.collected} of {faulty}")
    local = sum(governed.steps)
    print(f"  per remediation: {local} local activities and {len(governed.steps) - local} activities")
    timeouts = ", ".join(f"{count} {kind}" for kind, count in governed.task_timeouts.items()) or "none"
    print(f"  workflow tasks timed out in the {faulty} histories: {timeouts}")
    print(f"  history of one remediation: {governed.shape.describe()}")
    print(f"    {governed.shape.details()}")
    print(f"  history of one bare workflow with as many steps: {median.steps.shape.describe()}")
    print(f"  history of one bare signal-with-start: {median.signalled.shape.describe()}")
    path = plots / "storm.png"
    plot.storm(
        path,
        cordoned=governed.cordoned,
        back=governed.back,
        bare={
            "bare signal-with-start, completed": median.signalled.timed.ended,
            "bare workflows with as many steps, completed": median.steps.timed.ended,
        },
        title=f"Fault storm: {faulty} nodes at once, governed"
        + (f" (the median of {len(runs)})" if len(runs) > 1 else ""),
    )
    print(f"  drawn: {path}")
    quarantine = [one.rate / one.bare_rate for one in runs]
    verdict(
        "storm-quarantine-rate",
        all(ratio >= TARGET_QUARANTINE_RATIO for ratio in quarantine),
        "quarantine rate / bare signal-with-start rate " + ", ".join(f"{r:.2f}" for r in quarantine),
        f"≥ {TARGET_QUARANTINE_RATIO} in every storm",
    )
    ratios = [one.ratio for one in runs]
    # The target holds "in every run of three": one storm, however good, does not establish it.
    verdict(
        "storm-all-back",
        len(ratios) >= RUNS_THE_TARGET_NEEDS and all(ratio <= TARGET_RATIO for ratio in ratios),
        "all back in service / bare " + ", ".join(f"{r:.2f} ×" for r in ratios) + f" ({len(runs)} storms)",
        f"≤ {TARGET_RATIO} × in every one of {RUNS_THE_TARGET_NEEDS} storms (--storm-runs {RUNS_THE_TARGET_NEEDS})",
    )
    verdict(
        "storm-governor",
        rate / rate_off >= TARGET_GOVERNED_RATIO,
        f"quarantine rate governor on / off {rate / rate_off:.2f} ({rate:.1f}/s, the median of {len(runs)}, "
        f"vs {rate_off:.1f}/s)",
        f"≥ {TARGET_GOVERNED_RATIO}",
    )
    worst = max((one.storm.rss for one in runs), key=lambda rss: rss.after)
    verdict(
        "worker-rss",
        all(one.storm.rss.flat for one in runs),
        ", ".join(f"{one.storm.rss.per_thousand / MIB:.1f}" for one in runs)
        + f" MiB per 1,000 in flight; at most {worst.after / MIB:+.1f} MiB in the {AFTER_S:g} s after a storm",
        f"reported, and flat after the storm (≤ {FLAT_BYTES / MIB:.0f} MiB over {AFTER_S:g} s)",
    )
    return {
        "storm_rate": rate,
        "storm_quarantine_ratio": min(quarantine),
        "storm_governed_ratio": rate / rate_off,
        "storm_ratio": max(ratios),
    }
