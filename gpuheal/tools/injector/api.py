"""`gpuheal injector api`: the central API that routes injections to the agent on a node.

`POST /api/v1/faults/gpu/inject/xid-<n>` with `{"node_name", "gpu_id"}` gives the fault an id,
finds the node's agent through the Kubernetes API (`gpuheal.tools.injector.locate`) and asks it to
inject; the answer carries the `fault_id` and the agent's own answer. A node without an agent is
404, one whose agent is not Ready (or terminating) 503, each with a reason naming the node. Once
the fault has its id, every answer carries `fault_id` and `node_name`: the agent's refusals (422: an
unknown GPU, say) come back with them, and so does a 502 for an agent that cannot be reached or
answers out of turn. An agent that took the request and did not answer in time may have written
the line all the same; its 502 says so, so that the caller looks the fault up in `GET
/api/v1/faults` rather than retry and inject twice. `GET /api/v1/faults` lists what the agents
injected (`?node=` for one node's), asking a bounded number of agents at a time; an agent that
cannot be asked is listed under `errors`, not left out silently.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from kubernetes.aio.client.exceptions import ApiException
from pydantic import BaseModel, ConfigDict, Field

from gpuheal.address import LOOPBACK
from gpuheal.kubeclient import connect
from gpuheal.tools.injector.auth import Token
from gpuheal.tools.injector.bodies import Refused, parse_body, refusal
from gpuheal.tools.injector.exchange import NoReply, exchange
from gpuheal.tools.injector.locate import DEFAULT_SELECTOR, AgentEndpoint, AgentLocator, AgentNotFound, AgentNotRunning
from gpuheal.tools.injector.serving import injector_application, serving
from gpuheal.tools.injector.xids import UnknownXid, describe

API_PORT = 8080
INJECT_ROUTE = "/api/v1/faults/gpu/inject/xid-{xid}"
XID_NUMBER = re.compile(r"[0-9]{1,6}", re.ASCII)
NODE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
# How long an agent may take to connect, and to answer once asked: it writes one line, so anything
# longer means trouble. Both clocks start when the call is made, never while it waits for a connection.
AGENT_TIMEOUT = 10.0
# How many agents a listing asks at once; the rest wait their turn, their clocks not yet running.
LISTING_CONCURRENCY = 64


class InjectOnNode(BaseModel):
    """The body of an injection: which node, and which of its GPUs (0 unless given)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    # A Kubernetes node name (a DNS subdomain): it goes into a field selector, so nothing else may.
    node_name: str = Field(pattern=NODE_NAME_PATTERN, max_length=253)
    gpu_id: int = Field(0, ge=0)


