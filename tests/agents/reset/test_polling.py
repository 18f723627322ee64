"""Where the agent's role may only `get` nodes (list/watch → 403), the watcher polls its node with GET."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from kubernetes.aio import client as k8s

from gpuheal.domain.gpu_reset import GPU_RESET_CONDITION, GPU_RESET_REQUEST_ANNOTATION, GpuResetOrder, GpuResetReport
from tests.agents.reset.conftest import Node, eventually


@dataclass
class GetOnlyApi:
    """A Kubernetes API for one node that forbids list and watch, as a role with only `get nodes` sees it."""

    name: str
    annotations: dict[str, str] = field(default_factory=dict)
    conditions: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def node(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "annotations": dict(self.annotations), "resourceVersion": "7"},
            "status": {"conditions": list(self.conditions.values())},
        }

    async def list_nodes(self, request: web.Request) -> web.Response:
        self.requests.append("watch" if request.query.get("watch") else "list")
        status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403}
        return web.json_response(status, status=403)

    async def get_node(self, request: web.Request) -> web.Response:
        self.requests.append("get")
        return web.json_response(self.node())

    async def patch_status(self, request: web.Request) -> web.Response:
        self.requests.append("patch status")
        assert request.content_type == "application/strategic-merge-patch+json"
        for condition in (await request.json())["status"]["conditions"]:
            self.conditions[condition["type"]] = condition
        return web.json_response(self.node())

    def report(self) -> GpuResetReport | None:
        condition = self.conditions.get(GPU_RESET_CONDITION)
        return GpuResetReport.model_validate_json(condition["message"]) if condition else None


@pytest.fixture
async def get_only(node: Node) -> AsyncIterator[tuple[GetOnlyApi, k8s.ApiClient]]:
    fake = GetOnlyApi(node.cluster.node)
    app = web.Application()
    app.router.add_get("/api/v1/nodes", fake.list_nodes)
    app.router.add_get(f"/api/v1/nodes/{fake.name}", fake.get_node)
    app.router.add_patch(f"/api/v1/nodes/{fake.name}/status", fake.patch_status)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    configuration = k8s.Configuration(host=f"http://127.0.0.1:{port}")
    api = k8s.ApiClient(configuration)
    try:
        yield fake, api
    finally:
        await api.close()  # type: ignore[no-untyped-call]
        await runner.cleanup()


def order(gpu: str, order_id: str) -> str:
    return GpuResetOrder(id=order_id, holder="h", gpus=[gpu], at=datetime.now(UTC)).model_dump_json()


async def test_forbidden_list_and_watch_fall_back_to_polling(
    node: Node, get_only: tuple[GetOnlyApi, k8s.ApiClient]
) -> None:
    fake, api = get_only
    fake.annotations[GPU_RESET_REQUEST_ANNOTATION] = order(node.gpus[0].uuid, "first")
    resetter = node.kernel_log_resetter()
    async with node.watcher(resetter, api=api) as watcher:
        await eventually(lambda: getattr(fake.report(), "id", "") == "first", "the first report")
        assert watcher.polling
        fake.annotations[GPU_RESET_REQUEST_ANNOTATION] = order(node.gpus[1].uuid, "second")
        await eventually(lambda: getattr(fake.report(), "id", "") == "second", "the second report, seen by polling")

    assert fake.requests[0] == "list", "it tried list (and watch) first"
    assert fake.requests.count("list") == 1, "after one 403 it polls with GET only"
    assert fake.requests.count("patch status") == 2
    assert resetter.calls == [[node.gpus[0].uuid], [node.gpus[1].uuid]]
    condition = fake.conditions[GPU_RESET_CONDITION]
    assert (condition["status"], condition["reason"]) == ("True", "ResetConfirmed")
    assert json.loads(condition["message"])["confirmed_by"] == "kernel-log"
