"""Waiting for a node: one heartbeating activity that watches the node until a condition holds.

A reboot of a slow bare-metal machine takes many minutes; polling it from the workflow would write
a timer and a read into the history every few seconds. `wait_for_node` instead watches the one node
(list, then watch from the list's resourceVersion, as client-go's reflector does), judges each new
state with the request's condition (gpuheal.domain.node_wait) and answers once: the condition held,
the node was deleted, or the timeout passed (with the last state seen).

Every state it sees goes out as a heartbeat together with its resourceVersion, so a retried attempt
(a worker died) resumes the watch where the last one was instead of starting over, and the timeout
counts from when the wait was first scheduled, not from the retry.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from kubernetes.aio import client, watch
from kubernetes.aio.client.exceptions import ApiException
from pydantic import ValidationError
from temporalio import activity

from gpuheal.activities.contract import implements
from gpuheal.activities.nodes import node_state
from gpuheal.domain import contracts
from gpuheal.domain.node_wait import NodeWaitProgress, NodeWaitRequest, NodeWaitResult
from gpuheal.domain.steps import NodeState

# How long one watch request lasts when the activity has no heartbeat timeout: each reconnect
# heartbeats, so a node that does not change still shows its waiter alive.
_WATCH_SECONDS = 60
# Slack on the client side for the server to end a watch at its timeoutSeconds.
_REQUEST_SLACK_SECONDS = 30.0
# After a connection that broke (an API server rolling over): a pause before watching again.
_RECONNECT_PAUSE_SECONDS = 1.0
_GONE = 410


class NodeWaitActivities:
    """The activity that waits for a node, over one shared Kubernetes client."""

    def __init__(self, api: client.ApiClient) -> None:
        self._core = client.CoreV1Api(api)

    @implements(contracts.WAIT_FOR_NODE)
    async def wait_for_node(self, request: NodeWaitRequest) -> NodeWaitResult:
        """Watch the node until `request.condition` holds, the node is deleted or `request.timeout` passes."""
        info = activity.info()
        remaining = info.scheduled_time + request.timeout - datetime.now(UTC)
        states = _NodeStates(self._core, request.node, _WatchTiming.within(info.heartbeat_timeout))
        try:
            async with asyncio.timeout(max(remaining.total_seconds(), 0.0)):
                async with aclosing(states.follow(_resumed(info.heartbeat_details))) as seen:
                    async for state in seen:
                        activity.heartbeat(NodeWaitProgress(state=state, resource_version=states.resource_version))
                        if not state.exists or request.condition.met(state):
                            return NodeWaitResult(reached=request.condition.met(state), state=state)
        except TimeoutError:
            pass
        # Time is up: one fresh read decides, so a change the watch had not delivered yet still counts.
        state = await states.relist()
        return NodeWaitResult(reached=request.condition.met(state), state=state)


class _NodeStates:
    """The states of one node: a list, then a watch resumed from the last resourceVersion seen."""

    def __init__(self, core: client.CoreV1Api, node: str, timing: _WatchTiming) -> None:
        self._core = core
        self._selector = f"metadata.name={node}"
        self._node = node
        self._timing = timing
        self.state = node_state(node, None)
        self.resource_version = ""

    async def relist(self) -> NodeState:
        """The node as a list shows it now (absent when it does not exist), remembering the list's version."""
        nodes = await self._core.list_node(field_selector=self._selector, _request_timeout=self._timing.request_seconds)
        self.resource_version = (nodes.metadata.resource_version if nodes.metadata else None) or ""
        self.state = node_state(self._node, nodes.items[0] if nodes.items else None)
        return self.state

    async def follow(self, resumed: NodeWaitProgress | None) -> AsyncGenerator[NodeState]:
        """The current state, then the state after every change, bookmark and reconnect, for ever.

        A watch ends when the server closes it (its timeoutSeconds) and is reopened from the last
        resourceVersion; a version the server no longer keeps (410 Gone) means listing again.
        """
        if resumed is None:
            await self.relist()
        else:
            self.state, self.resource_version = resumed.state, resumed.resource_version
        yield self.state
        while True:
            try:
                async for state in self._watch():
                    yield state
            except TimeoutError:
                pass  # the server kept the watch open past its timeoutSeconds: open another
            except aiohttp.ClientError as error:
                # The connection broke (an API server restarting, a load balancer's reset): watch
                # again from the last version seen, as client-go's reflector does.
                activity.logger.info("watch of %s broke (%s); watching again", self._node, error)
                await asyncio.sleep(_RECONNECT_PAUSE_SECONDS)
            except ApiException as error:
                if error.status != _GONE:
                    raise
                activity.logger.info("watch of %s expired (%s); listing again", self._node, error.reason)
                await self.relist()
            yield self.state

    async def _watch(self) -> AsyncGenerator[NodeState]:
        """The node's state after each event of one watch request, from `resource_version` on."""
        stream: Any = _BorrowingWatch(self._core.api_client)  # the watch module is untyped
        async with stream:
            async for event in stream.stream(
                self._core.list_node,
                field_selector=self._selector,
                resource_version=self.resource_version or None,
                allow_watch_bookmarks=True,
                timeout_seconds=self._timing.watch_seconds,
                _request_timeout=self._timing.request_seconds,
            ):
                self.resource_version = stream.resource_version or self.resource_version
                if event["type"] == "DELETED":
                    self.state = node_state(self._node, None)
                elif event["type"] != "BOOKMARK":
                    self.state = node_state(self._node, event["object"])
                yield self.state


class _BorrowingWatch(watch.Watch):
    """kubernetes' watch, turning events into models with the activity's API client.

    The library's own builds an API client for each watch only to turn its events into models, and
    with it a TLS context loaded with the system's certificates: about 20 ms of CPU per watch, twice
    per remediation, most of a storm's worker time in node waits. This one borrows the client it is
    given (what `Watch.__init__` sets, but that client) and leaves it open when the watch ends.
    """

    def __init__(self, api: client.ApiClient) -> None:  # Watch.__init__ would build the client this avoids
        self._raw_return_type = None
        self._stop = False
        self._api_client = api
        self.resource_version: str | None = None
        self.resp: Any = None

    async def close(self) -> None:
        if self.resp is not None:  # this watch's response only: the borrowed client is the activity's
            self.resp.release()
            self.resp = None


@dataclass(frozen=True, slots=True)
class _WatchTiming:
    """How long the server keeps one watch open, and how long the client waits on any one request."""

    watch_seconds: int
    request_seconds: float

    @classmethod
    def within(cls, heartbeat_timeout: timedelta | None) -> _WatchTiming:
        """Every request ends, and so heartbeats, before the heartbeat timeout: a watch after half of it,
        a request the server leaves hanging after four fifths, so the watch is reopened rather than the
        attempt timed out."""
        if heartbeat_timeout is None:
            return cls(_WATCH_SECONDS, _WATCH_SECONDS + _REQUEST_SLACK_SECONDS)
        seconds = heartbeat_timeout.total_seconds()
        watch_seconds = max(1, math.floor(seconds / 2))
        return cls(watch_seconds, max(watch_seconds + 0.5, seconds * 0.8))


def _resumed(details: Sequence[Any]) -> NodeWaitProgress | None:
    """The last heartbeat of an earlier attempt, if there was one."""
    if not details:
        return None
    try:
        return NodeWaitProgress.model_validate(details[0])
    except ValidationError:
        return None  # a heartbeat in an older shape: start afresh