class InjectorApi:
    """The central API over an `AgentLocator`; `session` calls the agents with the shared token."""

    def __init__(
        self, locator: AgentLocator, session: aiohttp.ClientSession, token: Token, agent_timeout: float = AGENT_TIMEOUT
    ) -> None:
        self._locator = locator
        self._session = session
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=agent_timeout, sock_read=agent_timeout)
        self._listing = asyncio.Semaphore(LISTING_CONCURRENCY)

    def application(self) -> web.Application:
        app = injector_application(self._token)
        app.router.add_post(INJECT_ROUTE, self._inject)
        app.router.add_get("/api/v1/faults", self._faults)
        return app

    async def _inject(self, request: web.Request) -> web.Response:
        text = request.match_info["xid"]
        if not XID_NUMBER.fullmatch(text):
            return refusal(422, f"xid: {text!r} is not an XID number")
        xid = int(text)
        try:
            describe(xid)
            body = await parse_body(request, InjectOnNode)
            [agent] = await self._agents(body.node_name)
        except UnknownXid as error:
            return refusal(422, f"xid: {error}")
        except Refused as refused:
            return refused.answer()
        # From here on every answer names the fault, so that a caller can look it up.
        named = {"fault_id": f"xid{xid}-{uuid.uuid4().hex[:16]}", "node_name": body.node_name}
        try:
            status, answer = await self._call(
                agent, "POST", "/inject-xid", {"fault_id": named["fault_id"], "xid_type": xid, "gpu_id": body.gpu_id}
            )
        except Refused as refused:
            return web.json_response({"error": refused.reason, **named}, status=refused.status)
        if status != 200:
            return web.json_response({**answer, **named}, status=status)
        return web.json_response({**named, "agent": answer})

    async def _faults(self, request: web.Request) -> web.Response:
        node = request.query.get("node")
        if node is not None and not re.fullmatch(NODE_NAME_PATTERN, node):
            return refusal(422, f"node: {node!r} is not a node name")
        try:
            agents = await self._agents(node)
        except Refused as refused:
            return refused.answer()
        answers = await asyncio.gather(*(self._listed(agent) for agent in agents))
        faults = [fault for listed, _ in answers for fault in listed]
        errors = [error for _, error in answers if error is not None]
        return web.json_response({"faults": faults, "errors": errors})

    async def _listed(self, agent: AgentEndpoint) -> tuple[list[dict[str, Any]], dict[str, str] | None]:
        """The faults one agent lists, each with its node; or an error naming the node."""
        try:
            async with self._listing:
                status, answer = await self._call(agent, "GET", "/faults", None)
        except Refused as refused:
            return [], {"node_name": agent.node, "error": refused.reason}
        if status != 200:
            return [], {"node_name": agent.node, "error": str(answer.get("error", status))}
        faults = answer.get("faults")
        if not isinstance(faults, list) or not all(isinstance(fault, dict) for fault in faults):
            return [], {"node_name": agent.node, "error": "its agent answered a listing that is not a list of faults"}
        return [{"node_name": agent.node, **fault} for fault in faults], None

    async def _agents(self, node: str | None) -> list[AgentEndpoint]:
        """The agent on `node`, or every running agent when None; `Refused` says why there is none."""
        try:
            return [await self._locator.on_node(node)] if node else await self._locator.running()
        except AgentNotFound as error:
            raise Refused(404, str(error)) from None
        except AgentNotRunning as error:
            raise Refused(503, str(error)) from None
        except ApiException as error:
            raise Refused(
                502, f"the Kubernetes API refused to list the injector agents: {error.status} {error.reason}"
            ) from None
        except (aiohttp.ClientError, TimeoutError) as error:
            raise Refused(502, f"the Kubernetes API cannot be reached: {type(error).__name__}: {error}") from None

    async def _call(
        self, agent: AgentEndpoint, method: str, path: str, body: dict[str, Any] | None
    ) -> tuple[int, dict[str, Any]]:
        """One call to an agent: its status and JSON object. `Refused` (502) when it cannot be reached,
        does not answer, refuses the token or answers with something other than a JSON object; for an
        injection (`body` with a `fault_id`) that may have been carried out, the reason says so."""
        where = f"the injector agent on node {agent.node!r} ({agent.url})"
        try:
            reply = await exchange(self._session, method, agent.url + path, self._token.current(), body, self._timeout)
        except NoReply as error:
            if not error.maybe_delivered:
                raise Refused(502, f"{where} cannot be reached: {error.reason}") from None
            if body is None or "fault_id" not in body:
                raise Refused(502, f"{where} did not answer: {error.reason}") from None
            raise Refused(
                502,
                f"{where} did not answer ({error.reason}), but the fault may have been written: look for fault "
                f"{body['fault_id']} in GET /api/v1/faults?node={agent.node} before trying again",
            ) from None
        if reply.status == 401:
            raise Refused(502, f"{where} refused the API's token: the two hold different Secrets")
        if reply.body is None:
            raise Refused(502, f"{where} answered with something other than a JSON object")
        return reply.status, reply.body


@dataclass(frozen=True, slots=True)
class InjectorApiSettings:
    token: Token
    # Where the injector agents run, and how their pods are labelled.
    namespace: str
    selector: str = DEFAULT_SELECTOR
    host: str = LOOPBACK
    port: int = API_PORT
    kubeconfig: Path | None = None
    agent_timeout: float = AGENT_TIMEOUT


@asynccontextmanager
async def running_api(settings: InjectorApiSettings) -> AsyncIterator[int]:
    """The central API serving on its address while the block runs; yields its bound port.

    Its Kubernetes client and the HTTP session it calls the agents with are closed afterwards.
    """
    async with await connect(settings.kubeconfig) as kubernetes, aiohttp.ClientSession() as session:
        locator = AgentLocator(kubernetes, settings.namespace, settings.selector)
        api = InjectorApi(locator, session, settings.token, settings.agent_timeout)
        async with serving(api.application(), settings.host, settings.port, "XID injector API") as port:
            yield port
