"""wait_for_node against the simulated API server over HTTPS, with the official asyncio client."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes.aio import client
from temporalio.testing import ActivityEnvironment

from gpuheal.activities.node_wait import NodeWaitActivities, _NodeStates, _WatchTiming
from gpuheal.activities.nodes import NodeActivities
from gpuheal.domain.node_wait import BackFromReboot, NodeWaitProgress, NodeWaitRequest, NodeWaitResult
from gpuheal.domain.steps import NodeRef, NodeState
from gpuheal_sim.simulator import FleetConfig, SimulatedCluster

NODE = "gpu-node-000"
OTHER = "gpu-node-001"
NEW_BOOT = "5a1c0de5-0000-4000-8000-000000000001"
# The smallest history the simulator keeps per resource: a few writes push a version out of it.
HISTORY = 10


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[SimulatedCluster]:
    config = FleetConfig(nodes=2, gpus_per_node=2, workloads=False, node_lifecycle_taints=False, watch_history=HISTORY)
    async with SimulatedCluster(config, state_dir=tmp_path) as running:
        yield running


class Waiter:
    """An activity environment whose wait was first scheduled `scheduled_ago`, recording its heartbeats."""

    def __init__(self, api: client.ApiClient, *, scheduled_ago: timedelta = timedelta(0), resumed: Any = None) -> None:
        self.activities = NodeWaitActivities(api)
        self.env = ActivityEnvironment()
        self.env.info = dataclasses.replace(
            self.env.info,
            scheduled_time=datetime.now(UTC) - scheduled_ago,
            heartbeat_details=[] if resumed is None else [resumed],
        )
        self.beats: list[NodeWaitProgress] = []
        self.first_beat = asyncio.Event()
        self.env.on_heartbeat = self._beat

    def _beat(self, *details: Any) -> None:
        assert len(details) == 1
        self.beats.append(details[0])
        self.first_beat.set()

    async def wait(self, request: NodeWaitRequest) -> NodeWaitResult:
        result: NodeWaitResult = await self.env.run(self.activities.wait_for_node, request)
        return result


async def observe(api: client.ApiClient, node: str = NODE) -> NodeState:
    state: NodeState = await ActivityEnvironment().run(NodeActivities(api).observe_node, NodeRef(node=node))
    return state


async def set_boot(api: client.ApiClient, boot_id: str) -> None:
    await client.CoreV1Api(api).patch_node_status(
        NODE, {"status": {"nodeInfo": {"bootID": boot_id}}}, _content_type="application/merge-patch+json"
    )


def back_from(before: NodeState, timeout: timedelta = timedelta(minutes=30)) -> NodeWaitRequest:
    return NodeWaitRequest(node=NODE, condition=BackFromReboot(boot_id_before=before.boot_id), timeout=timeout)


async def test_the_wait_ends_on_the_change_that_meets_the_condition_and_heartbeats_every_state_seen(
    api: client.ApiClient,
) -> None:
    before = await observe(api)
    assert before.ready and before.boot_id not in ("", NEW_BOOT)
    waiter = Waiter(api)
    waiting = asyncio.create_task(waiter.wait(back_from(before)))
    await waiter.first_beat.wait()  # the node was read as it is: the change below comes through the watch
    await set_boot(api, NEW_BOOT)

    result = await waiting

    assert result.reached and not result.deleted
    assert result.state.boot_id == NEW_BOOT and result.state.ready
    assert waiter.beats[0].state.boot_id == before.boot_id, "the first heartbeat carries the state first read"
    assert waiter.beats[-1].state == result.state, "the last heartbeat carries the state that met the condition"
    assert all(beat.resource_version for beat in waiter.beats)


async def test_a_wait_whose_time_is_up_answers_with_the_last_state(api: client.ApiClient) -> None:
    before = await observe(api)
    waiter = Waiter(api)

    result = await waiter.wait(back_from(before, timeout=timedelta(seconds=1)))

    assert not result.reached and not result.deleted
    assert result.state.boot_id == before.boot_id and result.state.ready


async def test_a_retried_attempt_keeps_the_deadline_of_the_first(api: client.ApiClient) -> None:
    """The timeout counts from when the wait was first scheduled: a retry an hour later does not wait again."""
    before = await observe(api)
    waiter = Waiter(api, scheduled_ago=timedelta(hours=1))

    result = await waiter.wait(back_from(before))

    assert not result.reached and result.state == before


async def test_a_node_deleted_while_waited_for_ends_the_wait(api: client.ApiClient) -> None:
    before = await observe(api)
    waiter = Waiter(api)
    waiting = asyncio.create_task(waiter.wait(back_from(before)))
    await waiter.first_beat.wait()
    await client.CoreV1Api(api).delete_node(NODE)

    result = await waiting

    assert result.deleted and not result.reached
    assert not result.state.exists


async def test_a_node_already_gone_ends_the_wait_at_once(api: client.ApiClient) -> None:
    before = await observe(api)
    await client.CoreV1Api(api).delete_node(NODE)

    result = await Waiter(api).wait(back_from(before))

    assert result.deleted and not result.reached


async def test_a_resumed_watch_whose_version_expired_lists_again(
    api: client.ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A retried attempt resumes from its last heartbeat's resourceVersion; once the server no longer
    keeps it (410 Gone: staging/src/k8s.io/apiserver/pkg/storage/cacher/watch_cache.go, "too old
    resource version"), the activity lists the node again and judges what the list shows."""
    core = client.CoreV1Api(api)
    before = await observe(api)
    listed = await core.list_node(field_selector=f"metadata.name={NODE}")
    assert listed.metadata is not None and listed.metadata.resource_version
    heartbeat = NodeWaitProgress(state=before, resource_version=listed.metadata.resource_version)
    await set_boot(api, NEW_BOOT)
    for n in range(2 * HISTORY):
        await core.patch_node(
            OTHER, {"metadata": {"labels": {"churn": str(n)}}}, _content_type="application/merge-patch+json"
        )
    # A real worker decodes heartbeat details as plain JSON.
    waiter = Waiter(api, resumed=heartbeat.model_dump(mode="json"))

    with caplog.at_level(logging.INFO):
        result = await waiter.wait(back_from(before))

    assert "too old resource version" in caplog.text, "the watch was refused with 410 Gone"
    assert result.reached and result.state.boot_id == NEW_BOOT
    assert waiter.beats[0].state == before, "the attempt went on from the last heartbeat"
    assert waiter.beats[-1].resource_version != heartbeat.resource_version


