"""The streamer's logs: one JSON object per line, each naming the streamer instance.

A record's `fields` (passed as `extra={"fields": {...}}`) become keys of its own, so statistics are
numbers a log pipeline can read, not text.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "msg", "component", "instance_id", ...fields}`; a traceback under `error`."""

    def __init__(self, instance_id: str) -> None:
        super().__init__()
        self._instance_id = instance_id

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "msg": record.getMessage(),
            "component": "streamer",
            "logger": record.name,
            "instance_id": self._instance_id,
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def log_as_json(instance_id: str, level: int = logging.INFO) -> None:
    """Send every log record of the process to stderr as JSON lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(instance_id))
    logging.basicConfig(level=level, handlers=[handler], force=True)
