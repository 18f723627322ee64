"""The injector's shared secret: where it comes from, and the check every request but `/health` passes.

The token is read from a file (a mounted Secret, `--token-file`), or else from an environment
variable; a process without one refuses to start, so an injector is never left open. Requests carry
it as `Authorization: Bearer <token>`, compared in constant time.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware

TOKEN_FILE_ENV = "GPUHEAL_INJECTOR_TOKEN_FILE"  # noqa: S105 - a variable's name
TOKEN_ENV = "GPUHEAL_INJECTOR_TOKEN"  # noqa: S105 - a variable's name
OPEN_PATHS = frozenset({"/health"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class MissingToken(ValueError):
    """No usable token: the message says where one was looked for."""


def load_token(token_file: Path | None) -> str:
    """The token from `token_file`, else from $GPUHEAL_INJECTOR_TOKEN; surrounding whitespace is dropped."""
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise MissingToken(f"cannot read the token file {token_file}: {error.strerror}") from None
        if not token:
            raise MissingToken(f"the token file {token_file} is empty")
        return token
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise MissingToken(f"no token: give --token-file (or ${TOKEN_FILE_ENV}) or set ${TOKEN_ENV}")
    return token


def bearer(token: str) -> dict[str, str]:
    """The header that carries `token` on a request."""
    return {"Authorization": f"Bearer {token}"}


def require_token(token: str) -> Middleware:
    """An aiohttp middleware answering 401 to any request but `/health` without `token`."""
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in OPEN_PATHS:
            given = request.headers.get("Authorization", "").encode("utf-8", "replace")
            if not hmac.compare_digest(given, expected):
                return web.json_response(
                    {"error": "missing or wrong bearer token"},
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="gpuheal-injector"'},
                )
        return await handler(request)

    return check
