"""The simulator's own control API under ``/sim/v1`` (not Kubernetes): reboots and GPU faults.

This is what a "simulator reboot provider" calls to reboot a node, and how tests inject faults:

* ``POST /sim/v1/nodes/{name}/reboot`` (body optional ``{"requestId": str}``) -> 202
  ``{"node", "requestedAt", "rebootRequests"}``; a repeated ``requestId`` is answered again with
  ``"duplicate": true`` and not counted, a request during a reboot adds ``"alreadyRebooting": true``.
* ``POST /sim/v1/nodes/{name}/terminate`` -> 202 ``{"node", "terminatedAt"}``: the machine stops
  for good and its Node is deleted soon after (as a cloud's node controller does); terminating it
  again answers with the first termination and ``"alreadyTerminated": true``.
* ``GET /sim/v1/nodes/{name}`` -> the simulator's truth: ``{"name", "bootId", "ready",
  "rebooting", "rebootRequests", "rebootsCompleted", "lastRebootRequestAt", "terminatedAt",
  "gpus": [...]}``.
* ``POST /sim/v1/nodes/{name}/faults`` (``{"xid": int, "gpu": index or UUID, "message"?: str,
  "survivesReboot"?: bool}``) -> 201 ``{"node", "xid", "gpu", "gpuHealthy"}``.
* ``DELETE /sim/v1/nodes/{name}/faults`` -> 200, all faults cleared.
* ``GET /sim/v1/nodes`` -> ``{"nodes": [truth, ...]}``; ``GET /sim/v1/healthz``.
* ``POST /sim/v1/clouds/{cloud}/faults`` (``{"fault": "throttle" | "not_found" | "denied",
  "count"?: int}``) -> 201 ``{"cloud", "fault", "pending"}``: the cloud's next ``count`` requests
  fail that way, in its own protocol's words.

Unknown nodes are 404 ``{"error": ...}``; bad bodies are 400 ``{"error": ..., "field": ...}``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from .clouds.faults import CloudFault
from .gpus import UnknownGpu
from .jsonvalues import JsonDict
from .nodes import UnknownNode
from .simulation import Simulation


class BadBody(Exception):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def _error(status: int, message: str, field: str | None = None) -> web.Response:
    body: JsonDict = {"error": message}
    if field is not None:
        body["field"] = field
    return web.json_response(body, status=status)


async def _json_body(request: web.Request, required: bool) -> JsonDict:
    raw = await request.read()
    if not raw.strip():
        if required:
            raise BadBody("a JSON object body is required")
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadBody("body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadBody("body must be a JSON object")
    return body


def _optional_str(body: JsonDict, field: str) -> str | None:
    value = body.get(field)
    if value is not None and not isinstance(value, str):
        raise BadBody(f"{field} must be a string", field)
    return value


class ControlApi:
    def __init__(self, sim: Simulation) -> None:
        self.sim = sim

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/sim/v1/healthz", self.healthz)
        app.router.add_get("/sim/v1/nodes", self.list_nodes)
        app.router.add_get("/sim/v1/nodes/{name}", self.get_node)
        app.router.add_post("/sim/v1/nodes/{name}/reboot", self.reboot)
        app.router.add_post("/sim/v1/nodes/{name}/terminate", self.terminate)
        app.router.add_post("/sim/v1/nodes/{name}/faults", self.add_fault)
        app.router.add_delete("/sim/v1/nodes/{name}/faults", self.clear_faults)
        app.router.add_post("/sim/v1/clouds/{cloud}/faults", self.add_cloud_fault)

    @staticmethod
    def _not_found(name: str) -> web.Response:
        return _error(404, f'node "{name}" not found')

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "nodes": len(self.sim.lifecycle.nodes)})

    async def list_nodes(self, request: web.Request) -> web.Response:
        truths = []
        for name in sorted(self.sim.lifecycle.nodes):
            try:
                truths.append(self.sim.lifecycle.truth(name))
            except UnknownNode:
                continue
        return web.json_response({"nodes": truths})

    async def get_node(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            return web.json_response(self.sim.lifecycle.truth(name))
        except UnknownNode:
            return self._not_found(name)

    async def reboot(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            body = await _json_body(request, required=False)
            request_id = _optional_str(body, "requestId")
            receipt = self.sim.lifecycle.request_reboot(name, request_id)
        except UnknownNode:
            return self._not_found(name)
        except BadBody as exc:
            return _error(400, str(exc), exc.field)
        # The request is recorded and the reboot under way; only the answer is late, as a slow cloud's.
        await asyncio.sleep(self.sim.config.reboot_reply_seconds)
        return web.json_response(receipt, status=202)

    async def terminate(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            return web.json_response(self.sim.lifecycle.terminate(name), status=202)
        except UnknownNode:
            return self._not_found(name)

    async def add_fault(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            self.sim.lifecycle.state(name)
        except UnknownNode:
            return self._not_found(name)
        try:
            body = await _json_body(request, required=True)
            xid = body.get("xid")
            if isinstance(xid, bool) or not isinstance(xid, int) or xid < 0:
                raise BadBody("xid must be a non-negative integer", "xid")
            gpu: Any = body.get("gpu", 0)
            if isinstance(gpu, bool) or not isinstance(gpu, (int, str)):
                raise BadBody("gpu must be a GPU index or a GPU UUID", "gpu")
            message = _optional_str(body, "message")
            survives = body.get("survivesReboot", False)
            if not isinstance(survives, bool):
                raise BadBody("survivesReboot must be a boolean", "survivesReboot")
            result = self.sim.lifecycle.inject_fault(name, xid, gpu, message, survives)
        except BadBody as exc:
            return _error(400, str(exc), exc.field)
        except UnknownGpu as exc:
            return _error(400, str(exc), "gpu")
        return web.json_response(result, status=201)

    async def clear_faults(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            self.sim.lifecycle.clear_faults(name)
            return web.json_response(self.sim.lifecycle.truth(name))
        except UnknownNode:
            return self._not_found(name)

    async def add_cloud_fault(self, request: web.Request) -> web.Response:
        cloud = request.match_info["cloud"]
        if cloud not in self.sim.cloud_names:
            return _error(404, f"unknown cloud {cloud!r}; one of {', '.join(sorted(self.sim.cloud_names))}")
        try:
            body = await _json_body(request, required=True)
            raw = body.get("fault")
            try:
                fault = CloudFault(str(raw))
            except ValueError:
                raise BadBody(f"fault must be one of {', '.join(f.value for f in CloudFault)}", "fault") from None
            count = body.get("count", 1)
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise BadBody("count must be a positive integer", "count")
        except BadBody as exc:
            return _error(400, str(exc), exc.field)
        self.sim.cloud_faults.inject(cloud, fault, count)
        return web.json_response(
            {"cloud": cloud, "fault": fault.value, "pending": self.sim.cloud_faults.pending(cloud)}, status=201
        )
