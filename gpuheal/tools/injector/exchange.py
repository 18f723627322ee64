"""One HTTP call between the injector's parts (the CLI to the API, the API to an agent), and what
came of it: a status and a JSON object, or why no answer came.

The answer is read whole inside the request and decoded afterwards, so a body that is not JSON is
told apart from a call that failed. A request aiohttp will not even build (a header value it
refuses) is a failed call too, never an exception of another kind escaping to the caller.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp

from gpuheal.tools.injector.auth import bearer


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer: its status, and its body when that is a JSON object (None otherwise)."""

    status: int
    body: dict[str, Any] | None


class NoReply(Exception):
    """No answer came; `reason` says why, `maybe_delivered` whether the request may have been
    carried out all the same (it was sent, and the answer was lost or late)."""

    def __init__(self, reason: str, *, maybe_delivered: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.maybe_delivered = maybe_delivered


async def exchange(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    token: str,
    body: dict[str, Any] | None,
    timeout: aiohttp.ClientTimeout | None = None,
) -> Reply:
    """`method url` with `body` as JSON and the bearer `token`; the `Reply`, or `NoReply`."""
    try:
        async with session.request(
            method, url, json=body, headers=bearer(token), timeout=timeout or session.timeout
        ) as response:
            status, raw = response.status, await response.read()
    except ValueError as error:
        # aiohttp checks header values as it builds the request: nothing was sent.
        raise NoReply(f"cannot send the request: {error}", maybe_delivered=False) from None
    except (aiohttp.ClientError, TimeoutError) as error:
        # Only a connection never made is sure to have carried nothing.
        sent = not isinstance(error, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)
        raise NoReply(f"{type(error).__name__}: {error}", maybe_delivered=sent) from None
    try:
        decoded = json.loads(raw)
    except (ValueError, RecursionError):
        decoded = None
    return Reply(status, decoded if isinstance(decoded, dict) else None)
