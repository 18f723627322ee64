"""The kernel log monitor: lines in, health events out.

lines → `KmsgParser` (one event per report) → `decide` (action, fatality) → `Deduper` (one event per
GPU, kind and code per window) → `HealthEvent` → the sink.

Reboots: the monitor keeps the boot ID it last saw (in `state_path` when given, so the knowledge
survives the reboot that replaces the process). When the boot ID changes, every address may name
another GPU and every earlier fault is history: it forgets its parser and dedupe state and reports
each known GPU healthy once ("GPUs healthy after reboot"), so consumers clear what they hold. The
boot ID is read with the lines and, while `run` runs, every `boot_check_interval` seconds without
them: on a real node a reboot restarts the agent, but a simulated node reboots under a running one.

`on_event`, when given, sees every parsed event (with the GPU UUID it resolved to) before flood
control drops repeats: the GPU reset watcher learns of the driver's reset acknowledgements from it,
including a second reset of a GPU inside one dedupe window.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterable, Callable
from datetime import UTC, datetime
from pathlib import Path

from gpuheal.agents.durable_file import write_durably
from gpuheal.agents.kmsg.decide import Decision, XidPolicy, decide
from gpuheal.agents.kmsg.dedupe import Deduper
from gpuheal.agents.kmsg.gpumap import GpuMap
from gpuheal.agents.kmsg.parser import EventKind, KernelEvent, KmsgParser
from gpuheal.agents.sink import EventSink
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.health import CHECK_GPU_RESET, GPU_UUID, PCI, Entity, HealthEvent

log = logging.getLogger(__name__)

AGENT = "gpuheal-kmsg"
COMPONENT_CLASS = "GPU"
CHECK_XID = "SysLogsXIDError"
CHECK_SXID = "SysLogsSXIDError"
CHECK_RESET = CHECK_GPU_RESET
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
HEALTHY_AFTER_REBOOT = "GPUs healthy after reboot"

_CHECKS: dict[EventKind, str] = {
    EventKind.XID: CHECK_XID,
    EventKind.SXID: CHECK_SXID,
    EventKind.GPU_RESET: CHECK_RESET,
    EventKind.GPU_RESET_FAILED: CHECK_RESET,
}
_LABELS: dict[EventKind, str] = {
    EventKind.XID: "XID",
    EventKind.SXID: "SXid",
    EventKind.GPU_RESET: "GPU reset",
    EventKind.GPU_RESET_FAILED: "GPU reset failed",
}
_RESETS = (EventKind.GPU_RESET, EventKind.GPU_RESET_FAILED)

# The dedupe key: (GPU UUID, or the normalised PCI address when no UUID is known; kind; code).
DedupeKey = tuple[str, EventKind, int]
# Told of every parsed event and the GPU UUID it names (None when unknown); must not block.
EventObserver = Callable[[KernelEvent, str | None], None]


def read_boot_id(path: Path = BOOT_ID) -> str | None:
    """The kernel's boot ID, or None when it can't be read."""
    try:
        return path.read_text("ascii", errors="replace").strip() or None
    except OSError:
        return None


class KernelLogMonitor:
    """Turns kernel log lines into health events for one node.

    `clock` drives dedupe windows and boot-ID checks (monotonic seconds); `now` stamps events.
    """

    def __init__(
        self,
        node: str,
        sink: EventSink,
        *,
        policy: XidPolicy | None = None,
        gpu_map: GpuMap | None = None,
        dedupe_window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        boot_id_path: Path = BOOT_ID,
        state_path: Path | None = None,
        boot_check_interval: float = 5.0,
        on_event: EventObserver | None = None,
    ) -> None:
        self.node = node
        self._sink = sink
        self._policy = policy
        self._gpus = gpu_map if gpu_map is not None else GpuMap(clock=clock)
        self._parser = KmsgParser()
        self._dedupe: Deduper[DedupeKey] = Deduper(dedupe_window, clock=clock)
        self._clock = clock
        self._now = now
        self._boot_id_path = boot_id_path
        self._state_path = state_path
        self._boot_check_interval = boot_check_interval
        self._on_event = on_event
        self._boot_id: str | None = None
        self._boot_checked_at: float | None = None
        self._boot_lock = asyncio.Lock()
        # Addresses that appeared in events since the last boot: PCI key → (GPU UUID or None, kind).
        self._seen: dict[str, tuple[str | None, EventKind]] = {}

    @property
    def boot_id(self) -> str | None:
        return self._boot_id

    async def start(self) -> None:
        """Take the boot ID; if the persisted one differs, this node rebooted since: report it healthy."""
        current = await asyncio.to_thread(read_boot_id, self._boot_id_path)
        previous = await asyncio.to_thread(self._load_state) if self._state_path else None
        self._boot_id = current
        self._boot_checked_at = self._clock()
        if current is not None and previous is not None and previous != current:
            await self._after_reboot(previous)
        await self._save_state()

    async def check_boot(self) -> bool:
        """Read the boot ID now; True (after resetting and reporting healthy) when it changed."""
        async with self._boot_lock:  # the line path and the timer must not both report one reboot
            self._boot_checked_at = self._clock()
            current = await asyncio.to_thread(read_boot_id, self._boot_id_path)
            if current is None or current == self._boot_id:
                return False
            previous, self._boot_id = self._boot_id, current
            if previous is None:
                await self._save_state()
                return False
            await self._after_reboot(previous)
            await self._save_state()
            return True

    async def feed(self, line: str | bytes) -> HealthEvent | None:
        """Process one line; the event delivered to the sink for it, if any."""
        if self._boot_checked_at is None or self._clock() - self._boot_checked_at >= self._boot_check_interval:
            await self.check_boot()
        try:
            parsed = self._parser.feed(line)
        except Exception:  # the parser is built never to raise; a bug there must not stop the monitor
            log.exception("kernel log parser failed on a line")
            return None
        if parsed is None:
            return None
        return await self._handle(parsed)

    async def run(self, lines: AsyncIterable[str | bytes]) -> None:
        """Start, then process lines until the source ends; a failing sink costs an event, not the monitor."""
        await self.start()
        boot = asyncio.create_task(self._watch_boot(), name="gpuheal-kmsg-boot")
        try:
            async for line in lines:
                try:
                    await self.feed(line)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("delivering a kernel log event failed")
        finally:
            boot.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await boot

    async def _watch_boot(self) -> None:
        """Check the boot ID when no line has made the monitor look at it for a while."""
        while True:
            await asyncio.sleep(self._boot_check_interval)
            checked = self._boot_checked_at
            if checked is not None and self._clock() - checked < self._boot_check_interval:
                continue
            try:
                await self.check_boot()
            except Exception:
                log.exception("checking the boot ID failed")

    async def _handle(self, parsed: KernelEvent) -> HealthEvent | None:
        key = parsed.pci_key
        gpu_uuid = parsed.gpu_uuid
        if gpu_uuid is None and parsed.kind is not EventKind.SXID:
            gpu_uuid = self._gpus.lookup(parsed.pci)
        self._seen[key] = (gpu_uuid or self._seen.get(key, (None, parsed.kind))[0], parsed.kind)
        if self._on_event is not None:
            try:
                self._on_event(parsed, gpu_uuid)
            except Exception:  # an observer's bug must not cost the node its kernel-log events
                log.exception("a kernel event observer failed")
        identity = gpu_uuid or key
        window = (identity, parsed.kind, parsed.code)
        repeats = self._dedupe.admit(window)
        if repeats is None:
            return None
        if parsed.kind is EventKind.GPU_RESET:
            # A reset GPU starts afresh: its next fault is news even inside an old window. A failed
            # reset changes nothing: the GPU's faults stand.
            self._dedupe.forget(lambda k: k[0] in (identity, key) and k[1] not in _RESETS)
        event = self._event(parsed, decide(parsed, self._policy), gpu_uuid, repeats)
        try:
            await self._sink.submit(event)
        except BaseException:
            # Not delivered: the next occurrence must not be folded into a window nobody heard of.
            self._dedupe.forget(lambda k: k == window)
            raise
        return event

    def _event(self, parsed: KernelEvent, decision: Decision, gpu_uuid: str | None, repeats: int) -> HealthEvent:
        entities = [Entity(type=GPU_UUID, value=gpu_uuid)] if gpu_uuid else []
        entities.append(Entity(type=PCI, value=parsed.pci))
        metadata = {"kind": str(parsed.kind), "pci": parsed.pci, "decided_by": decision.source}
        if repeats:
            metadata["repeats"] = str(repeats)  # identical lines dropped in this key's previous window
        if parsed.pid is not None:
            metadata["pid"] = str(parsed.pid)
        if parsed.process:
            metadata["process"] = parsed.process
        if parsed.device:
            metadata["nvswitch"] = parsed.device
        if parsed.fallen_off_bus:
            metadata["fallen_off_bus"] = "true"
        if self._boot_id:
            metadata["boot_id"] = self._boot_id
        codes = _error_codes(parsed)
        return HealthEvent(
            id=str(uuid.uuid4()),
            node=self.node,
            agent=AGENT,
            component_class=COMPONENT_CLASS,
            check_name=_CHECKS[parsed.kind],
            is_fatal=decision.fatal,
            # Only a reset acknowledgement says a GPU is well; a non-fatal XID or a failed reset is
            # still a problem seen (informational: it opens and closes no fault).
            is_healthy=parsed.kind is EventKind.GPU_RESET,
            message=_message(parsed),
            action=decision.action,
            error_codes=codes,
            entities=tuple(entities),
            metadata=metadata,
            generated_at=self._now(),
        )

    async def _after_reboot(self, previous: str) -> None:
        log.info("boot ID changed from %s to %s: clearing kernel log state", previous, self._boot_id)
        # Every GPU this node is known to have: from faults seen, `GPU at PCI` lines and the GPU map.
        gpus: dict[str, str | None] = {
            key: gpu_uuid for key, (gpu_uuid, kind) in self._seen.items() if kind is not EventKind.SXID
        }
        switches = sorted(key for key, (_, kind) in self._seen.items() if kind is EventKind.SXID)
        gpus |= self._parser.known_gpus()
        self._parser.reset()
        self._dedupe.clear()
        self._seen.clear()
        await asyncio.to_thread(self._gpus.refresh)
        gpus |= self._gpus.known()
        for key, gpu_uuid in sorted(gpus.items()):
            await self._sink.submit(self._healthy(CHECK_XID, key, gpu_uuid))
        for key in switches:
            await self._sink.submit(self._healthy(CHECK_SXID, key, None))

    def _healthy(self, check: str, pci: str, gpu_uuid: str | None) -> HealthEvent:
        entities = [Entity(type=GPU_UUID, value=gpu_uuid)] if gpu_uuid else []
        entities.append(Entity(type=PCI, value=pci))
        return HealthEvent(
            id=str(uuid.uuid4()),
            node=self.node,
            agent=AGENT,
            component_class=COMPONENT_CLASS,
            check_name=check,
            is_fatal=False,
            is_healthy=True,
            message=HEALTHY_AFTER_REBOOT,
            action=RecommendedAction.NONE,
            entities=tuple(entities),
            metadata={"boot_id": self._boot_id or "", "pci": pci},
            generated_at=self._now(),
        )

    def _load_state(self) -> str | None:
        assert self._state_path is not None
        try:
            state = json.loads(self._state_path.read_text("utf-8"))
        except (OSError, ValueError):
            return None
        boot_id = state.get("boot_id") if isinstance(state, dict) else None
        return boot_id if isinstance(boot_id, str) else None

    async def _save_state(self) -> None:
        if self._state_path is None or self._boot_id is None:
            return
        await asyncio.to_thread(_record_boot_id, self._state_path, json.dumps({"boot_id": self._boot_id}))


def _record_boot_id(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_durably(path, text.encode())
    except OSError:
        log.warning("could not record the boot ID in %s", path, exc_info=True)


def _message(parsed: KernelEvent) -> str:
    """`XID 79 (0000:3b:00): GPU has fallen off the bus.`, `SXid 20034 (0000:05:00.0): Fatal, ...`."""
    if parsed.kind in _RESETS:
        head = f"{_LABELS[parsed.kind]} ({parsed.pci})"
    else:
        head = f"{_LABELS[parsed.kind]} {parsed.code} ({parsed.pci})"
    return f"{head}: {parsed.message}" if parsed.message else head


def _error_codes(parsed: KernelEvent) -> tuple[str, ...]:
    """XIDs travel as the bare number (health events read that as the XID); NVSwitch SXids are
    prefixed so an SXid is never taken for an XID of the same number."""
    if parsed.kind in _RESETS:
        return ()
    if parsed.kind is EventKind.SXID:
        return (f"SXID-{parsed.code}",)
    return (str(parsed.code),)
