"""What the telemetry intake's fault rules remember across restarts of the agent, in one small JSON file.

    {"gpus": {"GPU-…": {"DCGM_FI_DEV_XID_ERRORS": {"value": 79, "observed_at": "2025-07-18T20:42:36Z"}}}}

Per GPU and fault field: the value the rules compare the next reading with and the time of the
reading it came from (see `signals`). The file is replaced whole and flushed (`write_durably`), so a
crash leaves the old content or the new. A file that cannot be read or is not this shape is logged
and read as empty: the next readings are then judged as a fresh agent judges them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from gpuheal.agents.durable_file import write_durably
from gpuheal.domain.telemetry import MAX_LABEL_CHARS

log = logging.getLogger(__name__)

# Far above what the metrics store admits (GPUs × four fault fields): a file past it is not ours.
_MAX_ENTRIES = 4096

_Name = Annotated[str, Field(min_length=1, max_length=MAX_LABEL_CHARS)]


@dataclass(frozen=True, slots=True)
class Last:
    """The value a fault field's next reading is compared with, and when it was observed."""

    value: int
    observed_at: datetime


class _Last(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: int = Field(ge=0)
    observed_at: AwareDatetime


class _Saved(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gpus: dict[_Name, dict[_Name, _Last]] = Field(max_length=_MAX_ENTRIES)


def load_last(path: Path) -> dict[tuple[str, str], Last]:
    """What `path` holds, by (GPU UUID, field); empty (logged, unless the file is simply not there) when unusable."""
    try:
        saved = _Saved.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValidationError) as error:
        log.warning("ignoring the telemetry state %s, which cannot be read as gpuheal's: %s", path, error)
        return {}
    return {
        (gpu, field): Last(last.value, last.observed_at)
        for gpu, fields in saved.gpus.items()
        for field, last in fields.items()
    }


def save_last(path: Path, last: dict[tuple[str, str], Last]) -> None:
    """Write `last` durably; a failure is logged (the values stay in memory for this agent's life)."""
    gpus: dict[str, dict[str, _Last]] = {}
    for (gpu, field), entry in last.items():
        gpus.setdefault(gpu, {})[field] = _Last(value=entry.value, observed_at=entry.observed_at)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_durably(path, _Saved(gpus=gpus).model_dump_json().encode())
    except OSError:
        log.warning("could not record the telemetry state in %s", path, exc_info=True)
