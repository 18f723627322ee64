"""Timestamps as the API server writes and reads them: UTC, RFC 3339, with a ``Z`` suffix."""

from __future__ import annotations

import datetime as _dt


def utcnow() -> _dt.datetime:
    """The current time in UTC (timezone-aware)."""
    return _dt.datetime.now(_dt.UTC)


def rfc3339(moment: _dt.datetime | None = None) -> str:
    """Format a time the way the API server does: whole seconds, UTC, ``Z`` suffix."""
    moment = moment or utcnow()
    return moment.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_micro(moment: _dt.datetime | None = None) -> str:
    """Format a ``MicroTime`` (used by events.k8s.io ``eventTime``)."""
    moment = moment or utcnow()
    return moment.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339(text: str) -> _dt.datetime:
    """Parse an RFC 3339 timestamp as written by ``rfc3339``/``rfc3339_micro`` (or with an offset)."""
    return _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
