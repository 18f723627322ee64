"""Structured logs (`gpuheal --log-format json`): one JSON object per line, for a log pipeline to read.

Each line has `time` (RFC 3339, UTC), `level`, `logger` and `message`; a line about a remediation also
has its `workflow_id`, and a line about a node or a GPU its `node` and `gpu` (always a list of GPU
UUIDs, however many), where known. Temporal's `workflow.logger` and `activity.logger` put the
workflow's details in a record's `temporal_workflow` or `temporal_activity` extra, whence the workflow
id (and the node: `remediate-<node>`); other callers pass `extra={"node": ..., "gpu": ...}`. An exception comes as the
`exc_info` text, a `stack_info=True` call's stack as `stack_info`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Set
from datetime import UTC, datetime
from typing import Any

from temporalio import activity, workflow

from gpuheal.domain.marks import WORKFLOW_ID_PREFIX

NODE = "node"
GPU = "gpu"
# Where Temporal's loggers put the details of the workflow or activity a record comes from.
_TEMPORAL_EXTRAS = ("temporal_workflow", "temporal_activity")


class JsonLines(logging.Formatter):
    """A record as one line of JSON: see the module docstring. It never raises and always writes valid
    JSON, whatever a caller passed (a line lost to a formatting error is the line that mattered)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record),
        }
        workflow_id = _workflow_id(record)
        node = getattr(record, NODE, None) or _node_of(workflow_id)
        if workflow_id:
            entry["workflow_id"] = workflow_id
        if node:
            entry[NODE] = str(node)
        if gpus := _gpus(getattr(record, GPU, None)):
            entry[GPU] = gpus
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        # Every value is a string (or a list of them), so the JSON is strict: no NaN, no other types.
        # Non-ASCII text as it is, not \u escapes: pipelines read UTF-8, and people read the lines too.
        return json.dumps(entry, ensure_ascii=False, allow_nan=False)


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # arguments that do not fit the format still leave a line
        return f"{record.msg} {record.args!r}"


def _gpus(value: object) -> list[str]:
    """A record's `gpu` as a list of UUID strings, whatever the caller gave (one, a list, a set), so
    the field has one type for an indexer; a set's order is made stable."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, bytes) or not isinstance(value, Iterable):
        return [str(value)]
    gpus = [str(gpu) for gpu in value]
    return sorted(gpus) if isinstance(value, Set) else gpus


def _workflow_id(record: logging.LogRecord) -> str | None:
    for name in _TEMPORAL_EXTRAS:
        details = getattr(record, name, None)
        if isinstance(details, Mapping) and details.get("workflow_id"):
            return str(details["workflow_id"])
    return None


def _node_of(workflow_id: str | None) -> str | None:
    if workflow_id and workflow_id.startswith(WORKFLOW_ID_PREFIX):
        return workflow_id.removeprefix(WORKFLOW_ID_PREFIX) or None
    return None


class _OneNode(logging.Filter):
    def __init__(self, node: str) -> None:
        super().__init__()
        self._node = node

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, NODE, None):
            setattr(record, NODE, self._node)
        return True


def name_node_on_every_line(node: str) -> None:
    """Give every record of the process that names no node this one: an agent's process is about its
    own node, so its lines that say nothing of a GPU (starting, stopping, a lane's retries) still say
    which node they come from."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(_OneNode(node))


def log_as_json(level: int) -> None:
    """Send every record of the process to stderr as JSON lines, in place of any handler set before.

    Temporal's loggers otherwise append the workflow's details to each message as text: the JSON has
    them as fields, so the message stays what the code said.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    workflow.logger.workflow_info_on_message = False
    activity.logger.activity_info_on_message = False
