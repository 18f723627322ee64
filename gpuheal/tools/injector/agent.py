"""`gpuheal injector agent`: the node agent that injects XIDs into this node's kernel log.

It answers `GET /health`, `POST /inject-xid` (`{"fault_id", "xid_type", "gpu_id"}`) and
`GET /faults` (what it injected since it started, oldest first). An injection is checked whole
before anything is written: the body's fields and types, a fault id of letters, digits, `.`, `_`
and `-`, not used before, an XID the injector knows (`gpuheal.tools.injector.xids`), and a GPU index
the driver lists on this node (`gpuheal.tools.injector.gpus`). Anything else is refused with 422
and a reason, but a fault id used before, which is a conflict (409): the fault is already in the
kernel log. The line then goes to the kernel log in one write (`gpuheal.tools.injector.kmsg`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from gpuheal.address import LOOPBACK
from gpuheal.tools.injector.auth import Token
from gpuheal.tools.injector.bodies import Refused, parse_body
from gpuheal.tools.injector.gpus import DEFAULT_ROOT, discover_gpus
from gpuheal.tools.injector.kmsg import DEFAULT_KMSG, KmsgWriteError, write_record_async
from gpuheal.tools.injector.serving import injector_application, serving
from gpuheal.tools.injector.xids import UnknownXid, describe, driver_line

log = logging.getLogger(__name__)

AGENT_PORT = 8083
# A fault id is a name safe in logs and URLs: it reaches the agent from whoever called the API.
FAULT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
# How many injected faults the agent remembers (and refuses ids of again); older ones are forgotten.
KEPT_FAULTS = 1000


class InjectXid(BaseModel):
    """The body of `POST /inject-xid`; strict, so `"79"` or `true` is no XID."""

    model_config = ConfigDict(extra="forbid", strict=True)

    fault_id: str = Field(pattern=FAULT_ID_PATTERN)
    xid_type: int = Field(ge=1)
    gpu_id: int = Field(ge=0)


@dataclass(frozen=True, slots=True)
class InjectedFault:
    """One injection as `GET /faults` lists it; `line` is the record written, priority prefix included."""

    fault_id: str
    xid: int
    gpu: int
    pci: str
    time: str
    line: str


@dataclass(frozen=True, slots=True)
class InjectorAgentSettings:
    token: Token
    host: str = LOOPBACK
    port: int = AGENT_PORT
    kmsg: Path = DEFAULT_KMSG
    gpus_root: Path = DEFAULT_ROOT


class InjectorAgent:
    """The agent's state (the faults it injected) and its HTTP application."""

    def __init__(self, settings: InjectorAgentSettings) -> None:
        self.settings = settings
        self._faults: OrderedDict[str, InjectedFault] = OrderedDict()
        # One injection at a time: the duplicate check and the write must not interleave.
        self._lock = asyncio.Lock()

    def application(self) -> web.Application:
        app = injector_application(self.settings.token)
        app.router.add_post("/inject-xid", self._inject)
        app.router.add_get("/faults", self._list)
        return app

    @property
    def faults(self) -> list[InjectedFault]:
        return list(self._faults.values())

    async def inject(self, request: InjectXid) -> InjectedFault:
        """Write the XID line for `request`; `Refused` says why not."""
        try:
            describe(request.xid_type)
        except UnknownXid as error:
            raise Refused(422, f"xid_type: {error}") from None
        gpus = await asyncio.to_thread(discover_gpus, self.settings.gpus_root)
        pci = gpus.get(request.gpu_id)
        if pci is None:
            known = ", ".join(str(index) for index in sorted(gpus)) or "none"
            raise Refused(422, f"gpu_id: no GPU {request.gpu_id} on this node (GPUs: {known})")
        line = driver_line(pci, request.xid_type)
        async with self._lock:
            if request.fault_id in self._faults:
                raise Refused(409, f"fault_id: {request.fault_id!r} was already injected")
            try:
                await write_record_async(self.settings.kmsg, line)
            except KmsgWriteError as error:
                raise Refused(503, f"the kernel log refused the record: {error}") from None
            fault = InjectedFault(
                request.fault_id, request.xid_type, request.gpu_id, pci, datetime.now(UTC).isoformat(), line
            )
            self._faults[fault.fault_id] = fault
            while len(self._faults) > KEPT_FAULTS:
                self._faults.popitem(last=False)
        log.info("injected XID %d on GPU %d (%s) as fault %s", fault.xid, fault.gpu, pci, fault.fault_id)
        return fault

    async def _inject(self, request: web.Request) -> web.Response:
        try:
            fault = await self.inject(await parse_body(request, InjectXid))
        except Refused as refused:
            return refused.answer()
        return web.json_response({"status": "injected", **asdict(fault)})

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response({"faults": [asdict(fault) for fault in self._faults.values()]})


@asynccontextmanager
async def running_agent(settings: InjectorAgentSettings) -> AsyncIterator[tuple[InjectorAgent, int]]:
    """The agent serving on its address while the block runs; yields it and its bound port."""
    agent = InjectorAgent(settings)
    async with serving(agent.application(), settings.host, settings.port, "XID injector agent") as port:
        yield agent, port
