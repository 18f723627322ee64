"""Serving an injector's aiohttp application on an address (`gpuheal.address.parse_listen_address`:
loopback unless told otherwise, `*:PORT` for every address)."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from gpuheal.address import bind_host
from gpuheal.tools.injector.auth import Token, require_token
from gpuheal.tools.injector.errors import json_errors

log = logging.getLogger(__name__)

# The largest request body either server takes: its bodies are a few small fields.
MAX_BODY = 64 * 1024


class ListenError(RuntimeError):
    """The server could not listen where it was told to."""


def injector_application(token: Token) -> web.Application:
    """The application both injector servers start from: `GET /health` (no token needed, for the
    kubelet's probes), every other path behind the token, every error answered in JSON, bodies of at
    most `MAX_BODY` bytes."""
    app = web.Application(middlewares=[json_errors, require_token(token)], client_max_size=MAX_BODY)
    app.router.add_get("/health", _health)
    return app


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@asynccontextmanager
async def serving(app: web.Application, host: str, port: int, what: str) -> AsyncIterator[int]:
    """Serve `app` on host:port while the block runs; yields the bound port (useful with 0)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    shown = f"[{host}]" if ":" in host else host
    try:
        try:
            await web.TCPSite(runner, bind_host(host), port).start()
        except OSError as error:
            # asyncio's bind error repeats the address in its text; the errno says it plainly.
            reason = os.strerror(error.errno) if error.errno else str(error)
            raise ListenError(f"cannot serve the {what} on {shown}:{port}: {reason}") from error
        bound = int(runner.addresses[0][1])
        log.info("%s on http://%s:%d", what, shown, bound)
        yield bound
    finally:
        await runner.cleanup()
