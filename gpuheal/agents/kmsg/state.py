"""What the kernel-log monitor keeps across restarts of the agent, in one small JSON file.

    {"boot_id": "…", "kmsg": {"boot_id": "…", "seq": 812}}
    {"boot_id": "…", "file": {"device": 64769, "inode": 1311, "offset": 48213, "tail": "<base64>"}}
    {"boot_id": "…", "edge": "start"}

`boot_id` is the boot the monitor last saw (a different one at start means the node rebooted since).
`kmsg` is the sequence number of the last /dev/kmsg record handled and the boot it belongs to (the
numbers start again with every boot); `file` the position after the last line handled in a file
source (see `follow`). With either may come `parser`, what the parser had learned at that position
and later lines still need (`{"gpus": {"0000:3b:00.0": "GPU-…"}, "fallen": [{"pci": …, "from_xid":
true, "ago": 1}]}`, see `ParserMemory`): a report the restart split is still read as one. `edge` is
where reading began on this boot while no line has been read yet (this agent writes only "start": it
saves an end as the position it was; "end", and a state with none of the three, were written by older
agents, which read only the end of the log). The file is replaced whole and flushed
(`write_durably`), so a crash leaves the old state or the new. A file that cannot be read or is not
this shape (corrupt, or written by something else) is logged and read as no state: the monitor then
reads its log from the start.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gpuheal.agents.durable_file import write_durably
from gpuheal.agents.kmsg.follow import FilePosition, KmsgPosition, Position
from gpuheal.agents.kmsg.parser import FALLEN_GROUP_SPAN, MAX_ADDRESSES, ParserMemory

log = logging.getLogger(__name__)


class _Kmsg(BaseModel):
    model_config = ConfigDict(extra="forbid")

    boot_id: str = Field(min_length=1)
    seq: int = Field(ge=0)


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: int = Field(ge=0)
    inode: int = Field(ge=0)
    offset: int = Field(ge=0)
    tail: str = Field(max_length=256)  # base64

    @field_validator("tail")
    @classmethod
    def _base64(cls, tail: str) -> str:
        base64.b64decode(tail, validate=True)  # binascii.Error is a ValueError: a validation error
        return tail


class _Fallen(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pci: str = Field(min_length=1, max_length=64)
    from_xid: bool
    ago: int = Field(ge=0, le=FALLEN_GROUP_SPAN)


class _Parser(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gpus: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=64)]] = Field(
        max_length=MAX_ADDRESSES
    )
    fallen: list[_Fallen] = Field(default_factory=list, max_length=MAX_ADDRESSES)


class _Saved(BaseModel):
    model_config = ConfigDict(extra="forbid")

    boot_id: str | None = None
    kmsg: _Kmsg | None = None
    file: _File | None = None
    edge: Literal["start", "end"] | None = None
    parser: _Parser | None = None


@dataclass(frozen=True, slots=True)
class MonitorState:
    """The boot last seen, and where reading stopped (`position_boot_id`: the boot a kmsg position is of),
    or, before the first line, the edge reading began at."""

    boot_id: str | None = None
    position: Position | None = None
    position_boot_id: str | None = None
    edge: Literal["start", "end"] | None = None
    parser: ParserMemory | None = None  # what the parser had learned at `position`

    def position_for(self, boot_id: str | None) -> Position | None:
        """The saved position where it still means something on this boot: a file offset always, a kmsg
        sequence number only on the boot it was read in."""
        if isinstance(self.position, KmsgPosition) and (boot_id is None or boot_id != self.position_boot_id):
            return None
        return self.position


def load_state(path: Path) -> MonitorState:
    """The state saved in `path`; an empty state (logged, unless the file is simply not there) when unusable."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return MonitorState()
    except OSError as error:
        log.warning("cannot read the kernel-log state %s (%s): reading the kernel log from its start", path, error)
        return MonitorState()
    try:
        saved = _Saved.model_validate_json(text)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the file"
        log.warning(
            "ignoring the kernel-log state %s, which is not gpuheal's (%s: %s): reading the kernel log from its start",
            path,
            where,
            first["msg"],
        )
        return MonitorState()
    memory = None
    if saved.parser is not None:
        fallen = tuple((entry.pci, entry.from_xid, entry.ago) for entry in saved.parser.fallen)
        memory = ParserMemory(dict(saved.parser.gpus), fallen)
    if saved.kmsg is not None:
        return MonitorState(saved.boot_id, KmsgPosition(saved.kmsg.seq), saved.kmsg.boot_id, parser=memory)
    if saved.file is not None:
        found = saved.file
        tail = base64.b64decode(found.tail, validate=True)
        position = FilePosition(found.device, found.inode, found.offset, tail)
        return MonitorState(saved.boot_id, position, parser=memory)
    return MonitorState(saved.boot_id, edge=saved.edge)


def save_state(path: Path, state: MonitorState) -> bool:
    """Write the state durably; False (logged) when it could not be written."""
    saved = _Saved(boot_id=state.boot_id, edge=state.edge if state.position is None else None)
    position = state.position
    if isinstance(position, KmsgPosition) and state.position_boot_id:
        saved.kmsg = _Kmsg(boot_id=state.position_boot_id, seq=position.seq)
    elif isinstance(position, FilePosition):
        tail = base64.b64encode(position.tail).decode("ascii")
        saved.file = _File(device=position.device, inode=position.inode, offset=position.offset, tail=tail)
    memory = state.parser
    if (saved.kmsg or saved.file) and memory is not None and (memory.gpus or memory.fallen):
        fallen = [_Fallen(pci=pci, from_xid=from_xid, ago=ago) for pci, from_xid, ago in memory.fallen]
        saved.parser = _Parser(gpus=memory.gpus, fallen=fallen)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_durably(path, saved.model_dump_json(exclude_none=True).encode())
    except OSError:
        log.warning("could not record the kernel-log state in %s", path, exc_info=True)
        return False
    return True
