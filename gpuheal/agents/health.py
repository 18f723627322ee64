"""The agent's health endpoint: `GET /metrics` (Prometheus text) and `GET /readyz` over HTTP.

`gpuheal agent` serves it on 127.0.0.1:9465 unless `--health-address` says otherwise (`''` turns it
off, `*:PORT` is every address); a bare `PORT` or `:PORT` listens on loopback only. `/readyz` answers 200 `ok` while the agent would lose nothing if
it stopped now, and 503 with a one-line reason otherwise (a lane holds faults in memory because the
disk refused them, a spool is over its budget). `/metrics` serves the registry it is given, one per
agent, so several agents can run in one process (the tests, the demo).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.registry import CollectorRegistry

from gpuheal.address import bind_host

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HealthEndpointSettings:
    """Where `gpuheal agent` serves this endpoint unless told otherwise: loopback, so a scraper on the
    machine reads the metrics and no other machine can. `AgentSettings` itself leaves it off, since
    several agents run in one process in the tests and the demo."""

    health_address: str | None = "127.0.0.1:9465"


class HealthServerError(RuntimeError):
    """The health endpoint could not listen where it was told to."""


class HealthServer:
    """Serves `/metrics` from `registry` and `/readyz` from `problems` (empty when ready)."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, problems: Callable[[], list[str]]) -> None:
        self.host = host
        self.port = port
        self._registry = registry
        self._problems = problems
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen; `port` is then the bound one (useful with 0). `HealthServerError` when it cannot."""
        app = web.Application()
        app.router.add_get("/metrics", make_aiohttp_handler(self._registry))
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, bind_host(self.host), self.port).start()
        except OSError as error:
            await runner.cleanup()
            # asyncio's bind error repeats the address in its text; the errno says it plainly.
            reason = os.strerror(error.errno) if error.errno else str(error)
            raise HealthServerError(f"cannot serve the agent's health on {self.host}:{self.port}: {reason}") from error
        self._runner = runner
        self.port = runner.addresses[0][1]
        log.info("agent health on http://%s:%d (/metrics, /readyz)", self.host, self.port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _readyz(self, request: web.Request) -> web.Response:
        problems = self._problems()
        if problems:
            return web.Response(status=503, text="; ".join(problems) + "\n")
        return web.Response(text="ok\n")
