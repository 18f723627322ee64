"""DCGM's signs of a failing GPU among the readings, each turned into one health event.

Three fields are read as faults:

- `DCGM_FI_DEV_XID_ERRORS`, the last XID the GPU raised: a nonzero value other than the previous
  reading is a new XID, decided as the kernel-log monitor decides it (the operator's override in the
  XID policy, else NVIDIA's catalog; fatal exactly when the action is not NONE);
- `DCGM_FI_DEV_ECC_DBE_VOL_TOTAL` (since the last GPU reset) and `..._AGG_TOTAL` (the GPU's lifetime):
  growth since the previous reading is a new double-bit ECC error, COMPONENT_RESET as NVML's poll
  decides it, and a drop is a counter reset (a GPU reset), the new base. A volatile count above zero
  at the first reading is news (errors wait for a reset); the first aggregate count is history, and
  sets the baseline;
- `DCGM_FI_DEV_ROW_REMAP_FAILURE` nonzero: a bank ran out of spare rows, CONTACT_SUPPORT as NVML's
  poll decides it.

A fault field's reading is read as an integer written as such (`79`, never `79.9`, `-1` or `1e300`),
an XID at most `MAX_XID` and a count at most `MAX_COUNT`; any other value is refused (`fault_value`),
since an impossible value must not become a fatal fault.

DCGM reports levels, not events, and a looping streamer replays the same rows, so a reading is
judged in the order readings arrive, never by its own time (a row dated years ahead, or a clock
stepped back, must not hide the faults after it): an XID or remap value with the previous reading
(a nonzero value other than it is news, so the same XID raised again after the field cleared, as it
does when DCGM restarts, is a second occurrence), a count with the previous reading (growth is news;
a drop is a counter reset, remembered as the new base, not a fault). A reading that would be news is a replay
when the very same reading (its value and `observed_at`, what its event id is derived from) was
reported lately for that GPU and field (`state.REPORTED_KEPT` of them are kept): so a looping file,
a second streamer of the same file, or a restarted agent reports each fault once, and two different
faults read in the same second are each reported. The same XID raised twice with no other reading
between is one level here (the kernel-log monitor and NVML see each occurrence). A change is remembered only once
its event was handed over (`record`), so a reading whose event was not taken is news again when it is
sent again; and the event's id is derived from the reading (`event_id`), so the pipeline can tell a
repeat of it.

What was reported is kept in a small JSON file (`state`), so a restarted agent does not report a
looping streamer's rows again; where that file is unusable, each field's first reading is only a
baseline.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gpuheal.agents.nvml.verdict import SIGNAL_ACTIONS, Check
from gpuheal.agents.telemetry.state import History, Loaded, Reading, encode_state, load_state, write_state
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.catalog import action_for_xid, xid_catalog
from gpuheal.domain.health import GPU_UUID, Entity, HealthEvent, ProcessingStrategy
from gpuheal.domain.telemetry import TelemetryPoint
from gpuheal.domain.xid_policy import XidPolicy

AGENT = "gpuheal-telemetry"
COMPONENT_CLASS = "GPU"

XID_ERRORS = "DCGM_FI_DEV_XID_ERRORS"
ECC_DBE_VOLATILE = "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"
ECC_DBE_AGGREGATE = "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL"
ROW_REMAP_FAILURE = "DCGM_FI_DEV_ROW_REMAP_FAILURE"

# NVIDIA's XIDs are below 200; a 16-bit code leaves room and refuses nonsense.
MAX_XID = 65535
# DCGM's counters are 64-bit.
MAX_COUNT = 2**63
_DIGITS = re.compile(r"[0-9]+")
# The namespace of event ids derived from readings: the same reading is always the same event.
_EVENT_IDS = uuid.UUID("6c1f3b9e-2d54-4e0a-9a8e-0d7c5b1e7a21")


class Rule(enum.Enum):
    # A nonzero value other than the previous reading.
    NEW_NONZERO = "new nonzero value"
    # A value above the last reading.
    GROWTH = "growth"


@dataclass(frozen=True, slots=True)
class Signal:
    """How one DCGM field tells of a fault, and the health event's check and error code for it."""

    metric: str
    rule: Rule
    check: str
    # None: the value itself is the error code (an XID).
    error_code: str | None
    # The first reading only sets the baseline (a lifetime count is history, not news).
    first_is_baseline: bool = False

    @property
    def maximum(self) -> int:
        return MAX_XID if self.error_code is None else MAX_COUNT


