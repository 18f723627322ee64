"""The kernel log monitor: lines in, health events out.

lines → `KmsgParser` (one event per report) → `decide` (action, fatality) → `Deduper` (one event per
GPU, kind and code per window) → `HealthEvent` → the sink.

Restarts: with a `state_path`, the monitor keeps there (see `state`) the boot ID it last saw and the
position after the last line it handled, so a restarted agent reads on from there: an XID written
while the agent was down is reported once, and what was reported before is not reported again; what
the parser had learned goes with the position (the GPU names, a fallen-off report awaiting its other
half), so a report the restart split is read as one. A
position is saved right after a line's event was handed to the sink (delivered or spooled), and
after other lines at most every `save_interval` seconds and when the monitor stops (a stop lets the
hand-over under way finish first, for up to FINISH_ON_STOP, so an event the sink took is not reported
again by the next start); so a crash replays rather than skips. A replayed line's event has the id it had the first time (derived from
the node, the boot, the position and the line), and the workflow counts each event id once; only
a crash within `save_interval` of a repeat that flood control held back can report that repeat anew.
A sink that is full (`SinkFull`: the publisher can hold no more faults) is waited for (`hand_over`):
the monitor reads nothing more meanwhile and the line's position does not move until its event is
taken, so a full spool delays a fault and never loses it. A sink that fails otherwise costs the
event on this run, but not the line: the position stays before it for the rest of the run, so the
next start reads it (and what followed, with the same event ids) again.
Where `run` starts reading (`start_point`): after the saved position when the source is read from
where it left off (a kmsg sequence number only on the boot it was read in); from the start when
nothing was saved for this boot (the whole ring buffer after a reboot); from the start again when it
began there on this boot and has read no line since; from the end when an agent that saved no
position (an older version) already read this boot's log. An end is made a position at once (the
file's size and the bytes before it, the last sequence number in the ring) and saved, so a restart
before the first line reads on from there instead of from a later end. A saved sequence number beyond
the ring's last record is not of this ring: logged, and the ring is read from its start.

Reboots: the monitor keeps the boot ID it last saw (in `state_path` when given, so the knowledge
survives the reboot that replaces the process). When the boot ID changes, every address may name
another GPU and every earlier fault is history: it forgets its parser and dedupe state and reports
each known GPU healthy once ("GPUs healthy after reboot"), so consumers clear what they hold. The
boot ID is read with the lines and, while `run` runs, every `boot_check_interval` seconds without
them: on a real node a reboot restarts the agent, but a simulated node reboots under a running one.

Flood control and the end of a fault. A window holds back repeats of what was reported, but the first
fault after the node was repaired must never be folded into a window opened before the repair. On a
real node a reboot restarts the agent; a simulated node reboots under a running one, whose monitor
sees the new boot ID (read every `boot_check_interval` seconds, and again before a repeat is dropped
when it was last read more than `_DROP_BOOT_CHECK` seconds ago) and forgets every window. A GPU
reset the driver acknowledges forgets that GPU's windows. What is left is a remediation that ends
without either (a person repaired the node and approved, or took it back): the agent learns of that
from its node's marks (`holds`) and calls `remediation_ended`.

`on_event`, when given, sees every parsed event (with the GPU UUID it resolved to) before flood
control drops repeats: the GPU reset handler learns of the driver's reset acknowledgements from it,
including a second reset of a GPU inside one dedupe window. It sees only lines read after the
follower first caught up with the log: a line of the backlog (written before the agent started, and
read again after a restart) is old news, and must not answer a reset ordered now. `on_caught_up`
runs once every line of the backlog has been handled (the reset handler takes its mark after that,
so the acknowledgement of a reset it orders is never read as backlog).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from gpuheal.agents.kmsg.decide import EventAction, XidPolicy, decide
from gpuheal.agents.kmsg.dedupe import Deduper, Released
from gpuheal.agents.kmsg.follow import KernelLog, KmsgPosition, LogLine, Position, ReadFrom, StartAt
from gpuheal.agents.kmsg.gpumap import GpuMap
from gpuheal.agents.kmsg.parser import EventKind, KernelEvent, KmsgParser
from gpuheal.agents.kmsg.state import MonitorState, load_state, save_state
from gpuheal.agents.sink import EventSink, hand_over
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

# A repeat is dropped only after the boot ID was read at most this long ago (seconds).
_DROP_BOOT_CHECK = 0.1

# How long a stop waits for the line being handed to the sink (`_feed_through`).
FINISH_ON_STOP = timedelta(seconds=5)
# The namespace of the ids of events read at a known position (uuid5 of node, position and line).
_EVENT_IDS = uuid.UUID("6f0c9a52-5d0e-4e8f-a3a1-2b7c4d9e1f30")

# The dedupe key: (GPU UUID, or the normalised PCI address when no UUID is known; kind; code).
DedupeKey = tuple[str, EventKind, int]
# Told of every parsed event and the GPU UUID it names (None when unknown); must not block.
EventObserver = Callable[[KernelEvent, str | None], None]


@dataclass(frozen=True, slots=True)
class _Occurrence:
    """A parsed line as flood control keeps its last dropped repeat: enough to report it later."""

    parsed: KernelEvent
    gpu_uuid: str | None
    position: Position | None


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
        save_interval: float = 1.0,
        end_grace: float = 30.0,
        on_event: EventObserver | None = None,
        on_caught_up: Callable[[], None] | None = None,
        on_line: Callable[[bool], None] | None = None,
    ) -> None:
        self.node = node
        self._sink = sink
        self._policy = policy
        self._gpus = gpu_map if gpu_map is not None else GpuMap(clock=clock)
        self._parser = KmsgParser()
        self._dedupe: Deduper[DedupeKey, _Occurrence] = Deduper(dedupe_window, clock=clock)
        self._clock = clock
        self._now = now
        self._boot_id_path = boot_id_path
        self._state_path = state_path
        self._boot_check_interval = boot_check_interval
        self._save_interval = save_interval
        self._end_grace = end_grace
        self._on_event = on_event
        self._on_caught_up = on_caught_up
        # Told of every line read, and whether the parser found a GPU event in it (the agent's metrics).
        self._on_line = on_line
        self._saved = MonitorState()  # as found at start
        # The position after the last line handled (and the boot it was read in), and when it was saved.
        self._position: Position | None = None
        self._position_boot_id: str | None = None
        self._position_saved_at: float | None = None
        self._position_dirty = False
        # Windows `remediation_ended` released whose last repeat could not be handed over yet.
        self._unreported: list[Released[DedupeKey, _Occurrence]] = []
        # Set when a line's event could not be handed over: the position no longer moves on this run.
        self._held_before_failure = False
        self._writing: asyncio.Future[bool] | None = None  # the last save asked for
        self._edge: Literal["start", "end"] | None = None  # "start" when reading began there, until a line is read
        # Where `run` began reading its `KernelLog` (None until it chose).
        self.reading_from: StartAt | None = None
        self._boot_id: str | None = None
        self._boot_checked_at: float | None = None
        self._boot_lock = asyncio.Lock()
        # Addresses that appeared in events since the last boot: PCI key → (GPU UUID or None, kind).
        self._seen: dict[str, tuple[str | None, EventKind]] = {}

    @property
    def boot_id(self) -> str | None:
        return self._boot_id

    async def start(self) -> None:
        """Take the boot ID and the saved state; if the saved boot differs, this node rebooted since:
        report it healthy."""
        current = await asyncio.to_thread(read_boot_id, self._boot_id_path)
        if self._state_path is not None:
            self._saved = await asyncio.to_thread(load_state, self._state_path)
        previous = self._saved.boot_id
        self._boot_id = current
        self._position, self._position_boot_id = self._saved.position, self._saved.position_boot_id
        if self._saved.parser is not None:
            self._parser.restore(self._saved.parser)
        self._boot_checked_at = self._clock()
        if current is not None and previous is not None and previous != current:
            await self._after_reboot(previous)
        await self._save_state()

    def start_point(self, source: KernelLog) -> StartAt:
        """Where to begin reading `source`, after `start` (see the module docstring)."""
        if source.read_from is ReadFrom.START:
            return "start"
        if source.read_from is ReadFrom.END:
            return "end"
        saved = self._saved.position_for(self._boot_id)
        if saved is not None and source.fits(saved):
            return saved
        if self._boot_id is None or self._saved.boot_id != self._boot_id or self._saved.position is not None:
            return "start"
        if self._saved.edge is None:
            log.info("no position was saved on this boot (an older agent read the log): reading from its end")
            return "end"
        return self._saved.edge  # nothing read on this boot since beginning there

    async def _settle(self, source: KernelLog, start_at: StartAt) -> StartAt:
        """`start_at` made a position that stays true across a restart: the end is where the source ends
        now (the start, when it holds nothing yet), and a saved sequence number beyond the ring's last
        record is not of this ring (the ring is read from its start)."""
        if start_at == "end":
            end = await asyncio.to_thread(source.end)
            return "start" if end is None else end
        if isinstance(start_at, KmsgPosition):
            end = await asyncio.to_thread(source.end)
            if isinstance(end, KmsgPosition) and end.seq < start_at.seq:
                log.warning(
                    "the saved kernel-log position (after record %d) is beyond the ring's last record (%d): "
                    "it is not of this ring; reading the ring from its start",
                    start_at.seq,
                    end.seq,
                )
                return "start"
        return start_at

    def _boot_stale(self) -> bool:
        """Whether the boot ID was read too long ago to drop a repeat on its word."""
        checked_at = self._boot_checked_at
        return checked_at is None or self._clock() - checked_at >= _DROP_BOOT_CHECK

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

    async def feed(
        self, line: str | bytes, position: Position | None = None, *, backlog: bool = False
    ) -> HealthEvent | None:
        """Process one line (read at `position`, when known); the event delivered to the sink for it, if any.

        A `backlog` line (read before the follower caught up with the log) is not shown to `on_event`.

        Once the line is handled (its event handed to the sink), `position` is where the monitor stands:
        taken at once, with no await in between, so a stop right after still saves it.
        """
        if self._boot_checked_at is None or self._clock() - self._boot_checked_at >= self._boot_check_interval:
            await self.check_boot()
        try:
            parsed = self._parser.feed(line)
        except Exception:  # the parser is built never to raise; a bug there must not stop the monitor
            log.exception("kernel log parser failed on a line")
            parsed = None
        if self._on_line is not None:
            self._on_line(parsed is not None)
        try:
            event = await self._handle(parsed, position, backlog) if parsed is not None else None
        except Exception:
            if not self._held_before_failure and position is not None:
                log.error(
                    "the sink refused a kernel-log event: the saved position stays before its line until "
                    "the agent restarts, which reads it (and what followed) again"
                )
            self._held_before_failure = self._held_before_failure or position is not None
            raise
        if position is not None and not self._held_before_failure:
            self._position, self._position_boot_id = position, self._boot_id
            self._position_dirty = True
        return event

    @property
    def policy(self) -> XidPolicy | None:
        """The XID overrides events are decided by (None: the catalog alone)."""
        return self._policy

    def use_policy(self, policy: XidPolicy) -> None:
        """Decide the events read from now on by this policy (an edited policy file)."""
        self._policy = policy

    async def run(self, lines: AsyncIterable[str | bytes | LogLine] | KernelLog) -> None:
        """Start, then process lines until the source ends; a failing sink costs an event, not the monitor.

        Given a `KernelLog`, it is followed from `start_point`; lines that carry a position advance it.
        """
        await self.start()
        if isinstance(lines, KernelLog):
            start_at = await self._settle(lines, self.start_point(lines))
            if start_at != self._saved.position:  # what the parser had learned was of the lines before it
                self._parser.reset()
            log.info("reading the kernel log %s (%s) from %s", lines.path, lines.format, _describe(start_at))
            if isinstance(start_at, str):  # the start: what was read before no longer says where to resume
                self._position, self._position_boot_id, self._edge = None, None, start_at
            else:  # a restart before the first line must resume here, not at a later end
                self._position, self._position_boot_id, self._edge = start_at, self._boot_id, None
            await self._save_state()
            self.reading_from = start_at
            lines = lines.lines(start_at, self._caught_up)
        else:
            self._caught_up()  # lines handed in: no backlog of the monitor's own
        boot = asyncio.create_task(self._watch_boot(), name="gpuheal-kmsg-boot")
        try:
            async for line in lines:
                text, position, backlog = line if isinstance(line, LogLine) else (line, None, False)
                event: HealthEvent | None = None
                try:
                    event = await self._feed_through(text, position, backlog)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("delivering a kernel log event failed")
                if position is not None and self._save_due(handed_over=event is not None):
                    await self._save_state()
        finally:
            boot.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await boot
            if self._position_dirty:
                await self._save_state()  # stopping: where the next start reads on from
            elif self._writing is not None:
                await asyncio.shield(self._writing)  # a save a stop interrupted is on the disk before run ends

    async def _feed_through(self, text: str | bytes, position: Position | None, backlog: bool) -> HealthEvent | None:
        """`feed`, let finish for up to FINISH_ON_STOP when the monitor is stopped meanwhile.

        A sink may have taken the line's event before it answers (the spool's entry is on disk before
        its writing thread hands back): cut off then, the position would stay before the line and the
        next start report it again. A hand-over still under way after FINISH_ON_STOP (a full sink) is
        cancelled: its event not taken, its line read again at the next start.
        """
        feeding = asyncio.ensure_future(self.feed(text, position, backlog=backlog))
        try:
            return await asyncio.shield(feeding)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception, asyncio.CancelledError):  # stopping: the outcome is in the position
                await asyncio.wait_for(feeding, FINISH_ON_STOP.total_seconds())
            raise

    def _caught_up(self) -> None:
        if self._on_caught_up is not None:
            try:
                self._on_caught_up()
            except Exception:  # an observer's bug must not stop the monitor
                log.exception("a kernel-log caught-up observer failed")

    def _save_due(self, *, handed_over: bool) -> bool:
        """Save the position now when the last line's event went to the sink, else at most every `save_interval`."""
        if not self._position_dirty:
            return False
        saved_at = self._position_saved_at
        return handed_over or saved_at is None or self._clock() - saved_at >= self._save_interval

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

    async def _handle(self, parsed: KernelEvent, position: Position | None, backlog: bool) -> HealthEvent | None:
        key = parsed.pci_key
        gpu_uuid = parsed.gpu_uuid
        if gpu_uuid is None and parsed.kind is not EventKind.SXID:
            gpu_uuid = self._gpus.lookup(parsed.pci)
        self._seen[key] = (gpu_uuid or self._seen.get(key, (None, parsed.kind))[0], parsed.kind)
        if self._on_event is not None and not backlog:
            try:
                self._on_event(parsed, gpu_uuid)
            except Exception:  # an observer's bug must not cost the node its kernel-log events
                log.exception("a kernel event observer failed")
        identity = gpu_uuid or key
        window = (identity, parsed.kind, parsed.code)
        occurrence = _Occurrence(parsed, gpu_uuid, position)
        repeats = self._dedupe.admit(window, occurrence)
        if repeats is None and self._boot_stale() and await self.check_boot():
            repeats = self._dedupe.admit(window, occurrence)  # a repeat is folded only within its boot
        if repeats is None:
            return None
        if parsed.kind is EventKind.GPU_RESET:
            # A reset GPU starts afresh: its next fault is news even inside an old window. A failed
            # reset changes nothing: the GPU's faults stand.
            self._dedupe.forget(lambda k: k[0] in (identity, key) and k[1] not in _RESETS)
        event = self._event(parsed, decide(parsed, self._policy), gpu_uuid, repeats, position)
        # A newer fault of a released window that is still to be reported stands for it.
        self._unreported = [kept for kept in self._unreported if kept.key != window]
        try:
            await hand_over(self._sink, event)
        except BaseException:
            # Not delivered: the next occurrence must not be folded into a window nobody heard of.
            self._dedupe.forget(lambda k: k == window)
            raise
        if self._unreported:  # the sink takes events again: what the end of a remediation could not report
            try:
                await self._report_unreported()
            except Exception:
                log.exception("reporting the repeats logged after this node's remediation ended failed again")
        return event

    async def remediation_ended(self, held_seen_at: float | None = None) -> list[HealthEvent]:
        """The node's remediation ended (see `holds`): forget every flood-control window; the events reported.

        The agent learns of the end a little after it happened, and a repeat dropped in between was
        logged after the end: it is the first fault of a repaired node. So the last repeat of each
        window that dropped one since the node was last seen held (`held_seen_at`), and at most
        `end_grace` seconds before now, is reported now, with the count of the others. An older drop
        happened while the remediation was under way and stays folded into it.
        """
        since = self._clock() - self._end_grace
        if held_seen_at is not None:
            since = max(since, held_seen_at)
        fresh = [released for released in self._dedupe.release(since) if released.last is not None]
        keys = {released.key for released in fresh}
        self._unreported = [kept for kept in self._unreported if kept.key not in keys] + fresh
        reported = await self._report_unreported()
        log.info(
            "this node's remediation ended: flood-control windows forgotten, %d repeat(s) logged since reported",
            len(reported),
        )
        return reported

    async def _report_unreported(self) -> list[HealthEvent]:
        """Hand over the last repeat of each released window not yet reported; the events handed over.

        A window opens again only for a repeat that was reported (its repeats from then on are flood
        again); one the sink refused stays to be reported with the next event the sink takes, or at the
        next end of a remediation, and its key has no window meanwhile: its next fault is reported.
        """
        reported: list[HealthEvent] = []
        while self._unreported:
            released = self._unreported[0]
            dropped = released.last
            assert dropped is not None  # kept only with one
            event = self._event(
                dropped.parsed,
                decide(dropped.parsed, self._policy),
                dropped.gpu_uuid,
                released.repeats - 1,
                dropped.position,
            )
            await hand_over(self._sink, event)
            self._unreported.pop(0)
            self._dedupe.admit(released.key)
            reported.append(event)
        return reported

    def _event(
        self, parsed: KernelEvent, decision: EventAction, gpu_uuid: str | None, repeats: int, position: Position | None
    ) -> HealthEvent:
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
            id=self._event_id(parsed.raw, position),
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

    def _event_id(self, raw: str, position: Position | None) -> str:
        """The same id for the same line read at the same place, so a replay after a crash is one event."""
        if position is None:
            return str(uuid.uuid4())
        if isinstance(position, KmsgPosition):  # sequence numbers start again with every boot
            where = f"kmsg/{self._boot_id or ''}/{position.seq}"
        else:
            where = f"file/{position.device}/{position.inode}/{position.offset}"
        return str(uuid.uuid5(_EVENT_IDS, f"{self.node}\n{where}\n{raw}"))

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
            await hand_over(self._sink, self._healthy(CHECK_XID, key, gpu_uuid))
        for key in switches:
            await hand_over(self._sink, self._healthy(CHECK_SXID, key, None))

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

    async def _save_state(self) -> None:
        if self._state_path is None:
            return
        state = MonitorState(
            self._boot_id or self._saved.boot_id,
            self._position,
            self._position_boot_id,
            self._edge,
            self._parser.memory(),
        )
        self._position_saved_at = self._clock()
        self._position_dirty = False
        # One writer thread for every save, in the order asked, and a save once asked is done even when
        # the monitor is stopped meanwhile: an older state never overtakes a newer one on the disk.
        self._writing = asyncio.get_running_loop().run_in_executor(_state_writer(), save_state, self._state_path, state)
        await asyncio.shield(self._writing)


@functools.cache
def _state_writer() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpuheal-kmsg-state")


def _describe(start_at: StartAt) -> str:
    if isinstance(start_at, KmsgPosition):
        return f"after record {start_at.seq}"
    if isinstance(start_at, str):
        return f"its {start_at}"
    return f"byte {start_at.offset} of inode {start_at.inode}"


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
