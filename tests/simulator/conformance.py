"""Raw HTTP helpers for the conformance tests: requests whose bodies, headers and codes matter."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp

from gpuheal_sim.simulator import SimulatedCluster

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"


@dataclass
class Reply:
    status: int
    body: Any
    warnings: list[str]


async def call(
    cluster: SimulatedCluster,
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: str | None = None,
    content_type: str = "application/json",
    params: dict[str, str] | None = None,
) -> Reply:
    """One request with the cluster's token; ``raw`` sends the body text as is (duplicate keys)."""
    data = raw if raw is not None else (json.dumps(body) if body is not None else None)
    headers = {"Authorization": f"Bearer {cluster.token}", "Content-Type": content_type}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, cluster.url + path, data=data, headers=headers, params=params, ssl=False) as resp,
    ):
        text = await resp.text()
        return Reply(resp.status, json.loads(text) if text else None, resp.headers.getall("Warning", []))


def warning(text: str) -> str:
    """The ``Warning`` header the API server writes for ``text`` (code 299, agent ``-``)."""
    return '299 - "' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
