"""DCGM's signs of a failing GPU among the readings, each turned into one health event.

Three fields are read as faults:

- `DCGM_FI_DEV_XID_ERRORS`, the last XID the GPU raised: a nonzero value other than the last one
  reported is a new XID, decided as the kernel-log monitor decides it (the operator's override in the
  XID policy, else NVIDIA's catalog; fatal exactly when the action is not NONE);
- `DCGM_FI_DEV_ECC_DBE_VOL_TOTAL` (since the last GPU reset) and `..._AGG_TOTAL` (the GPU's lifetime):
  growth past the highest count seen is a new double-bit ECC error, COMPONENT_RESET as NVML's poll
  decides it. A volatile count above zero at the first reading is news (errors wait for a reset);
  the first aggregate count is history, and sets the baseline;
- `DCGM_FI_DEV_ROW_REMAP_FAILURE` nonzero: a bank ran out of spare rows, CONTACT_SUPPORT as NVML's
  poll decides it.

DCGM reports levels, not events, and a looping streamer replays the same rows: so a value is news
only when it differs from what was already reported for that GPU (a zero XID or remap reading does
not clear the last one, and a count that drops does not lower the highest seen). The same reading
is therefore never reported twice; the price is that a repeat of the very same XID on the same GPU
is not seen here (the kernel-log monitor and NVML see each occurrence). A change is remembered only
once its event was handed over (`record`), so a reading whose event was not taken is news again
when it is sent again.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from gpuheal.agents.nvml.verdict import SIGNAL_ACTIONS, Check
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.catalog import action_for_xid, xid_catalog
from gpuheal.domain.health import GPU_UUID, Entity, HealthEvent
from gpuheal.domain.telemetry import TelemetryPoint
from gpuheal.domain.xid_policy import XidPolicy

AGENT = "gpuheal-telemetry"
COMPONENT_CLASS = "GPU"

XID_ERRORS = "DCGM_FI_DEV_XID_ERRORS"
ECC_DBE_VOLATILE = "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"
ECC_DBE_AGGREGATE = "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL"
ROW_REMAP_FAILURE = "DCGM_FI_DEV_ROW_REMAP_FAILURE"


class Rule(enum.Enum):
    # A nonzero value other than the last one reported.
    NEW_NONZERO = "new nonzero value"
    # A value above the highest one seen.
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
    """A reading that is news: `value` on `gpu_uuid`, where `previous` was reported or seen before."""

    signal: Signal
    gpu_uuid: str
    value: int
    previous: int | None


class FaultSignals:
    """What was last reported (or, for counts, the highest seen) per GPU and fault field.

    Its size is bounded by the GPUs the metrics store admits times the four fields.
    """

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], int] = {}

    def change(self, point: TelemetryPoint) -> Change | None:
        """The news in `point`, if it is a fault field's reading that says something new.

        Nothing is recorded (see `record`), except the baseline a first lifetime count sets.
        """
        signal = SIGNALS.get(point.metric_name)
        if signal is None:
            return None
        value = int(point.number)
        previous = self._seen.get((point.gpu_uuid, signal.metric))
        if signal.rule is Rule.NEW_NONZERO:
            news = value != 0 and value != previous
        elif previous is None and signal.first_is_baseline:
            self._seen[(point.gpu_uuid, signal.metric)] = value
            return None
        else:
            news = value > (previous or 0)
        return Change(signal, point.gpu_uuid, value, previous) if news else None

    def record(self, change: Change) -> None:
        """`change` was reported: the same value is no news from now on (nor, for a count, a lower one)."""
        key = (change.gpu_uuid, change.signal.metric)
        if change.signal.rule is Rule.GROWTH:
            self._seen[key] = max(change.value, self._seen.get(key, change.value))
        else:
            self._seen[key] = change.value


def fault_event(
    node: str, point: TelemetryPoint, change: Change, policy: XidPolicy | None, metadata: dict[str, str]
) -> HealthEvent:
    """The health event reporting `change`, for the agent's `node`, with `metadata` added to its own."""
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
        id=str(uuid.uuid4()),
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
