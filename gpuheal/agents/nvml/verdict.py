"""What NVML's observations mean for a GPU: the problems they raise, each reported as a health event.

Pure rules, no I/O. A *problem* is one active reason a GPU is unhealthy, with the action that
remedies it; the provider reports it as an unhealthy event and, for a polled signal, reports a
healthy event with the same check name once the signal is good again. Turning events into the
GPU's `Healthy` condition is the publisher's job, not this module's.

Actions for the polled signals (NVIDIA's GPU memory error management guide and XID catalog):

- double-bit ECC errors since the last reset (volatile count above zero): COMPONENT_RESET, as the
  catalog treats XID 48 (ECC DBE); a reset clears the volatile count and applies the page
  retirement or row remapping the error triggered;
- retired pages pending, row remapping pending: COMPONENT_RESET, because retirements and
  remappings only take effect at the next GPU reset;
- row remapping failure: CONTACT_SUPPORT. The bank had no spare row left; no reset or reboot
  creates one, and NVIDIA's RMA policy treats it as a hardware return, so a person decides;
- GPU lost (NVML_ERROR_GPU_IS_LOST): RESTART_BM, what the catalog prescribes for XID 79 (fallen off
  the bus), which is how a lost GPU usually shows up in the kernel log.

XID events take the catalog's action. Nothing NVML reports later says a fatal XID is over, so the
provider never sends a healthy event for one. An XID whose action is NONE (an application error,
such as 13) is reported as a non-fatal event.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gpuheal.agents.nvml.interface import HealthSignals
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.catalog import action_for_xid, xid_catalog

CONDITION_HEALTHY = "Healthy"
"""The condition type the publisher writes on each GPU; the provider only sets it "True" at creation."""

AGENT = "gpuheal-nvml"
COMPONENT_CLASS = "GPU"

REASON_REGISTERED = "NvmlRegistered"


class Check(StrEnum):
    """One thing NVML tells about a GPU; the value is the health event's `check_name`."""

    XID = "NvmlXidEvent"
    ECC_DBE = "NvmlEccDoubleBitError"
    RETIRED_PAGES_PENDING = "NvmlRetiredPagesPending"
    ROW_REMAP_PENDING = "NvmlRowRemapPending"
    ROW_REMAP_FAILURE = "NvmlRowRemapFailure"
    GPU_LOST = "NvmlGpuLost"


# Health-event error codes per polled check.
_ERROR_CODES: dict[Check, str] = {
    Check.ECC_DBE: "ECC_DBE_VOLATILE",
    Check.RETIRED_PAGES_PENDING: "RETIRED_PAGES_PENDING",
    Check.ROW_REMAP_PENDING: "ROW_REMAP_PENDING",
    Check.ROW_REMAP_FAILURE: "ROW_REMAP_FAILURE",
    Check.GPU_LOST: "GPU_LOST",
}
SIGNAL_ACTIONS: dict[Check, RecommendedAction] = {
    Check.ECC_DBE: RecommendedAction.COMPONENT_RESET,
    Check.RETIRED_PAGES_PENDING: RecommendedAction.COMPONENT_RESET,
    Check.ROW_REMAP_PENDING: RecommendedAction.COMPONENT_RESET,
    Check.ROW_REMAP_FAILURE: RecommendedAction.CONTACT_SUPPORT,
    Check.GPU_LOST: RecommendedAction.RESTART_BM,
}


@dataclass(frozen=True, slots=True)
class Problem:
    """One active reason a GPU is unhealthy."""

    check: Check
    message: str
    action: RecommendedAction
    error_code: str


def xid_problem(xid: int) -> Problem:
    """The problem an XID event raises, with the catalog's action (NONE for application errors)."""
    entry = xid_catalog().get(xid)
    name = f" ({entry.mnemonic})" if entry else ""
    return Problem(Check.XID, f"XID {xid}{name}", action_for_xid(xid), str(xid))


def signal_problem(check: Check, message: str) -> Problem:
    """The problem a polled signal raises, with the action chosen for it (see the module doc)."""
    return Problem(check, message, SIGNAL_ACTIONS[check], _ERROR_CODES[check])


def polled_problems(previous: dict[Check, Problem], signals: HealthSignals) -> dict[Check, Problem]:
    """The polled problems after a reading: each known signal decides its own checks; an unknown
    one (None, the GPU does not support it) keeps whatever the previous reading decided. The GPU
    answered, so it is not lost."""
    found: dict[Check, Problem] = {check: problem for check, problem in previous.items() if check is not Check.GPU_LOST}

    def decide(check: Check, known: bool, bad: bool, message: str) -> None:
        if not known:
            return
        if bad:
            found[check] = signal_problem(check, message)
        else:
            found.pop(check, None)

    dbe = signals.ecc_dbe_volatile
    decide(Check.ECC_DBE, dbe is not None, bool(dbe), f"{dbe} double-bit ECC errors since the last GPU reset")
    pages = signals.retired_pages_pending
    decide(Check.RETIRED_PAGES_PENDING, pages is not None, bool(pages), "retired pages wait for a GPU reset")
    rows = signals.remapped_rows
    decide(
        Check.ROW_REMAP_PENDING,
        rows is not None,
        rows is not None and rows.pending,
        "row remapping waits for a GPU reset",
    )
    decide(
        Check.ROW_REMAP_FAILURE,
        rows is not None,
        rows is not None and rows.failure,
        f"row remapping failed ({rows.uncorrectable if rows else 0} rows remapped for uncorrectable errors)",
    )
    return found


def lost_problems(previous: dict[Check, Problem], detail: str) -> dict[Check, Problem]:
    """The polled problems when the GPU did not answer: lost, and nothing else is known anew."""
    return {**previous, Check.GPU_LOST: signal_problem(Check.GPU_LOST, f"GPU is lost: {detail}")}
