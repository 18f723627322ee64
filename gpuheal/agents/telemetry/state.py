"""What the telemetry intake's fault rules remember across restarts of the agent, in one small JSON file.

    {"gpus": {"GPU-…": {"DCGM_FI_DEV_XID_ERRORS": {"previous": 48,
        "reported": [{"value": 79, "observed_at": "2025-07-18T20:42:35Z"}, …]}}}}

Per GPU and fault field: the value of the last reading (what the next one is compared with) and the
readings last reported, at most `REPORTED_KEPT` (see `signals`). The file is replaced whole and
flushed (`write_durably`), so a crash leaves the old content or the new. Fields this agent does not
know (a newer agent's) are ignored, so its file is still used.

A file that is there but cannot be used (unreadable, not JSON, not this shape) is renamed aside,
`telemetry-state.json.corrupt-<time>`, and logged: it is never written over, and the agent does not
know what it reported, so each GPU field's first reading is then only a baseline (`Loaded.usable`).
An entry without `reported` (written by an agent that decided replays by time) is a baseline too.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from gpuheal.agents.durable_file import write_durably
from gpuheal.domain.telemetry import MAX_LABEL_CHARS

log = logging.getLogger(__name__)

# Far above what the metrics store admits (GPUs × four fault fields): a file past it is not ours.
_MAX_ENTRIES = 4096
# Per GPU field, the reported readings a replay is recognised by: a looping CSV would need more
# distinct faults of one GPU field than this in one loop to report one again.
REPORTED_KEPT = 64

_Name = Annotated[str, Field(min_length=1, max_length=MAX_LABEL_CHARS)]


@dataclass(frozen=True, slots=True)
class Reading:
    """A fault field's reading as its event id knows it: its value and when it was observed."""

    value: int
    observed_at: datetime


@dataclass(slots=True)
class History:
    """One GPU field: the last reading's value (None: no reading yet) and the readings reported lately."""

    previous: int | None = None
    reported: deque[Reading] = field(default_factory=lambda: deque(maxlen=REPORTED_KEPT))
    # The next reading only sets `previous`: what was reported before is not known.
    baseline: bool = False


@dataclass(frozen=True, slots=True)
class Loaded:
    """The histories read, and whether the file could be used (False: every field starts with a baseline)."""

    histories: dict[tuple[str, str], History]
    usable: bool
    # False when an unusable file could not be renamed aside: it must not be written over.
    savable: bool = True


class _Reading(BaseModel):
    model_config = ConfigDict(extra="ignore")

    value: int = Field(ge=0)
    observed_at: AwareDatetime


class _History(BaseModel):
    model_config = ConfigDict(extra="ignore")

    previous: int | None = Field(default=None, ge=0)
    # None: written by an earlier agent, which kept no reported readings.
    reported: list[_Reading] | None = Field(default=None, max_length=REPORTED_KEPT)


class _Saved(BaseModel):
    model_config = ConfigDict(extra="ignore")

    gpus: dict[_Name, dict[_Name, _History]] = Field(max_length=_MAX_ENTRIES)


def load_state(path: Path) -> Loaded:
    """What `path` holds, by (GPU UUID, field); an unusable file is renamed aside (see above)."""
    try:
        saved = _Saved.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return Loaded({}, usable=True)
    except (OSError, ValidationError) as error:
        return Loaded({}, usable=False, savable=_set_aside(path, error))
    histories = {}
    for gpu, fields in saved.gpus.items():
        for name, kept in fields.items():
            if kept.reported is None:
                histories[gpu, name] = History(baseline=True)
            else:
                reported = deque((Reading(r.value, r.observed_at) for r in kept.reported), maxlen=REPORTED_KEPT)
                histories[gpu, name] = History(kept.previous, reported)
    return Loaded(histories, usable=True)


def encode_state(histories: dict[tuple[str, str], History]) -> bytes:
    """The file's content for `histories`, taken at once (they change while it is written)."""
    gpus: dict[str, dict[str, _History]] = {}
    for (gpu, name), history in histories.items():
        reported = [_Reading(value=r.value, observed_at=r.observed_at) for r in history.reported]
        gpus.setdefault(gpu, {})[name] = _History(previous=history.previous, reported=reported)
    return _Saved(gpus=gpus).model_dump_json().encode()


def write_state(path: Path, data: bytes) -> None:
    """Write `data` durably; a failure is logged (the state stays in memory for this agent's life)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_durably(path, data)
    except OSError:
        log.warning("could not record the telemetry state in %s", path, exc_info=True)


def _set_aside(path: Path, error: Exception) -> bool:
    """Rename the unusable `path` to a name of its own, so that nothing writes over what it holds;
    False when it could not be."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    try:
        path.rename(aside)
    except OSError as failed:
        log.error(
            "the telemetry state %s cannot be used (%s) nor renamed aside (%s): faults DCGM reports now "
            "are judged from each GPU field's next reading, and nothing is recorded across restarts",
            path,
            error,
            failed,
        )
        return False
    log.error(
        "the telemetry state %s cannot be used (%s); kept as %s. Each GPU field's first reading is only a "
        "baseline, so no fault reported before is reported again; changes from then on are news",
        path,
        error,
        aside,
    )
    return True
