"""The injector's shared secret: where it comes from, and the check every request but `/health` passes.

The token is read from a file (a mounted Secret, `--token-file`), or else from an environment
variable; a process without one refuses to start, so an injector is never left open. A token is
visible ASCII only (no spaces or control characters), since it travels in an HTTP header; anything
else is refused at start as a missing token would be.

A server's token follows its file: a Secret that is rotated (or re-rendered with a new random token)
reaches the mounted file without a restart, so every request stats the file and reads it again when
it changed. A file that turns unreadable or invalid keeps the last good token, with a warning:
locking every caller out would not help anyone.

Requests carry the token as `Authorization: Bearer <token>`; the scheme is case-insensitive (RFC
7235), the token is compared in constant time.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

log = logging.getLogger(__name__)

TOKEN_FILE_ENV = "GPUHEAL_INJECTOR_TOKEN_FILE"  # noqa: S105 - a variable's name
TOKEN_ENV = "GPUHEAL_INJECTOR_TOKEN"  # noqa: S105 - a variable's name
OPEN_PATHS = frozenset({"/health"})
# What an HTTP header carries unchanged: printable ASCII without the space.
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+", re.ASCII)


class MissingToken(ValueError):
    """No usable token: the message says where one was looked for, and what was wrong with it."""


def load_token(token_file: Path | None) -> str:
    """The token from `token_file`, else from $GPUHEAL_INJECTOR_TOKEN; surrounding whitespace is dropped."""
    if token_file is not None:
        return _read_token_file(token_file)
    return _checked(os.environ.get(TOKEN_ENV, ""), f"${TOKEN_ENV}", f"give --token-file (or ${TOKEN_FILE_ENV}) or")


def _read_token_file(token_file: Path) -> str:
    try:
        text = token_file.read_bytes().decode("utf-8")
    except OSError as error:
        raise MissingToken(f"cannot read the token file {token_file}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise MissingToken(f"the token file {token_file} is not UTF-8 text") from None
    return _checked(text, f"the token file {token_file}", None)


def _checked(text: str, where: str, hint: str | None) -> str:
    token = text.strip()
    if not token:
        raise MissingToken(f"no token: {hint} set ${TOKEN_ENV}" if hint else f"{where} is empty")
    if not _VISIBLE_ASCII.fullmatch(token):
        raise MissingToken(f"{where} holds a token that is not visible ASCII (no spaces or control characters)")
    return token


class Token:
    """The token a server checks and sends: fixed, or its file's, read again whenever the file changes."""

    def __init__(self, value: str, file: Path | None = None) -> None:
        self._value = value
        self._file = file
        self._seen = self._stamp()

    @classmethod
    def load(cls, token_file: Path | None) -> Token:
        """The token of `token_file` (followed as it changes), else the environment's; `MissingToken` if none."""
        return cls(load_token(token_file), token_file)

    def current(self) -> str:
        """The token now: one stat of the file, and a read only when it changed since the last."""
        if self._file is None:
            return self._value
        stamp = self._stamp()
        if stamp != self._seen:
            self._seen = stamp
            try:
                self._value = _read_token_file(self._file)
            except MissingToken as error:
                log.warning("keeping the injector's last good token: %s", error)
            else:
                log.info("the injector's token file %s changed: its new token holds from now", self._file)
        return self._value

    def _stamp(self) -> tuple[int, int, int, int] | None:
        # The kubelet replaces a Secret's file by swapping a symlink: the inode changes with it.
        if self._file is None:
            return None
        try:
            st = self._file.stat()
        except OSError:
            return None
        return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


def bearer(token: str) -> dict[str, str]:
    """The header that carries `token` on a request."""
    return {"Authorization": f"Bearer {token}"}


def require_token(token: Token) -> Middleware:
    """An aiohttp middleware answering 401 to any request but `/health` without the current token."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in OPEN_PATHS and not _presents(request.headers.get("Authorization", ""), token.current()):
            return web.json_response(
                {"error": "missing or wrong bearer token"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="gpuheal-injector"'},
            )
        return await handler(request)

    return check


def _presents(authorization: str, token: str) -> bool:
    """Whether an Authorization header carries `token` under the Bearer scheme, in any case."""
    scheme, _, credentials = authorization.partition(" ")
    given = credentials.strip(" ").encode("utf-8", "replace")
    return scheme.lower() == "bearer" and hmac.compare_digest(given, token.encode())
