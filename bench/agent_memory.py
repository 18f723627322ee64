"""The agent's resident set with 8 GPUs: idle, then under the seed's medium event load for one node.

A real `gpuheal agent` process (fake NVML with 8 GPUs, an empty file as its kernel log, its health
and metrics server on) runs against a one-node simulated fleet and the shared dev server, with a
task queue no worker polls (its faults start remediations that wait). Its RSS is sampled every
second: first while idle, then while a `gpuheal-eventgen` process sends it the seed's medium load,
EVENT_RATE=0.067 events/s (the chart's eventgen profile `medium`), in the generator's mix. Medium
is an eventgen rate and names no kernel-log lines, so none are written. Memory is flat when the
resident set grows by less than FLAT_BYTES over the second half of the load window: by then the
agent has served every kind of event, and a leak grows with the time the window spans.
The agent runs in the dev venv, whose kubernetes-validate (a dev tool, which kubernetes.dynamic
imports where it is installed) adds about 2 MB that the image's agent does not carry.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from temporalio.service import RPCError, RPCStatusCode

from bench.eventgen import _FINAL  # the generator's last line, as the event generator benchmark reads it
from bench.measure import verdict
from bench.memory import MIB, RssSamples, sampling_rss
from bench.stack import fleet_process
from gpuheal.domain.marks import workflow_id_for
from gpuheal.protos.sockets import DEVICE_API_SOCKET, HEALTH_EVENTS_SOCKET
from gpuheal_sim.demo.devserver import DevServer

MEDIUM_PER_NODE = 0.067  # events/s on each node: the seed's medium load
GPUS = 8
MB = 1_000_000  # the targets' unit
TARGET_IDLE = 80 * MB
TARGET_LOADED = 100 * MB
FLAT_BYTES = 4 * MIB
IDLE_S = 20.0
_NODE = "gpu-node-000"  # the one-node fleet's node
# What the agent's process imports, its own modules after the libraries: how much of the resident set
# each adds (in a fresh interpreter, each import beyond those before it) is what bounds the idle figure.
_LIBRARIES = (
    "grpc",
    "pydantic",
    "aiohttp",  # the asyncio Kubernetes client's HTTP, and the health endpoint's server
    "prometheus_client",
    "temporalio.client",
    # The synchronous client's package (requests, oauthlib, google-auth, websocket-client): Python runs
    # it as the parent of kubernetes.aio, which is all the agent uses.
    "kubernetes",
    "kubernetes.aio.client",
    "gpuheal.commands.agent",
    # CoreV1Api, at its first use (the node reporter's, the order watcher's): every core/v1 model it names.
    "kubernetes.aio.client.api.core_v1_api",
)


@dataclass(frozen=True, slots=True)
class AgentMemory:
    """The RSS samples, and when (seconds into them) the load began and ended."""

    rss: RssSamples
    load_began: float
    load_ended: float
    events: int


async def _until(path: Path, process: asyncio.subprocess.Process, seconds: float) -> None:
    """Wait for `path` to appear (the agent serves on it), while the process runs."""
    async with asyncio.timeout(seconds):
        while not path.exists():  # noqa: ASYNC240 - a stat every 0.1 s
            if process.returncode is not None:
                raise RuntimeError(f"the agent exited {process.returncode} before serving on {path}")
            await asyncio.sleep(0.1)


async def _stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, and SIGKILL for a process that has not ended a minute later."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), 60)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise


async def _agent(
    home: Path, sockets: Path, server: DevServer, kubeconfig: Path, task_queue: str
) -> asyncio.subprocess.Process:
    (home / "kmsg.log").touch()
    with (home / "agent.log").open("wb") as log:  # the process keeps its own copy of the descriptor
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gpuheal",
            "agent",
            *("--node", _NODE, "--fake-gpus", str(GPUS)),
            *("--socket-dir", str(sockets), "--spool-dir", str(home / "spool")),
            *("--kernel-log", str(home / "kmsg.log"), "--kernel-log-format", "file"),
            *("--address", server.address, "--task-queue", task_queue, "--kubeconfig", str(kubeconfig)),
            *("--health-address", "127.0.0.1:0"),
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )


async def _medium_load(sockets: Path, seconds: float) -> int:
    """`gpuheal-eventgen` at the medium rate against the agent for `seconds`; the events it sent."""
    generator = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gpuheal.tools.eventgen",
        f"-socket={sockets / HEALTH_EVENTS_SOCKET}",
        f"-device-api={sockets / DEVICE_API_SOCKET}",  # the events name the agent's own GPUs
        env={**os.environ, "NODE_NAME": _NODE, "EVENT_RATE": str(MEDIUM_PER_NODE)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await asyncio.sleep(seconds)
        generator.send_signal(signal.SIGTERM)
        _, errors = await asyncio.wait_for(generator.communicate(), 60)
    finally:  # cancelled or timed out: no generator left behind
        if generator.returncode is None:
            generator.kill()
            await generator.wait()
    final = _FINAL.search(errors.decode())
    if final is None:
        raise RuntimeError(f"the generator gave no final statistics: {errors.decode()[-500:]}")
    if float(final.group(2)) < 100:
        raise RuntimeError(f"the agent refused some of the generator's events: {final.group(0)}")
    return int(final.group(1))


async def run(server: DevServer, state: Path, soak_minutes: float) -> AgentMemory:
    task_queue = f"bench-agent-memory-{uuid.uuid4()}"
    home = state / "agent-memory"
    home.mkdir()
    # A unix socket's path may not exceed 107 bytes: the sockets get a short directory of their own.
    with tempfile.TemporaryDirectory(prefix="gh-bench-mem-", dir="/tmp") as sockets:
        async with fleet_process(home / "fleet", "--nodes", "1", "--gpus-per-node", str(GPUS)) as fleet:
            agent = await _agent(home, Path(sockets), server, fleet.kubeconfig, task_queue)
            try:
                await _until(Path(sockets) / HEALTH_EVENTS_SOCKET, agent, 60)
                async with sampling_rss(agent.pid, every=1.0) as rss:
                    await asyncio.sleep(IDLE_S)
                    load_began = rss.samples[-1][0]
                    events = await _medium_load(Path(sockets), soak_minutes * 60)
                    load_ended = rss.samples[-1][0]
            finally:
                await _stop(agent)
    await _end_remediation(server)
    return _report(AgentMemory(rss, load_began, load_ended, events), soak_minutes, await _import_costs())


# Run in a fresh interpreter (`python -c`): bench.memory imports the standard library only (asyncio,
# with its ssl and logging, which the agent imports too), counted with Python itself.
_IMPORTS = """
import importlib, json, os, sys
from bench.memory import resident_bytes
added = {"python and stdlib": resident_bytes(os.getpid())}
for name in sys.argv[1:]:
    before = resident_bytes(os.getpid())
    importlib.import_module(name)
    added[name] = resident_bytes(os.getpid()) - before
