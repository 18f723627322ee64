"""The streamer's settings: the seed's flags (single- or double-dash), each with an environment fallback.

A flag given on the command line wins; otherwise its environment variable is read; otherwise the
default holds. `-csv-path` (`CSV_PATH`) has no default. Values are spelled as Go spells them
(`gpuheal.tools.goflags`): durations `100ms`, `1m30s`; booleans `true`/`false`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, fields
from datetime import timedelta
from pathlib import Path
from typing import Any

from gpuheal.protos.sockets import SOCKET_DIR, TELEMETRY_SOCKET
from gpuheal.tools.goflags import add_flag, go_bool, go_duration

DEFAULT_SOCKET = SOCKET_DIR / TELEMETRY_SOCKET


class UsageError(ValueError):
    """The environment or the flags do not say what to do: the message names the setting."""


@dataclass(frozen=True, slots=True)
class Settings:
    csv_path: Path
    instance_id: str = "streamer-1"
    # Between two rows; zero sends as fast as the queue takes them.
    interval: timedelta = timedelta(milliseconds=100)
    # Start over at the end of the file, or stop there (after the queue is drained).
    loop: bool = True
    queue_buffer: int = 1000
    queue_workers: int = 10
    socket: Path = DEFAULT_SOCKET


@dataclass(frozen=True, slots=True)
class _Flag:
    name: str
    env: str
    # How a value is read: "duration", "bool" or a plain type, as `add_flag` takes it.
    kind: Any
    help: str

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")


FLAGS = (
    _Flag("csv-path", "CSV_PATH", Path, "the DCGM exporter CSV to stream (required)"),
    _Flag("instance-id", "INSTANCE_ID", str, "this streamer's name in every message and log line"),
    _Flag("interval", "STREAM_INTERVAL", "duration", "the time between two rows (0: as fast as the agent takes them)"),
    _Flag("loop", "LOOP_MODE", "bool", "start over at the end of the file"),
    _Flag("queue-buffer", "QUEUE_BUFFER_SIZE", int, "rows the publish queue holds; the reader waits when it is full"),
    _Flag("queue-workers", "QUEUE_WORKERS", int, "workers publishing from the queue at once"),
    _Flag("socket", "AGENT_SOCKET", Path, "the agent's telemetry socket"),
)

# None where a setting has no default (the CSV path).
_DEFAULTS: dict[str, Any] = {f.name: None if f.default is MISSING else f.default for f in fields(Settings)}
_ENV_PARSERS: dict[Any, Callable[[str], Any]] = {"duration": go_duration, "bool": go_bool}


def settings_from(argv: Sequence[str], environ: dict[str, str] | os._Environ[str]) -> Settings:
    """The settings from the flags, else the environment, else the defaults; `UsageError` naming what is wrong."""
    parser = argparse.ArgumentParser(
        prog="gpuheal-telemetry", allow_abbrev=False, description="Stream DCGM CSV readings to the node's agent."
    )
    for flag in FLAGS:
        default = _DEFAULTS[flag.dest]
        text = environ.get(flag.env, "").strip()
        if text:
            try:
                default = _ENV_PARSERS.get(flag.kind, flag.kind)(text)
            except ValueError as error:
                raise UsageError(f"{flag.env}={text!r}: {error}") from None
        add_flag(parser, flag.name, default=default, kind=flag.kind, help=f"{flag.help} (${flag.env})")
    options = vars(parser.parse_args(list(argv)))
    if options["csv_path"] is None:
        raise UsageError("-csv-path (or CSV_PATH) is required: the DCGM exporter CSV to stream")
    settings = Settings(**options)
    if not settings.instance_id.strip():
        raise UsageError("-instance-id must not be empty")
    if not settings.instance_id.isprintable() or "\ud800" <= max(settings.instance_id) <= "\udfff":
        # Bytes that are not UTF-8 reach Python as lone surrogates, which no message or log line can carry.
        raise UsageError(f"-instance-id {settings.instance_id!r} is not UTF-8 text")
    if settings.interval < timedelta(0):
        raise UsageError(f"-interval must not be negative, not {settings.interval}")
    for name, number in (("-queue-buffer", settings.queue_buffer), ("-queue-workers", settings.queue_workers)):
        if number < 1:
            raise UsageError(f"{name} must be at least 1, not {number}")
    return settings