async def test_a_resumed_watch_sees_the_changes_made_since_the_last_heartbeat(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    before = await observe(api)
    listed = await core.list_node(field_selector=f"metadata.name={NODE}")
    assert listed.metadata is not None and listed.metadata.resource_version
    await set_boot(api, NEW_BOOT)
    heartbeat = NodeWaitProgress(state=before, resource_version=listed.metadata.resource_version)

    result = await Waiter(api, resumed=heartbeat.model_dump(mode="json")).wait(back_from(before))

    assert result.reached and result.state.boot_id == NEW_BOOT


async def test_a_heartbeat_in_a_shape_it_cannot_read_starts_the_watch_afresh(api: client.ApiClient) -> None:
    before = await observe(api)
    waiter = Waiter(api, resumed={"state": "from an older worker"})
    waiting = asyncio.create_task(waiter.wait(back_from(before)))
    await waiter.first_beat.wait()
    await set_boot(api, NEW_BOOT)

    result = await waiting

    assert result.reached
    assert waiter.beats[0].state == before, "the node was listed, not taken from the heartbeat"


async def test_a_watch_whose_connection_breaks_is_opened_again(
    api: client.ApiClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An API server restarting drops its watches: the wait watches again instead of failing its attempt."""
    watch_once = _NodeStates._watch
    broken: list[bool] = []

    async def breaks_first(self: _NodeStates) -> AsyncIterator[NodeState]:
        if not broken:
            broken.append(True)
            raise aiohttp.ServerDisconnectedError()
        async for state in watch_once(self):
            yield state

    monkeypatch.setattr(_NodeStates, "_watch", breaks_first)
    caplog.set_level(logging.INFO)
    before = await observe(api)
    waiter = Waiter(api)
    waiting = asyncio.create_task(waiter.wait(back_from(before)))
    await waiter.first_beat.wait()
    await set_boot(api, NEW_BOOT)

    result = await waiting

    assert broken and "broke" in caplog.text
    assert result.reached and result.state.boot_id == NEW_BOOT


@pytest.mark.parametrize("heartbeat", [timedelta(seconds=2), timedelta(seconds=30), timedelta(minutes=5)])
def test_every_request_of_the_wait_ends_before_its_heartbeat_timeout(heartbeat: timedelta) -> None:
    """A request the server leaves hanging is given up and the watch reopened before Temporal times the attempt out."""
    timing = _WatchTiming.within(heartbeat)

    assert timing.watch_seconds < timing.request_seconds < heartbeat.total_seconds()


async def test_a_watch_borrows_the_activity_client_and_leaves_it_open(
    api: client.ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kubernetes' own watch builds an API client, and with it a TLS context loaded with the
    system's certificates, for each watch (about 20 ms of CPU, twice per remediation): the wait's
    watches build none, and the client they borrowed still serves the next request."""
    built: list[object] = []
    real = client.ApiClient.__init__

    def counting(self: client.ApiClient, *args: Any, **kwargs: Any) -> None:
        built.append(self)
        real(self, *args, **kwargs)

    monkeypatch.setattr(client.ApiClient, "__init__", counting)
    before = await observe(api)
    waiter = Waiter(api)
    waiting = asyncio.create_task(waiter.wait(back_from(before)))
    await waiter.first_beat.wait()
    await set_boot(api, NEW_BOOT)

    assert (await waiting).reached
    assert built == [], "a watch built an API client of its own"
    assert (await observe(api)).boot_id == NEW_BOOT, "the borrowed client was closed with the watch"
