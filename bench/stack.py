"""The processes a benchmark runs against: the dev server, a simulated fleet and workers.

Fleet and workers run as their own processes, as in production, so the benchmark's own bookkeeping
(watching nodes, starting workflows) does not share an interpreter with the code it measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from bench.measure import CordonWatch, watching_cordons
from gpuheal_sim.demo.devserver import DevServer

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Fleet:
    url: str
    control_url: str
    kubeconfig: Path
    pid: int


async def _spawn(args: Sequence[str], ready: bytes) -> tuple[asyncio.subprocess.Process, bytes]:
    """Start a Python module as a process and wait for the output line that says it is ready.

    Its output keeps being read afterwards (and dropped): a full pipe would block the process.
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    try:
        while ready not in (line := await asyncio.wait_for(process.stdout.readline(), 120)):
            if not line:
                raise RuntimeError(f"{' '.join(args)} exited before it was ready")
    except BaseException:  # a timeout, or a start cancelled with others that failed: leave nothing running
        await _stop(process)
        raise
    drain = asyncio.create_task(_drain(process.stdout))
    _DRAINS.add(drain)
    drain.add_done_callback(_DRAINS.discard)
    return process, line


# Strong references to the drain tasks, which asyncio itself keeps only weakly.
_DRAINS: set[asyncio.Task[None]] = set()


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()


@asynccontextmanager
async def fleet_process(state_dir: Path, *args: str) -> AsyncIterator[Fleet]:
    """`python -m gpuheal_sim.simulator` with the given flags; yields its URLs and kubeconfig."""
    process, line = await _spawn(
        ["-m", "gpuheal_sim.simulator", "--state-dir", str(state_dir), *args], ready=b'"kubeconfig"'
    )
    try:
        announced = json.loads(line)
        yield Fleet(
            url=announced["url"],
            control_url=announced["controlUrl"],
            kubeconfig=Path(announced["kubeconfig"]),
            pid=process.pid,
        )
    finally:
        await _stop(process)


@asynccontextmanager
async def worker_process(*args: str) -> AsyncIterator[int]:
    """A worker process (`python -m ARGS…`) that prints `worker polling` once it polls; yields its pid."""
    process, _ = await _spawn(list(args), ready=b"worker polling")
    try:
        yield process.pid
    finally:
        await _stop(process)


async def enter_together(
    stack: contextlib.AsyncExitStack, contexts: Sequence[AbstractAsyncContextManager[T]]
) -> list[T]:
    """Enter the contexts side by side (each starts a process that takes seconds to be ready) onto
    `stack`, which exits them; where one fails, those entered are still exited with the stack."""
    async with asyncio.TaskGroup() as entering:
        entered = [entering.create_task(stack.enter_async_context(context)) for context in contexts]
    return [task.result() for task in entered]


@dataclass(frozen=True, slots=True)
class RemediationStack:
    """A fleet process, a `gpuheal worker` process for it and a watch on its nodes' cordons."""

    fleet: Fleet
    task_queue: str
    cordons: CordonWatch
    # The pid of each worker process, by its role ("all", or "governor" and "remediations").
    worker_pids: dict[str, int]


@asynccontextmanager
async def remediation_stack(
    server: DevServer,
    state_dir: Path,
    *fleet_args: str,
    worker_args: Sequence[str] = (),
    governor_apart: bool = False,
) -> AsyncIterator[RemediationStack]:
    """Everything one benchmark remediates against, on the shared dev server.

    With `governor_apart`, the fleet's governor runs in a worker process of its own
    (`gpuheal worker --role governor` beside `--role remediations`).
    """
    task_queue = f"bench-{uuid.uuid4()}"
    async with fleet_process(state_dir, *fleet_args) as fleet, contextlib.AsyncExitStack() as workers:
        common = (
            "-m",
            "gpuheal",
            "worker",
            "--address",
            server.address,
            "--task-queue",
            task_queue,
            "--kubeconfig",
            str(fleet.kubeconfig),
            "--simulator-url",
            fleet.control_url,
            "--metrics-address",
            "",
            *worker_args,
        )
        roles = ("governor", "remediations") if governor_apart else ("all",)
        # The workers start side by side: each spends seconds importing and connecting.
        started = await enter_together(workers, [worker_process(*common, "--role", role) for role in roles])
        pids = dict(zip(roles, started, strict=True))
        async with watching_cordons(fleet.kubeconfig) as cordons:
            yield RemediationStack(fleet, task_queue, cordons, pids)
