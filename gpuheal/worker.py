"""The Temporal worker: runs RemediationWorkflow and its activities.

It connects with the standard Temporal settings (see gpuheal.control.connection), reaches
Kubernetes through a kubeconfig or the in-cluster service account, exposes the SDK's Prometheus
metrics, and on SIGTERM stops polling and lets running activities finish before it exits.

It takes work only once everything it needs has answered: the Kubernetes configuration loads, the
Temporal namespace exists, and the Kubernetes API answers a node read (`gpuheal.kubeprobe`, waited
for up to `kubernetes_wait`). Anything else ends the start with a one-line reason; the worker has no
readiness endpoint, so a worker that cannot work does not run (in a cluster: CrashLoopBackOff, with
the reason as the container's last log line).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes.aio.client import ApiClient
from kubernetes.aio.config import ConfigException
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from gpuheal.activities import remediation_activities
from gpuheal.activities.metrics import VisibilityGauges
from gpuheal.activities.providers.configured import DEFAULT_PROVIDERS, build_providers
from gpuheal.activities.providers.registration import SIMULATOR_URL_ENV
from gpuheal.activities.providers.selection import ProviderSet
from gpuheal.control import governor
from gpuheal.control.connection import DEFAULT_TASK_QUEUE, check_namespace, connect_temporal
from gpuheal.control.governor import governor_id_for
from gpuheal.control.lifetime import ProcessRuntime
from gpuheal.domain.fleet import FleetPolicy, governor_task_queue
from gpuheal.domain.policy_document import PolicyDocument
from gpuheal.kubeclient import connect as connect_kubernetes
from gpuheal.kubeprobe import KubernetesUnavailable, wait_until_answering
from gpuheal.policyfile import LoadedPolicy, PolicyWatch, WorkerPolicy
from gpuheal.shutdown import shutdown_requested
from gpuheal.workflows import metrics
from gpuheal.workflows import search_attributes as attrs
from gpuheal.workflows.governor import GovernorWorkflow
from gpuheal.workflows.remediation import RemediationWorkflow

log = logging.getLogger("gpuheal.worker")

_INDEXED_TYPES = {
    "KEYWORD": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "INT": IndexedValueType.INDEXED_VALUE_TYPE_INT,
    "KEYWORD_LIST": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
    "DATETIME": IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
}


# Histogram buckets (seconds) that suit each figure: a phase lasts from milliseconds (Detected) to
# hours (a drain held by a budget, an approval); a cordon should follow its fault within seconds; a
# node is back in service minutes to hours after it.
_HOURS = [3600.0, 7200.0, 14400.0, 43200.0, 86400.0]
HISTOGRAM_BUCKETS: dict[str, list[float]] = {
    metrics.PHASE_DURATION: [0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, *_HOURS],
    metrics.FAULT_TO_CORDON: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600],
    metrics.FAULT_TO_SERVICE: [5, 15, 30, 60, 120, 300, 600, 1200, 1800, *_HOURS],
}


class WorkerRole(enum.Enum):
    """Which of the worker's queues a process polls.

    One process serves both by default. A large fleet may run the governor in a process of its own,
    whose workflow tasks and `grants` answers then never queue behind a storm's remediations in the
    same event loop.
    """

    ALL = "all"
    REMEDIATIONS = "remediations"
    GOVERNOR = "governor"


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """How the worker connects and how much it runs at once."""

    task_queue: str = DEFAULT_TASK_QUEUE
    # What this process polls for: remediations, the fleet's governor, or both.
    role: WorkerRole = WorkerRole.ALL
    temporal_address: str | None = None
    temporal_namespace: str | None = None
    kubeconfig: Path | None = None
    # Reboot providers to enable (see gpuheal.activities.providers.configured); each node's
    # providerID picks one of them unless the policy forces one.
    providers: tuple[str, ...] = DEFAULT_PROVIDERS
    # Base URL of a simulated fleet; enables the "simulator" reboot provider (where gpuheal-sim is installed).
    simulator_url: str | None = None
    # host:port for Prometheus metrics; None turns them off.
    metrics_address: str | None = "127.0.0.1:9464"
    # A remediation in one phase for longer than this counts as stuck (gpuheal_remediations_stuck).
    stuck_after: timedelta = timedelta(hours=1)
    max_concurrent_activities: int = 200
    max_concurrent_workflow_tasks: int = 200
    graceful_shutdown: timedelta = timedelta(seconds=30)
    # How soon another worker picks up a dead worker's workflows (the sticky queue timeout). Not
    # Temporal's 10 s: in a storm of 750 remediations on a busy worker, tasks wait longer than that for
    # it, and each one timed out (767 in one storm) went to the shared queue, to be replayed from its
    # full history, 10 s late; with 30 s none did. A dead worker's remediations wait 20 s longer.
    sticky_queue_timeout: timedelta = timedelta(seconds=30)
    # How long a starting worker waits for the Kubernetes API to answer before it gives up.
    kubernetes_wait: timedelta = timedelta(seconds=60)
    # The fleet's limits: the budget, the breaker (gpuheal.domain.fleet), held by one governor
    # workflow per cluster, which a starting worker configures with them.
    # One governor per task queue (gpuheal.control.governor.governor_id_for).
    fleet: FleetPolicy = field(default_factory=FleetPolicy)
    # The policy file as read at start (None: the defaults), and how often it is read again: its
    # `fleet` section, where it has one, replaces `fleet`.
    policy: LoadedPolicy[PolicyDocument] | None = None
    policy_reload: timedelta = timedelta(seconds=10)


class SearchAttributesMissing(RuntimeError):
    """gpuheal's search attributes are missing from the namespace, and the worker may not add them."""


