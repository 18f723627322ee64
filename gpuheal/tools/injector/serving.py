"""Serving an injector's aiohttp application on an address, loopback unless told otherwise."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from gpuheal.address import parse_host_port

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


class ListenError(RuntimeError):
    """The server could not listen where it was told to."""


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `[IPV6]:PORT`, `:PORT` or `PORT` (loopback); port 0 is any free one."""
    return parse_host_port(text, default_host=LOOPBACK, lowest_port=0)


@asynccontextmanager
async def serving(app: web.Application, host: str, port: int, what: str) -> AsyncIterator[int]:
    """Serve `app` on host:port while the block runs; yields the bound port (useful with 0)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as error:
            # asyncio's bind error repeats the address in its text; the errno says it plainly.
            reason = os.strerror(error.errno) if error.errno else str(error)
            raise ListenError(f"cannot serve the {what} on {host}:{port}: {reason}") from error
        bound = int(runner.addresses[0][1])
        log.info("%s on http://%s:%d", what, host, bound)
        yield bound
    finally:
        await runner.cleanup()