print(json.dumps(added))
"""


async def _import_costs() -> dict[str, int]:
    """What each library the agent imports adds to a fresh interpreter's resident set, in bytes."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _IMPORTS, *_LIBRARIES, stdout=asyncio.subprocess.PIPE
    )
    output, _ = await process.communicate()
    costs: dict[str, int] = json.loads(output)
    return costs


async def _end_remediation(server: DevServer) -> None:
    """Terminate the remediation the load's fatal events started (none where it sent none)."""
    try:
        await server.client.get_workflow_handle(workflow_id_for(_NODE)).terminate("benchmark done")
    except RPCError as error:
        if error.status is not RPCStatusCode.NOT_FOUND:
            raise


def _report(memory: AgentMemory, soak_minutes: float, imports: dict[str, int]) -> AgentMemory:
    rss, began, ended = memory.rss, memory.load_began, memory.load_ended
    idle = max(rss.between(0, began))
    loaded = max(rss.between(began, ended))
    half = (began + ended) / 2
    growth = rss.growth(half, ended)
    print(f"agent RSS, {GPUS} fake GPUs (MB = 10^6 bytes)")
    print(f"  serving (its sockets made)        {rss.samples[0][1] / MB:6.1f} MB")
    print(f"  idle {began:.0f} s                    peak {idle / MB:6.1f} MB")
    print(
        f"  medium load {soak_minutes:g} min ({MEDIUM_PER_NODE}/s, {memory.events} events)  "
        f"peak {loaded / MB:6.1f} MB, {loaded / idle:.2f}× idle; growth over its second half "
        f"{growth / MIB:+.2f} MiB (flat: < {FLAT_BYTES / MIB:.0f} MiB)"
    )
    floor = ", ".join(f"{name} {size / MB:+.1f}" for name, size in imports.items())
    print(f"  imports alone (MB, each beyond those before it): {floor}; {sum(imports.values()) / MB:.1f} in all")
    verdict("agent-rss-idle", idle <= TARGET_IDLE, f"{idle / MB:.1f} MB", f"≤ {TARGET_IDLE / MB:.0f} MB")
    verdict(
        "agent-rss-medium-load",
        loaded <= TARGET_LOADED and growth < FLAT_BYTES,
        f"peak {loaded / MB:.1f} MB, {growth / MIB:+.2f} MiB over the last {ended - half:.0f} s",
        f"≤ {TARGET_LOADED / MB:.0f} MB and < {FLAT_BYTES / MIB:.0f} MiB growth",
    )
    return memory