SIGNALS: dict[str, Signal] = {
    signal.metric: signal
    for signal in (
        Signal(XID_ERRORS, Rule.NEW_NONZERO, "DcgmXidError", None),
        Signal(ECC_DBE_VOLATILE, Rule.GROWTH, "DcgmEccDoubleBitError", "ECC_DBE_VOLATILE"),
        Signal(ECC_DBE_AGGREGATE, Rule.GROWTH, "DcgmEccDoubleBitError", "ECC_DBE_AGGREGATE", first_is_baseline=True),
        Signal(ROW_REMAP_FAILURE, Rule.NEW_NONZERO, "DcgmRowRemapFailure", "ROW_REMAP_FAILURE"),
    )
}


@dataclass(frozen=True, slots=True)
class Change:
    """A reading that is news: `value` on `gpu_uuid` at `observed_at`, after `previous` (None: nothing before)."""

    signal: Signal
    gpu_uuid: str
    value: int
    previous: int | None
    observed_at: datetime


def fault_value(point: TelemetryPoint) -> int | None:
    """The integer a fault field's reading says; None for any other field; ValueError naming an impossible one."""
    signal = SIGNALS.get(point.metric_name)
    if signal is None:
        return None
    if not _DIGITS.fullmatch(point.value) or int(point.value) > signal.maximum:
        raise ValueError(
            f"{point.metric_name} {point.value!r} is not a fault field's value (an integer from 0 to {signal.maximum})"
        )
    return int(point.value)


class FaultSignals:
    """Per GPU and fault field, the value the next reading is compared with and the readings reported
    lately, kept in `path` when given. Its size is bounded by the GPUs the metrics store admits times
    the four fields (and `state.REPORTED_KEPT` readings each)."""

    def __init__(self, path: Path | None = None) -> None:
        loaded = load_state(path) if path is not None else Loaded({}, usable=True)
        self._path = path if loaded.savable else None
        self._histories = loaded.histories
        # The state file was there but unusable: what was reported is unknown, so a field's first
        # reading is only a baseline rather than an old fault reported again.
        self._baseline_first = not loaded.usable
        # The last write asked for; the writer thread does them one at a time, in the order asked.
        self._writing: asyncio.Future[None] | None = None

    async def change(self, point: TelemetryPoint) -> Change | None:
        """The news in `point`, if it is a fault field's reading that says something new.

        A news reading is remembered only by `record`; one that is no news is remembered at once as
        the reading the next one is compared with.
        """
        value = fault_value(point)
        if value is None:
            return None
        signal = SIGNALS[point.metric_name]
        key = (point.gpu_uuid, signal.metric)
        history = self._histories.get(key)
        if history is None:
            history = self._histories[key] = History(baseline=self._baseline_first)
        previous = history.previous
        if history.baseline or (previous is None and signal.first_is_baseline):
            news = False
        elif signal.rule is Rule.NEW_NONZERO:
            news = value != 0 and value != previous
        else:
            news = value > (previous or 0)  # a drop is a counter reset: the new base
        if news and Reading(value, point.observed_at) not in history.reported:
            return Change(signal, point.gpu_uuid, value, previous, point.observed_at)
        await self._remember(key, history, value)
        return None

    async def record(self, change: Change) -> None:
        """`change` was reported: its reading is the one the next is compared with, and a replay of it is none."""
        key = (change.gpu_uuid, change.signal.metric)
        history = self._histories[key]
        history.reported.append(Reading(change.value, change.observed_at))
        await self._remember(key, history, change.value, reported=True)

    async def saved(self) -> None:
        """Wait for the writes asked for so far (a call that gave up leaves its write running)."""
        if self._writing is not None:
            await asyncio.shield(self._writing)

    async def _remember(self, key: tuple[str, str], history: History, value: int, *, reported: bool = False) -> None:
        changed = reported or history.baseline or history.previous != value
        history.previous = value
        history.baseline = False
        # Only a change is written: a level or a count repeats row after row, and changes rarely.
        if self._path is None or not changed:
            return
        # Written off the event loop, durably before the reading's call answers; a write once asked is
        # done even when that call gives up, so an older state never overtakes a newer one on the disk.
        data = encode_state(self._histories)
        self._writing = asyncio.get_running_loop().run_in_executor(_state_writer(), write_state, self._path, data)
        await asyncio.shield(self._writing)


