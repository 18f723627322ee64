"""`NvmlProvider`: NVML's view of the node's GPUs, kept in the Device API and reported as health events.

`start()` initialises NVML, registers every GPU for XID events, registers every GPU in the Device
API (CreateGpu: name = UUID in lower case, spec.uuid = UUID; one that is already there is fine),
calls `on_registered(count)` (the agent opens the Device API's readiness gate with it), takes a
first reading of the health signals and then runs two loops until `stop()`:

- XID events: a thread waits on NVML's event set with a bounded timeout (so `stop()` returns
  within about `event_wait_s`); each event becomes a health event with the catalog's action, and a
  fatal one (action not NONE) makes the GPU's `Healthy` condition False until `clear()`.
- polling every `poll_interval_s`: double-bit ECC errors, pending page retirement, pending or
  failed row remapping, and whether the GPU answers at all. A signal turning bad raises a problem
  and an unhealthy event; one turning good again drops it and sends a healthy event; an unsupported
  signal is unknown and changes nothing. The rules and actions live in `verdict`.

The condition is written only when the GPU's verdict changes. A write that fails is retried at the
next poll, because the provider compares what it wants written with what it last wrote. Nothing is
written for a GPU this provider has not seen fail, so a fault recorded before a restart stays.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from gpuheal.agents.nvml.device_client import DeviceApiClient, DeviceApiWriteError
from gpuheal.agents.nvml.interface import GpuInfo, GpuLostError, HealthSignals, Nvml, NvmlError, XidEvent
from gpuheal.agents.nvml.verdict import (
    AGENT,
    COMPONENT_CLASS,
    Check,
    Problem,
    Verdict,
    lost_problems,
    polled_problems,
    verdict,
    xid_problem,
)
from gpuheal.agents.sink import EventSink
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.health import GPU_UUID, PCI, Entity, HealthEvent

log = logging.getLogger(__name__)

T = TypeVar("T")
OnRegistered = Callable[[int], Awaitable[None] | None]
Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _GpuState:
    """What the provider knows about one GPU between loops; guarded by `lock`."""

    info: GpuInfo
    xids: dict[int, Problem] = field(default_factory=dict)
    polled: dict[Check, Problem] = field(default_factory=dict)
    written: Verdict | None = None  # None: nothing written by this provider yet
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def verdict(self) -> Verdict:
        return verdict([*self.xids.values(), *self.polled.values()])


class NvmlProvider:
    """Keeps the node's GPUs, as NVML sees them, in the Device API; see the module docstring.

    `nvml` is a `RealNvml` on a GPU node or a `FakeNvml`; `device_api` is the Device API's socket
    path (or any gRPC target); `sink` receives every health event; `node_name` names the node in
    them. `clock` stamps events and condition transitions (tests pin it).
    """

    def __init__(
        self,
        nvml: Nvml,
        device_api: str | Path,
        sink: EventSink,
        node_name: str,
        *,
        poll_interval_s: float = 10.0,
        event_wait_s: float = 0.5,
        rpc_timeout_s: float = 10.0,
        on_registered: OnRegistered | None = None,
        clock: Clock = _utc_now,
    ) -> None:
        if poll_interval_s <= 0 or event_wait_s <= 0:
            raise ValueError("poll_interval_s and event_wait_s must be positive")
        self._nvml = nvml
        self._address = device_api
        self._sink = sink
        self._node = node_name
        self._poll_interval = poll_interval_s
        self._event_wait = event_wait_s
        self._rpc_timeout = rpc_timeout_s
        self._on_registered = on_registered
        self._clock = clock
        self._states: dict[str, _GpuState] = {}
        self._client: DeviceApiClient | None = None
        # One thread parks in the XID wait; the other serves every other NVML call, so a poll never
        # queues behind the wait and the default executor is left alone.
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="gpuheal-nvml")
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._nvml_up = False
        self.xid_gpus: tuple[int, ...] = ()

    # --- lifecycle ----------------------------------------------------------------------------------

    async def __aenter__(self) -> NvmlProvider:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def gpus(self) -> tuple[GpuInfo, ...]:
        """The GPUs NVML enumerated, in index order (empty before `start`)."""
        return tuple(state.info for state in self._states.values())

    async def start(self) -> None:
        """Enumerate, register, report readiness, take a first reading and start both loops.

        Raises `NvmlUnavailableError` when NVML cannot be used, `DeviceApiWriteError` when the
        Device API refuses a registration or cannot be reached within the RPC timeout.
        """
        await self._in_thread(self._nvml.init)
        self._nvml_up = True
        try:
            infos = await self._in_thread(self._enumerate)
            # Registered before the Device API hears of the GPUs, so no XID in between is lost.
            self.xid_gpus = await self._in_thread(self._nvml.register_xid_events)
            self._states = {info.uuid: _GpuState(info) for info in infos}
            self._client = DeviceApiClient(self._address, rpc_timeout_s=self._rpc_timeout)
            created = 0
            for info in infos:
                created += await self._client.register(info, self._clock())
            log.info(
                "NVML provider registered %d GPUs (%d new, %d already there)", len(infos), created, len(infos) - created
            )
            if self._on_registered is not None:
                result = self._on_registered(len(infos))
                if inspect.isawaitable(result):
                    await result
            await self.poll_once()
        except BaseException:
            await self.stop()
            raise
        self._tasks = [
            asyncio.create_task(self._xid_loop(), name="gpuheal-nvml-xid"),
            asyncio.create_task(self._poll_loop(), name="gpuheal-nvml-poll"),
        ]

    async def run(self) -> None:
        """Start, then run until `stop()` (or cancellation); always shuts NVML down."""
        await self.start()
        try:
            await self._stopping.wait()
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Stop both loops, shut NVML down and close the channel. Idempotent; a provider is not restarted.

        The XID waiter is not cancelled but allowed to come back from its bounded wait, because NVML
        must not be shut down under a thread still inside `nvmlEventSetWait`.
        """
        self._stopping.set()
        tasks, self._tasks = self._tasks, []
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        # Draining the executor also waits out a wait whose task was cancelled from outside.
        await asyncio.to_thread(self._executor.shutdown, wait=True)
        if self._nvml_up:
            self._nvml_up = False
            await asyncio.to_thread(self._nvml.shutdown)
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    # --- the two loops --------------------------------------------------------------------------------

    async def _xid_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                event = await self._in_thread(self._nvml.wait_xid_event, self._event_wait)
            except NvmlError as err:
                log.warning("waiting for XID events failed: %s", err)
                await self._pause(self._event_wait)
                continue
            if event is not None:
                await self._guarded(self.handle_xid(event))

    async def _poll_loop(self) -> None:
        while not await self._pause(self._poll_interval):
            await self._guarded(self.poll_once())

    async def _pause(self, seconds: float) -> bool:
        """Sleep up to `seconds`, waking early when stopping; True when stopping."""
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True

    @staticmethod
    async def _guarded(work: Awaitable[None]) -> None:
        # A loop survives anything one round throws: the next round starts from the same state.
        try:
            await work
        except Exception:
            log.exception("NVML provider round failed")

    # --- what the loops do (public so the agent and tests can drive a round directly) ---------------

    async def handle_xid(self, event: XidEvent) -> None:
        """Report one XID event; a fatal one marks the GPU unhealthy until `clear()`."""
        problem = xid_problem(event.xid)
        state = self._states.get(event.uuid)
        if state is None:
            log.warning("XID %d on GPU %s, which NVML did not enumerate", event.xid, event.uuid)
            await self._submit(None, problem, healthy=False, at=event.timestamp, uuid_=event.uuid)
            return
        async with state.lock:
            if problem.action is not RecommendedAction.NONE:
                state.xids[event.xid] = problem
            await self._write(state)
        await self._submit(state.info, problem, healthy=False, at=event.timestamp)

    async def poll_once(self) -> None:
        """Read every GPU's health signals once, then update conditions and send events for changes."""
        readings = await self._in_thread(self._read_all)
        for state, reading in zip(self._states.values(), readings, strict=True):
            async with state.lock:
                before = state.polled
                if isinstance(reading, GpuLostError):
                    state.polled = lost_problems(before, reading.detail)
                elif isinstance(reading, NvmlError):
                    log.warning("reading GPU %s failed: %s", state.info.uuid, reading)  # unknown: no change
                else:
                    state.polled = polled_problems(before, reading)
                after = state.polled
                await self._write(state)
            for check in before.keys() - after.keys():
                await self._submit(state.info, before[check], healthy=True, at=self._clock())
            for check in after.keys() - before.keys():
                await self._submit(state.info, after[check], healthy=False, at=self._clock())

    async def clear(self, gpu_uuid: str) -> None:
        """Forget the GPU's XIDs (after it was repaired) and rewrite its condition from the signals."""
        state = self._states[gpu_uuid]
        async with state.lock:
            state.xids.clear()
            # Forced: even a GPU this provider never wrote may carry our XID from before a restart.
            await self._write(state, force=True)

    # --- helpers --------------------------------------------------------------------------------------

    def _enumerate(self) -> list[GpuInfo]:
        return [self._nvml.device_info(i) for i in range(self._nvml.device_count())]

    def _read_all(self) -> Sequence[HealthSignals | NvmlError]:
        # One thread hop for the whole node: 1,024 GPUs cost one executor round trip, not 1,024.
        readings: list[HealthSignals | NvmlError] = []
        for state in self._states.values():
            try:
                readings.append(self._nvml.health_signals(state.info.index))
            except NvmlError as err:
                readings.append(err)
        return readings

    async def _write(self, state: _GpuState, *, force: bool = False) -> None:
        wanted = state.verdict
        unchanged = wanted == state.written or (state.written is None and wanted.healthy)
        if self._client is None or (unchanged and not force):
            return
        try:
            await self._client.write(state.info, wanted, self._clock())
        except DeviceApiWriteError as err:
            log.warning("writing GPU %s condition failed (retried at the next poll): %s", state.info.uuid, err)
            return
        state.written = wanted

    async def _submit(
        self, info: GpuInfo | None, problem: Problem, *, healthy: bool, at: datetime, uuid_: str = ""
    ) -> None:
        action = RecommendedAction.NONE if healthy else problem.action
        entities = (
            (Entity(type=GPU_UUID, value=info.uuid), Entity(type=PCI, value=info.pci))
            if info is not None
            else (Entity(type=GPU_UUID, value=uuid_),)
        )
        metadata = {"gpu_index": str(info.index), "pci_bus_id": info.pci_bus_id, "gpu_name": info.name} if info else {}
        message = f"{problem.message} (recovered)" if healthy else problem.message
        event = HealthEvent(
            id=str(uuid.uuid4()),
            node=self._node,
            agent=AGENT,
            component_class=COMPONENT_CLASS,
            check_name=problem.check.value,
            is_fatal=action is not RecommendedAction.NONE,
            is_healthy=healthy,
            message=f"{message} on GPU {info.uuid if info else uuid_}",
            action=action,
            error_codes=(problem.error_code,),
            entities=entities,
            metadata=metadata,
            generated_at=at,
        )
        try:
            await self._sink.submit(event)
        except Exception:
            log.exception("the event sink refused %s/%s", event.check_name, event.id)

    async def _in_thread(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
