"""The agent's own Node, as raw JSON: get it, list-and-watch it, set one of its status conditions.

Raw JSON rather than the client's models: the watcher reads one annotation and one condition, and
a node's full object (hundreds of images in `status.images`) need not be turned into models on
every heartbeat. Requests go through the shared asyncio `ApiClient`; a non-2xx answer raises
`ApiException` with the server's status.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
from kubernetes.aio import client
from kubernetes.aio.client.exceptions import ApiException

STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
# A watch line carries one whole Node; real ones reach a few hundred KiB.
_MAX_LINE = 16 << 20

JsonNode = dict[str, Any]


class NodeApi:
    """Reads and watches one node, and patches conditions into its status subresource."""

    def __init__(self, api: client.ApiClient, node: str, *, request_timeout: timedelta) -> None:
        self._core = client.CoreV1Api(api)
        self.node = node
        self._timeout = request_timeout.total_seconds()

    async def get(self) -> JsonNode | None:
        """The node (needs `get nodes`); None when it does not exist."""
        response = await self._core.read_node_without_preload_content(self.node, _request_timeout=self._timeout)
        try:
            if response.status == 404:
                return None
            body = await _json(response)
        finally:
            response.release()
        return body if isinstance(body, dict) else None

    async def list(self) -> tuple[JsonNode | None, str]:
        """The node (None when absent) and the list's resourceVersion to watch from (needs `list nodes`)."""
        response = await self._core.list_node_without_preload_content(
            field_selector=self._selector(), _request_timeout=self._timeout
        )
        try:
            body = await _json(response)
        finally:
            response.release()
        if not isinstance(body, dict):
            return None, ""
        found = next((item for item in body.get("items") or [] if isinstance(item, dict)), None)
        return found, str((body.get("metadata") or {}).get("resourceVersion") or "")

    async def watch(self, resource_version: str, timeout_seconds: int) -> AsyncIterator[JsonNode]:
        """Each new state of the node from `resource_version` on (needs `watch nodes`).

        Ends when the server closes the watch, or with an ERROR event (such as 410 Gone for a version
        too old), after which the caller lists again. Bookmarks and deletions yield nothing.
        """
        response = await self._core.list_node_without_preload_content(
            field_selector=self._selector(),
            watch=True,
            resource_version=resource_version or None,
            timeout_seconds=timeout_seconds,
            allow_watch_bookmarks=True,
            # The whole request may last the watch, plus slack for the server to close it.
            _request_timeout=timeout_seconds + 30.0,
        )
        try:
            if response.status != 200:
                await _json(response)  # raises with the server's answer
            while True:
                line = await response.content.readline(max_line_length=_MAX_LINE)
                if not line:
                    return
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(event, dict):
                    continue
                kind, obj = event.get("type"), event.get("object")
                if kind == "ERROR":
                    return
                if kind in ("ADDED", "MODIFIED") and isinstance(obj, dict):
                    yield obj
        finally:
            response.close()  # not release(): the connection may be mid-stream, never reuse it

    async def set_condition(self, condition: dict[str, str]) -> None:
        """Merge one condition (by `type`) into the node's status (needs `patch nodes/status`)."""
        await self._core.patch_node_status(
            self.node,
            {"status": {"conditions": [condition]}},
            _content_type=STRATEGIC_MERGE_PATCH,
            _request_timeout=self._timeout,
        )

    def _selector(self) -> str:
        return f"metadata.name={self.node}"


async def _json(response: aiohttp.ClientResponse) -> Any:
    data = await response.read()
    if not 200 <= response.status < 300:
        raise ApiException(
            status=response.status, reason=response.reason, body=data.decode("utf-8", errors="replace")[:2000]
        )
    return json.loads(data)