class MetricsUnavailable(ValueError):
    """The Prometheus address does not parse, or cannot be listened on."""


def process_runtime(settings: WorkerSettings) -> ProcessRuntime:
    """The worker process's Temporal runtime, serving the SDK's metrics and gpuheal's (gpuheal.workflows.metrics,
    gpuheal.activities.metrics) on `metrics_address` when set.

    The listener starts here, before anything connects: `MetricsUnavailable` names why it cannot.
    """
    metrics = (
        PrometheusConfig(
            bind_address=settings.metrics_address,
            # Prometheus' conventions: counters end in _total, durations are seconds.
            counters_total_suffix=True,
            durations_as_seconds=True,
            histogram_bucket_overrides=HISTOGRAM_BUCKETS,
        )
        if settings.metrics_address
        else None
    )
    try:
        return ProcessRuntime(TelemetryConfig(metrics=metrics))
    except ValueError as error:  # the SDK's "Invalid Prometheus address" / "Failed starting Prometheus exporter"
        raise MetricsUnavailable(f"{settings.metrics_address}: {error}") from None


@asynccontextmanager
async def running_worker(settings: WorkerSettings, client: Client | None = None) -> AsyncIterator[Worker]:
    """A started worker; it stops gracefully when the context exits.

    Without a `client` it connects on the process's runtime (`process_runtime`). Raises
    `KubernetesUnavailable`, `gpuheal.control.connection.TemporalUnreachable` or `NamespaceNotFound`
    when what it needs does not answer.
    """
    try:
        api = await connect_kubernetes(settings.kubeconfig)
    except ConfigException as error:
        raise KubernetesUnavailable(f"cannot use the Kubernetes configuration: {error}") from None
    async with api:
        if client is None:
            client = await connect_temporal(settings.temporal_address, settings.temporal_namespace)
        await check_namespace(client)
        await ensure_search_attributes(client)
        await wait_until_answering(api, settings.kubernetes_wait)
        async with _worker(settings, client, api) as worker:
            yield worker


@asynccontextmanager
async def _worker(settings: WorkerSettings, client: Client, api: ApiClient) -> AsyncIterator[Worker]:
    # Cloud SDKs block, so providers run them with asyncio.to_thread. The default pool has at most 32
    # threads; in a fault storm long operations (an Azure restart takes minutes) would queue behind
    # each other past their activity timeouts. One thread per concurrent activity keeps every call moving.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=settings.max_concurrent_activities, thread_name_prefix="gpuheal-provider")
    )
    async with aiohttp.ClientSession() as session:
        env = {**os.environ, SIMULATOR_URL_ENV: settings.simulator_url} if settings.simulator_url else os.environ
        chosen = ProviderSet(build_providers(settings.providers, env, session))
        governor_id = governor_id_for(settings.task_queue)
        watch = PolicyWatch(settings.policy) if settings.policy is not None else None
        policy = WorkerPolicy(settings.fleet, watch)
        activities = remediation_activities(api, chosen, policy, governor_id)
        worker = remediations_worker(client, settings, [RemediationWorkflow, GovernorWorkflow], activities)
        # The governor's own queue; GovernorWorkflow stays on the main one too, for a governor started
        # there before it had a queue of its own (it moves at its next continue-as-new).
        governor_worker = Worker(
            client,
            task_queue=governor_task_queue(governor_id),
            workflows=[GovernorWorkflow],
            activities=activities,
            graceful_shutdown_timeout=settings.graceful_shutdown,
            sticky_queue_schedule_to_start_timeout=settings.sticky_queue_timeout,
        )

        async def configure_governor(_: LoadedPolicy[PolicyDocument] | None = None) -> None:
            # The governor starts with these limits, or the running one takes them.
            if policy.fleet.governed:
                await governor.configure(client, policy.fleet, governor_id, governor_task_queue(governor_id))

        polled = {
            WorkerRole.ALL: [worker, governor_worker],
            WorkerRole.REMEDIATIONS: [worker],
            WorkerRole.GOVERNOR: [governor_worker],
        }[settings.role]
        async with contextlib.AsyncExitStack() as running:
            for each in polled:
                await running.enter_async_context(each)
            log.info(
                "worker polling %s with providers %s under policy %s",
                ", ".join(each.task_queue for each in polled),
                ", ".join(chosen.names),
                policy.document.version,
            )
            await configure_governor()
            background: list[asyncio.Task[None]] = []
            if settings.metrics_address is not None:  # counted only where something serves the figures
                runtime = client.service_client.config.runtime or Runtime.default()
                gauges = VisibilityGauges(
                    client, runtime.metric_meter, stuck_after=settings.stuck_after, governors=[governor_id]
                )
                background.append(asyncio.create_task(gauges.run(), name="gpuheal-visibility-gauges"))
            if watch is not None:
                background.append(asyncio.create_task(watch.follow(settings.policy_reload, configure_governor)))
            try:
                yield worker
            finally:
                for task in background:
                    task.cancel()
                for task in background:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task