@functools.cache
def _state_writer() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpuheal-telemetry-state")


def event_id(node: str, change: Change) -> str:
    """The event id of `change` on `node`: the same reading, sent again or after a restart, has the same id."""
    at = change.observed_at.astimezone(UTC).isoformat()
    return str(uuid.uuid5(_EVENT_IDS, f"{node}/{change.gpu_uuid}/{change.signal.metric}/{change.value}/{at}"))


def fault_event(
    node: str,
    point: TelemetryPoint,
    change: Change,
    policy: XidPolicy | None,
    metadata: dict[str, str],
    *,
    remediate: bool = True,
) -> HealthEvent:
    """The health event reporting `change`, for the agent's `node`, with `metadata` added to its own;
    recorded only (STORE_ONLY), never acted on, unless `remediate`."""
    signal = change.signal
    if signal.error_code is None:
        action, decided_by = _xid_action(change.value, policy)
        entry = xid_catalog().get(change.value)
        what = f"XID {change.value}" + (f" ({entry.mnemonic})" if entry else "")
        codes = (str(change.value),)
    else:
        action, decided_by = SIGNAL_ACTIONS[_NVML_CHECKS[signal.metric]], "default"
        what = _DESCRIPTIONS[signal.metric].format(value=change.value, previous=change.previous or 0)
        codes = (signal.error_code,)
    return HealthEvent(
        id=event_id(node, change),
        node=node,
        agent=AGENT,
        component_class=COMPONENT_CLASS,
        check_name=signal.check,
        is_fatal=action is not RecommendedAction.NONE,
        is_healthy=False,
        message=f"DCGM reports {what} on GPU {point.gpu_id} ({point.gpu_uuid}, {point.device})",
        action=action,
        error_codes=codes,
        entities=(Entity(type=GPU_UUID, value=point.gpu_uuid),),
        metadata={
            **metadata,
            "metric": signal.metric,
            "value": str(change.value),
            "previous": "" if change.previous is None else str(change.previous),
            "device": point.device,
            "gpu_id": str(point.gpu_id),
            "observed_at": point.observed_at.isoformat(),
            "decided_by": decided_by,
        },
        generated_at=datetime.now(UTC),
        strategy=ProcessingStrategy.EXECUTE_REMEDIATION if remediate else ProcessingStrategy.STORE_ONLY,
    )


_NVML_CHECKS = {
    ECC_DBE_VOLATILE: Check.ECC_DBE,
    ECC_DBE_AGGREGATE: Check.ECC_DBE,
    ROW_REMAP_FAILURE: Check.ROW_REMAP_FAILURE,
}
_DESCRIPTIONS = {
    ECC_DBE_VOLATILE: "double-bit ECC errors since the last GPU reset, {previous} → {value}",
    ECC_DBE_AGGREGATE: "double-bit ECC errors over the GPU's life, {previous} → {value}",
    ROW_REMAP_FAILURE: "a failed row remapping (no spare row left)",
}


def _xid_action(xid: int, policy: XidPolicy | None) -> tuple[RecommendedAction, str]:
    """The operator's override for `xid`, else the catalog's action; and which of them decided."""
    override = policy.overrides.get(xid) if policy is not None else None
    if override is not None:
        return override, "policy"
    return action_for_xid(xid), "catalog"
