"""What the Temporal UI shows of a remediation: its static summary and details, written once at the
start, and the checklist of phases in its current details.

The UI's list and detail page show little else of a run than these texts, so they name the node, the
fault and what it asks for, and where the run stands. Temporal caps a static summary and static
details (400 and 20,000 bytes by default): a fault's free text is cut to fit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from itertools import pairwise

from gpuheal.domain.faults import Fault
from gpuheal.domain.remediation import PhaseEntry
from gpuheal.domain.truncate import marker, truncate

# Temporal's `limit.workflowUserMetadataSummarySize` and `…DetailsSize` defaults.
MAX_SUMMARY_BYTES = 400
MAX_DETAILS_BYTES = 20_000
# GPUs named in a summary before the rest are counted; and the hex digits kept of each UUID.
_SUMMARY_GPUS = 2
_UUID_DIGITS = 8
# A fault without an XID is named by the start of its message.
_MESSAGE_CHARS = 40
# What Markdown reads as markup within a line (free text is put on a line after gpuheal's own words,
# its whitespace collapsed, so nothing of it starts a line: headings and lists need no escape).
_INLINE_MARKUP = re.compile(r"([\\`*_\[\]<>&~|])")
# A run of backticks that opens or closes a code span (an escaped one is text).
_BACKTICKS = re.compile(r"(?<!\\)`+")


def plain(text: str) -> str:
    """Free text (a fault's message, a person's reason, a step's failure) as Markdown shows it as it is:
    on one line, its markup characters escaped."""
    return _INLINE_MARKUP.sub(r"\\\1", " ".join(text.split()))


def code(text: str) -> str:
    """`text` as a Markdown code span, whatever backticks it holds (a longer fence, padded)."""
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def fit_markdown(text: str, max_bytes: int) -> str:
    """`text` cut to `max_bytes` (gpuheal.domain.truncate), before a code span the cut would leave open
    (its opening backticks would show as they are, and its text as prose)."""
    cut = truncate(text, max_bytes)
    opened = _unclosed_span(cut)
    if cut == text or opened is None:
        return cut
    kept = cut[:opened]
    return kept + marker(len(text.encode("utf-8", "surrogatepass")) - len(kept.encode("utf-8", "surrogatepass")))


def _unclosed_span(text: str) -> int | None:
    """Where the first run of backticks that no run of the same length closes begins, if any."""
    runs = [(run.start(), len(run.group())) for run in _BACKTICKS.finditer(text)]
    i = 0
    while i < len(runs):
        closer = next((j for j in range(i + 1, len(runs)) if runs[j][1] == runs[i][1]), None)
        if closer is None:
            return runs[i][0]
        i = closer + 1
    return None


def short_gpu(uuid: str) -> str:
    """`GPU-5f3c7b2a…` for a UUID `GPU-5f3c7b2a-1e8d-…`: enough to tell the GPUs of a node apart."""
    prefix, _, rest = uuid.partition("-")
    if not rest or len(rest) <= _UUID_DIGITS:
        return uuid
    return f"{prefix}-{rest[:_UUID_DIGITS]}…"


def start_summary(fault: Fault) -> str:
    """One line for the UI's list and detail page: `gpu-node-001 · XID 79 · GPU-5f3c7b2a… → RESTART_BM`."""
    parts = [fault.node]
    if fault.xid is not None:
        parts.append(f"XID {fault.xid}")
    elif fault.message.strip():
        first = " ".join(next(line for line in fault.message.splitlines() if line.strip()).split())
        parts.append(first if len(first) <= _MESSAGE_CHARS else first[:_MESSAGE_CHARS] + "…")
    if fault.gpu_uuids:
        named = ", ".join(short_gpu(uuid) for uuid in fault.gpu_uuids[:_SUMMARY_GPUS])
        more = len(fault.gpu_uuids) - _SUMMARY_GPUS
        parts.append(f"{named} +{more} more" if more > 0 else named)
    return truncate(f"{' · '.join(parts)} → {fault.action.name}", MAX_SUMMARY_BYTES)


def start_details(fault: Fault, policy_version: str) -> str:
    """Markdown for the detail page: the node, its GPUs, the first fault (when, from where) and the policy."""
    gpus = ", ".join(f"`{uuid}`" for uuid in fault.gpu_uuids) or "not named by the detector"
    when = fault.detected_at.isoformat() if fault.detected_at is not None else "time not reported"
    what = f"XID {fault.xid}" if fault.xid is not None else fault.action.name
    lines = [
        f"**Node** `{fault.node}`",
        f"**GPUs** {gpus}",
        f"**First fault** {what} at {when} from {code(fault.source or 'an unnamed detector')}, asking for "
        f"{fault.action.name}" + (f": {plain(fault.message)}" if fault.message.strip() else ""),
        f"**Policy** `{policy_version}`" if policy_version else "**Policy** the worker's, as the run begins",
        "Later faults on the node join this run: its current details and the `status` query show them.",
    ]
    return fit_markdown("\n\n".join(lines), MAX_DETAILS_BYTES)


def elapsed(span: timedelta) -> str:
    """A short duration: `0.4s`, `12s`, `4m 05s`, `2h 03m`, `3d 01h`."""
    seconds = max(span.total_seconds(), 0.0)
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600:02d}h"


def phase_checklist(history: Sequence[PhaseEntry], now: datetime) -> str:
    """The phases passed, each with the time spent in it, and the current one marked (a Markdown list).

    A phase entered again right after itself (a GPU reset, then a reboot: Repairing twice) is one
    line. The current phase says since when, not for how long: the text is written when the run
    moves (at `now`), not each time somebody reads it; with the date where the run is days long.
    """
    merged: list[PhaseEntry] = []
    for entry in history:
        if not merged or merged[-1].phase is not entry.phase:
            merged.append(entry)
    lines = [
        f"- ✓ {entry.phase.value} — {elapsed(following.entered_at - entry.entered_at)}"
        for entry, following in pairwise(merged)
    ]
    if merged:
        last = merged[-1]
        at = _clock(last.entered_at, merged[0].entered_at, now)
        if last.phase.is_final:
            total = elapsed(last.entered_at - merged[0].entered_at)
            lines.append(f"- ■ **{last.phase.value}** at {at}, {total} after {merged[0].phase.value}")
        else:
            lines.append(f"- ▶ **{last.phase.value}** — now, since {at}")
    return "\n".join(lines)


def _clock(moment: datetime, began: datetime, now: datetime) -> str:
    """The time of day; the date too where the run began, or the text is written, on another day."""
    days = {moment.date(), began.astimezone(moment.tzinfo).date(), now.astimezone(moment.tzinfo).date()}
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z" if len(days) > 1 else "%H:%M:%S %Z").strip()
