"""Flags as Go's `flag` package takes them, on argparse.

`-name=value`, `-name value`, `--name=value` and `--name value` all set `name`; a boolean flag given
alone (`-background`) is true, and takes `true`/`false` (or 1/0, t/f) after `=`. Durations are Go's:
a sequence of numbers with units (`15s`, `100ms`, `1m30s`, `1.5h`).
"""

from __future__ import annotations

import argparse
import re
from datetime import timedelta
from typing import Any

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_TRUE = {"1", "t", "true"}
_FALSE = {"0", "f", "false"}


def go_duration(text: str) -> timedelta:
    """A Go duration (`15s`, `100ms`, `1m30s`); "0" alone is zero. Raises ValueError naming the text."""
    text = text.strip()
    if text == "0":
        return timedelta(0)
    seconds, at = 0.0, 0
    for match in _PART.finditer(text):
        if match.start() != at:
            break
        seconds += float(match.group(1)) * _UNITS[match.group(2)]
        at = match.end()
    if at == 0 or at != len(text):
        raise ValueError(f"{text!r} is not a duration (a number with a unit: 15s, 100ms, 1m30s)")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:  # past timedelta's 999,999,999 days, or an infinite float
        raise ValueError(f"{text!r} is too long a duration") from None


def go_bool(text: str) -> bool:
    """Go's boolean spellings; raises ValueError naming the text."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{text!r} is not a boolean (true or false)")


def _argparse_type(parse: Any, name: str) -> Any:
    def parsed(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parsed.__name__ = name
    return parsed


def add_flag(parser: argparse.ArgumentParser, name: str, **options: Any) -> None:
    """Add `-name` and `--name`; `kind` is "duration", "bool" or a plain type (str by default)."""
    kind = options.pop("kind", str)
    if kind == "duration":
        options["type"] = _argparse_type(go_duration, "duration")
    elif kind == "bool":
        options.update(type=_argparse_type(go_bool, "boolean"), nargs="?", const=True)
    else:
        options["type"] = kind
    parser.add_argument(f"-{name}", f"--{name}", dest=name.replace("-", "_"), **options)
