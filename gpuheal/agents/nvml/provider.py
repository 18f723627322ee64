"""`NvmlProvider`: NVML's view of the node's GPUs, registered in the Device API and reported as health events.

`start()` initialises NVML, registers every GPU for XID events, registers every GPU in the Device
API (CreateGpu: name = UUID in lower case, spec.uuid = UUID, an initial `Healthy`=True condition;
one that is already there is fine), calls `on_registered(count)` (the agent opens the Device API's
readiness gate with it), takes a first reading of the health signals and then runs two loops until
`stop()`:

- XID events: a thread waits on NVML's event set with a bounded timeout (so `stop()` returns
  within about `event_wait`); each event becomes a health event with the catalog's action (fatal
  when the action is not NONE).
- polling every `poll_interval`: double-bit ECC errors, pending page retirement, pending or
  failed row remapping, and whether the GPU answers at all. A signal turning bad sends an unhealthy
  event; one turning good again sends a healthy event with the same check name; an unsupported
  signal is unknown and changes nothing. The rules and actions live in `verdict`.

A GPU already lost when NVML enumerates it does not stop the start: the GPUs that answer are
registered, and the lost one is reported as an unhealthy `NvmlGpuLost` event (RESTART_BM) naming
its index only, since NVML cannot tell its UUID.

The provider writes no GPU status after registration: the events go to the sink (the agent's
publisher), which is the one writer of the GPUs' `Healthy` condition. Events are handed over with
`hand_over`: while the sink is full, the loop that sent the event waits (and reads no more XIDs or
signals) instead of dropping it, and a polled change counts as reported only once the sink took its
event, so one the sink never took (the provider stopped, the poll was cancelled) is sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from gpuheal.agents.nvml.device_client import GpuRegistrar
from gpuheal.agents.nvml.interface import GpuInfo, GpuLostError, HealthSignals, Nvml, NvmlError, XidEvent
from gpuheal.agents.nvml.verdict import (
    AGENT,
    COMPONENT_CLASS,
    Check,
    Problem,
    lost_problems,
    polled_problems,
    signal_problem,
    xid_problem,
)
from gpuheal.agents.sink import DEFAULT_BACKOFF, Backoff, EventSink, hand_over
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.health import GPU_SERIAL, GPU_UUID, PCI, Entity, HealthEvent

log = logging.getLogger(__name__)

T = TypeVar("T")
OnRegistered = Callable[[int], Awaitable[None] | None]
Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _GpuState:
    """What the provider knows about one GPU between polls: the polled problems it last reported."""

    info: GpuInfo
    polled: dict[Check, Problem] = field(default_factory=dict)


class NvmlProvider:
    """Registers the node's GPUs, as NVML sees them, and reports their health; see the module docstring.

    `nvml` is a `RealNvml` on a GPU node or a `FakeNvml`; `device_api` is the Device API's socket
    path (or any gRPC target); `sink` receives every health event, tried again with `sink_backoff`
    while it is full; `node_name` names the node in them. `clock` stamps polled events and the
    registration (tests pin it).
    """

    def __init__(
        self,
        nvml: Nvml,
        device_api: str | Path,
        sink: EventSink,
        node_name: str,
        *,
        poll_interval: timedelta = timedelta(seconds=10),
        event_wait: timedelta = timedelta(seconds=0.5),
        rpc_timeout: timedelta = timedelta(seconds=10),
        on_registered: OnRegistered | None = None,
        clock: Clock = _utc_now,
        sink_backoff: Backoff = DEFAULT_BACKOFF,
    ) -> None:
        if poll_interval <= timedelta(0) or event_wait <= timedelta(0):
            raise ValueError("poll_interval and event_wait must be positive")
        self._nvml = nvml
        self._address = device_api
        self._sink = sink
        self._node = node_name
        self._poll_interval = poll_interval
        self._event_wait = event_wait
        self._rpc_timeout = rpc_timeout
        self._on_registered = on_registered
        self._clock = clock
        self._sink_backoff = sink_backoff
        self._states: dict[str, _GpuState] = {}
        self._polling = asyncio.Lock()  # one poll at a time: a change is recorded only after it was sent
        # One thread parks in the XID wait; the other serves every other NVML call, so a poll never
        # queues behind the wait and the default executor is left alone.
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="gpuheal-nvml")
        self._stopping = asyncio.Event()  # set to pause the loops (a release) or end them
        self._closing = asyncio.Event()  # set by stop() only: an event waiting for a full sink is given up
        self._tasks: list[asyncio.Task[None]] = []
        self._nvml_up = False
        self._closed = False
        self.xid_gpus: tuple[int, ...] = ()
        # When a poll last read every GPU and handed over every change (the agent's liveness, in its metrics).
        self.last_read: datetime | None = None

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
        try:
            await self._in_thread(self._nvml.init)
            self._nvml_up = True
            infos, lost = await self._in_thread(self._enumerate)
            # Registered before the Device API hears of the GPUs, so no XID in between is lost.
            self.xid_gpus = await self._in_thread(self._nvml.register_xid_events)
            self._states = {info.uuid: _GpuState(info) for info in infos}
            client = GpuRegistrar(self._address, rpc_timeout=self._rpc_timeout)
            try:
                created = 0
                for info in infos:
                    created += await client.register(info, self._clock())
            finally:
                await client.close()
            log.info(
                "NVML provider registered %d GPUs (%d new, %d already there)", len(infos), created, len(infos) - created
            )
            if self._on_registered is not None:
                result = self._on_registered(len(infos))
                if inspect.isawaitable(result):
                    await result
            for err in lost:
                log.warning("GPU %d is lost at enumeration: %s", err.index, err.detail)
                problem = signal_problem(Check.GPU_LOST, f"GPU is lost at enumeration ({err.detail})")
                await self._submit(None, problem, healthy=False, at=self._clock(), index=err.index)
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
        """Stop both loops and shut NVML down. Idempotent; a provider is not restarted.

        The XID waiter is not cancelled but allowed to come back from its bounded wait, because NVML
        must not be shut down under a thread still inside `nvmlEventSetWait`.
        """
        self._closed = True
        self._closing.set()
        self._stopping.set()
        tasks, self._tasks = self._tasks, []
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        # Draining the executor also waits out a wait whose task was cancelled from outside.
        await asyncio.to_thread(self._executor.shutdown, wait=True)
        if self._nvml_up:
            self._nvml_up = False
            await asyncio.to_thread(self._nvml.shutdown)

    @contextlib.asynccontextmanager
    async def released(self) -> AsyncIterator[None]:
        """Let go of NVML for the duration of the block, then take it up again where it left off.

        `nvidia-smi --gpu-reset` refuses a GPU that any process holds through NVML, this provider's
        XID event set included. Inside the block both loops are stopped and NVML is shut down;
        afterwards NVML starts again (with fresh handles: old ones need not survive a reset), XID
        events are registered again and both loops resume with the problems they knew, so a signal
        the reset cleared is reported healthy at the next poll. If NVML does not come back, the
        provider stays stopped and says so. A loop waiting for a full sink is waited for: its event
        is handed over first.
        """
        if self._closed or not self._nvml_up:
            yield
            return
        self._stopping.set()
        tasks, self._tasks = self._tasks, []
        await asyncio.gather(*tasks, return_exceptions=True)
        self._nvml_up = False
        await self._in_thread(self._nvml.shutdown)  # on the NVML executor: after any call still in it
        log.info("NVML released")
        try:
            yield
        finally:
            await self._take_up_again()

    async def _take_up_again(self) -> None:
        if self._closed:  # stopped meanwhile: nothing to resume
            return
        try:
            await self._in_thread(self._nvml.init)
            self._nvml_up = True
            self.xid_gpus = await self._in_thread(self._nvml.register_xid_events)
        except NvmlError as err:
            log.error("NVML did not come back after it was released (%s): no NVML monitoring until restart", err)
            return
        self._stopping = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._xid_loop(), name="gpuheal-nvml-xid"),
            asyncio.create_task(self._poll_loop(), name="gpuheal-nvml-poll"),
        ]
        log.info("NVML taken up again")

    # --- the two loops --------------------------------------------------------------------------------

    async def _xid_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                event = await self._in_thread(self._nvml.wait_xid_event, self._event_wait.total_seconds())
            except NvmlError as err:
                log.warning("waiting for XID events failed: %s", err)
                await self._pause(self._event_wait)
                continue
            if event is not None:
                await self._guarded(self.handle_xid(event))

    async def _poll_loop(self) -> None:
        while not await self._pause(self._poll_interval):
            await self._guarded(self.poll_once())

    async def _pause(self, pause: timedelta) -> bool:
        """Sleep up to `pause`, waking early when stopping; True when stopping."""
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=pause.total_seconds())
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
        """Report one XID event: fatal when the catalog's action is not NONE."""
        problem = xid_problem(event.xid)
        state = self._states.get(event.uuid)
        if state is None:
            log.warning(
                "XID %d on GPU %s, which NVML did not enumerate",
                event.xid,
                event.uuid,
                extra={"node": self._node, "gpu": event.uuid},
            )
        info = state.info if state is not None else None
        await self._submit(info, problem, healthy=False, at=event.timestamp, uuid_=event.uuid)

    async def poll_once(self) -> None:
        """Read every GPU's health signals once and send an event for each signal that changed.

        Polls run one at a time, and each change is recorded once the sink has taken its event, so
        the next poll sends again what this one could not (see the module docstring).
        """
        async with self._polling:
            readings = await self._in_thread(self._read_all)
            for state, reading in zip(self._states.values(), readings, strict=True):
                before = state.polled
                if isinstance(reading, GpuLostError):
                    after = lost_problems(before, reading.detail)
                elif isinstance(reading, NvmlError):
                    # The GPU's state is unknown: no change.
                    log.warning(
                        "reading GPU %s failed: %s",
                        state.info.uuid,
                        reading,
                        extra={"node": self._node, "gpu": state.info.uuid},
                    )
                    continue
                else:
                    after = polled_problems(before, reading)
                if not await self._report_changes(state, before, after):
                    return
                state.polled = after
            self.last_read = self._clock()

    async def _report_changes(
        self, state: _GpuState, before: dict[Check, Problem], after: dict[Check, Problem]
    ) -> bool:
        """Send an event for each check that recovered or turned bad, recording each once it is taken;
        False when the provider stops first."""
        for check in before.keys() - after.keys():
            if not await self._submit(state.info, before[check], healthy=True, at=self._clock()):
                return False
            state.polled = {known: problem for known, problem in state.polled.items() if known is not check}
        for check in after.keys() - before.keys():
            if not await self._submit(state.info, after[check], healthy=False, at=self._clock()):
                return False
            state.polled = {**state.polled, check: after[check]}
        return True

    # --- helpers --------------------------------------------------------------------------------------

    def _enumerate(self) -> tuple[list[GpuInfo], list[GpuLostError]]:
        infos: list[GpuInfo] = []
        lost: list[GpuLostError] = []
        for index in range(self._nvml.device_count()):
            try:
                infos.append(self._nvml.device_info(index))
            except GpuLostError as err:
                lost.append(err)
        return infos, lost

    def _read_all(self) -> Sequence[HealthSignals | NvmlError]:
        # One thread hop for the whole node: 1,024 GPUs cost one executor round trip, not 1,024.
        readings: list[HealthSignals | NvmlError] = []
        for state in self._states.values():
            try:
                readings.append(self._nvml.health_signals(state.info.index))
            except NvmlError as err:
                readings.append(err)
        return readings

    async def _submit(
        self,
        info: GpuInfo | None,
        problem: Problem,
        *,
        healthy: bool,
        at: datetime,
        uuid_: str = "",
        index: int | None = None,
    ) -> bool:
        """Send one event about a GPU: `info` when NVML enumerated it, else its `uuid_` (an XID from a
        GPU not enumerated) or only its `index` (a GPU lost at enumeration: no entity, a node-wide fault).

        Waits while the sink is full; False only when the provider stops before the sink took the
        event. A sink that fails otherwise is logged, and the event counts as sent.
        """
        action = RecommendedAction.NONE if healthy else problem.action
        entities: tuple[Entity, ...] = ()
        metadata: dict[str, str] = {}
        if info is not None:
            entities = (Entity(type=GPU_UUID, value=info.uuid), Entity(type=PCI, value=info.pci))
            if info.serial:
                entities += (Entity(type=GPU_SERIAL, value=info.serial),)
            metadata = {"gpu_index": str(info.index), "pci_bus_id": info.pci_bus_id, "gpu_name": info.name}
            uuid_ = info.uuid
        elif uuid_:
            entities = (Entity(type=GPU_UUID, value=uuid_),)
        elif index is not None:
            metadata = {"gpu_index": str(index)}
        subject = uuid_ or f"index {index}"
        message = f"{problem.message} (recovered)" if healthy else problem.message
        event = HealthEvent(
            id=str(uuid.uuid4()),
            node=self._node,
            agent=AGENT,
            component_class=COMPONENT_CLASS,
            check_name=problem.check.value,
            is_fatal=action is not RecommendedAction.NONE,
            is_healthy=healthy,
            message=f"{message} on GPU {subject}",
            action=action,
            error_codes=(problem.error_code,),
            entities=entities,
            metadata=metadata,
            generated_at=at,
        )
        try:
            return await hand_over(self._sink, event, stop=self._closing, backoff=self._sink_backoff)
        except Exception:
            log.exception(
                "the event sink refused %s/%s",
                event.check_name,
                event.id,
                extra={"node": event.node, "gpu": event.gpu_uuids},
            )
        return True

    async def _in_thread(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