def remediations_worker(
    client: Client, settings: WorkerSettings, workflows: Sequence[type], activities: Sequence[Callable[..., Any]]
) -> Worker:
    """A Worker for `settings.task_queue` with the concurrency and polling a fault storm needs (the
    storm benchmark's bare-Temporal baseline runs its workflows on one such too)."""
    # The sandbox loads a workflow's module afresh for every run it starts: in a storm a sixth of the
    # worker's CPU, and half its memory per run in flight. Passing the workflow modules through would
    # save that, but the sandbox checks only the code it loads itself: a workflow module passed
    # through could read the clock or the disk unnoticed (tests/test_worker_sandbox.py).
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=workflows,
        activities=activities,
        max_concurrent_activities=settings.max_concurrent_activities,
        max_concurrent_workflow_tasks=settings.max_concurrent_workflow_tasks,
        # A workflow task runs its local steps one at a time, and the ask for a permit waits in
        # one: a slot for each task's step, or in a storm the tasks queue for slots.
        max_concurrent_local_activities=settings.max_concurrent_workflow_tasks,
        # Half the workflow-task polls for new remediations (Temporal's default gives them one in
        # five): in a storm a node is quarantined in its remediation's first task, and those must
        # not wait behind the later steps of the first remediations.
        nonsticky_to_sticky_poll_ratio=0.5,
        graceful_shutdown_timeout=settings.graceful_shutdown,
        sticky_queue_schedule_to_start_timeout=settings.sticky_queue_timeout,
    )


async def ensure_search_attributes(client: Client) -> None:
    """Register gpuheal's search attributes in the namespace when they are missing.

    Without them every remediation's first workflow task fails, so a worker that finds some missing
    and cannot add them refuses to start, naming the commands that register them. Where it may not
    even list them (Temporal Cloud, locked-down servers) it cannot tell, and logs what to register.
    """
    namespace = client.namespace
    missing: dict[str, IndexedValueType.ValueType] = {}
    listed_missing = False  # whether the namespace was read and found to lack them
    try:
        try:
            listed = await client.operator_service.list_search_attributes(
                ListSearchAttributesRequest(namespace=namespace)
            )
            existing = set(listed.custom_attributes)
            missing = {
                key.name: _INDEXED_TYPES[key.indexed_value_type.name] for key in attrs.ALL if key.name not in existing
            }
            listed_missing = bool(missing)
        except RPCError as error:
            if error.status is not RPCStatusCode.UNIMPLEMENTED:  # Temporal's Java test server cannot list
                raise
            missing = {key.name: _INDEXED_TYPES[key.indexed_value_type.name] for key in attrs.ALL}
        if missing:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
            )
            log.info("registered search attributes %s", ", ".join(sorted(missing)))
    except RPCError as error:
        if error.status is RPCStatusCode.ALREADY_EXISTS:
            return
        if listed_missing:
            create = "; ".join(
                f"temporal operator search-attribute create --namespace {namespace} --name {key.name} "
                f"--type {attrs.cli_type(key)}"
                for key in attrs.ALL
                if key.name in missing
            )
            raise SearchAttributesMissing(
                f"search attributes {', '.join(sorted(missing))} are not registered in namespace {namespace} and "
                f"the worker could not register them ({error.message}); no remediation can run without them: {create}"
            ) from error
        log.warning(
            "could not check or register search attributes (%s); register %s in namespace %s yourself",
            error.message,
            ", ".join(key.name for key in attrs.ALL),
            namespace,
        )


async def serve(settings: WorkerSettings) -> None:
    """Run the worker until SIGTERM or SIGINT (under `process_runtime(settings).run`, for its metrics)."""
    stop = shutdown_requested()
    async with running_worker(settings):
        await stop.wait()
        log.info("shutting down: finishing running activities")
