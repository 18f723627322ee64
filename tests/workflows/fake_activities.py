"""Stand-ins for the node activities, under the same names and payloads, for workflow-logic tests.

The time-skipping suite tests decisions and durable waits, so the Kubernetes side is replaced at the
activity boundary by this small in-memory node that records what the workflow asked of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from temporalio import activity
from temporalio.exceptions import ApplicationError

from gpuheal.activities.contract import implements, node_gone
from gpuheal.activities.fleet import Ask, deliver_permits, find_ended_holders, return_permit
from gpuheal.activities.grant_collector import GrantCollector
from gpuheal.control import governor
from gpuheal.domain import contracts
from gpuheal.domain.budgets import DisruptionBudget
from gpuheal.domain.contracts import FailureType
from gpuheal.domain.diagnostics import DiagnosticsOrder, DiagnosticsReport
from gpuheal.domain.fleet import (
    FleetPolicy,
    NodeCount,
    NodeCountRequest,
    PermitAsked,
    PermitRequest,
    governor_task_queue,
)
from gpuheal.domain.gpu_check import GpuCheckOrder, GpuCheckReport
from gpuheal.domain.gpu_health import GpuHealthReport
from gpuheal.domain.gpu_reset import GpuResetOrder, GpuResetReport
from gpuheal.domain.history import EarlierRemediation, HistoryRequest, RemediationHistory
from gpuheal.domain.node_wait import NodeWaitRequest, NodeWaitResult
from gpuheal.domain.policy_document import PolicyDocument, PolicySnapshot
from gpuheal.domain.steps import (
    BudgetHold,
    DiagnosticsRequest,
    DrainProgress,
    DrainRequest,
    GpuCheckRequest,
    GpuResetRequest,
    MachineRequest,
    MachineState,
    NodeRecord,
    NodeRef,
    NodeState,
    NodeSurvey,
    Outcome,
    PodFailure,
    PodRef,
    ProviderNamed,
    QuarantineRequest,
    RebootRequest,
    RebootResult,
    ReleaseRequest,
    ReplaceRequest,
    Step,
)

# The steps that only read the node.
_READS = (Step.OBSERVE.value, Step.WAIT_FOR_NODE.value, Step.COLLECT_UNLESS_HELD.value)


@dataclass
class FakeNode:
    """One node as the workflow sees it through its activities."""

    name: str = "gpu-node-001"
    managed: bool = True
    cordoned: bool = False
    boot_id: str = "boot-1"
    # What a reboot does: come back (Ready, new boot id) or stay down.
    comes_back: bool = True
    # The node comes back Ready but on the same boot (a reboot that never happened).
    keeps_boot_id: bool = False
    gpus_healthy_after_reboot: bool | None = True
    # Whether the node's agent reports GPU health once the node is back from a reboot; when it does
    # not, the GpuHealthy condition from before the reboot lingers.
    agent_reports_after_reboot: bool = True
    # The provider is a person (repair.provider "manual"): the reboot step records the repair they
    # did before approving and reboots nothing.
    manual_provider: bool = False
    # Errors the provider raises before a reboot request gets through, one per attempt.
    provider_errors: list[ApplicationError] = field(default_factory=list)
    # Whether the provider has a graceful restart, and whether the machine honours one.
    graceful_supported: bool = False
    graceful_restarts: bool = True
    # What the agent does with a GPU reset order: confirm it, report a failure, never answer, or
    # answer when the test writes `reset_report` (a wait for the answer lasts until then).
    reset_outcome: Literal["confirm", "fail", "silent", "late"] = "confirm"
    # Waits for the node running now (an agent that answers "late" keeps them open).
    open_waits: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    gpus_healthy_after_reset: bool = True
    # Whether the agent reports GPU health again after answering a reset order.
    agent_reports_after_reset: bool = True
    # Drain passes that find a pod a PodDisruptionBudget will not let go.
    blocked_passes: int = 0
    # The budget named by the blocked pod's 429 on each blocked pass, as the drain read it (the last
    # one repeats); empty: the 429 named none.
    blocking_budgets: list[DisruptionBudget] = field(default_factory=list)
    # Drain passes whose eviction of a pod fails with another error than a 429 (the others go on the
    # first pass, as a real drain's do: later passes evict nothing, so the workflow backs off).
    failed_passes: int = 0
    # Somebody uncordons the node while it drains.
    uncordon_during_drain: bool = False
    ready: bool = True
    # Labelled gpuheal.io/hold=true (a wait for the hold to be lifted lasts until the test lifts it).
    held: bool = False
    # The node is deleted when a reboot is requested (a cloud that replaces the machine).
    deleted_on_reboot: bool = False
    # Set: a reboot request goes through only once the test sets it (a provider call that neither
    # heartbeats nor sees a cancel until it returns).
    reboot_held: asyncio.Event | None = None
    # Set: the first release is told to `release_reached` and goes through once the test sets it.
    release_held: asyncio.Event | None = None
    release_reached: asyncio.Event = field(default_factory=asyncio.Event)
    exists: bool = True
    # The read that names the reboot provider fails every attempt (an API server not answering).
    naming_fails: bool = False
    gpus_healthy: bool | None = False
    # The boot the agent last reported GPU health on (the node's first boot unless set), and when.
    reported_on: str = ""
    reported_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    steps: list[str] = field(default_factory=list)
    reboots: int = 0
    reboot_requests: list[RebootRequest] = field(default_factory=list)
    # The reboot requests recorded on the node, by request id and gracefulness, with their answer.
    reboots_recorded: dict[tuple[str, bool], RebootResult] = field(default_factory=dict)
    reset_orders: list[GpuResetRequest] = field(default_factory=list)
    reset_report: GpuResetReport | None = None
    releases: list[ReleaseRequest] = field(default_factory=list)
    drain_requests: list[DrainRequest] = field(default_factory=list)
    waits: list[NodeWaitRequest] = field(default_factory=list)
    # The fleet's limits: None lets the remediation go without a permit (as FleetPolicy(governed=False)
    # does); set, the remediation asks the governor `governor_id` on its own task queue.
    fleet: FleetPolicy | None = None
    governor_id: str = ""
    permit_requests: list[PermitRequest] = field(default_factory=list)
    # How long a collecting ask waits for its grant (the real one waits COLLECT_WITHIN), and how
    # many asks collected theirs.
    collect_within: timedelta = timedelta(seconds=1)
    collected: int = 0
    # What Temporal's visibility shows of the remediations before this one, given what was asked of it
    # (the run's clock is the test server's, which skips ahead), and what was asked; None: the
    # history cannot be read.
    history: Callable[[HistoryRequest], RemediationHistory] | None = lambda _: RemediationHistory()
    history_requests: list[HistoryRequest] = field(default_factory=list)
    # The worker's policy file, as the `current_policy` step reads it for a run started without a policy.
    policy: PolicyDocument = field(default_factory=PolicyDocument)
    policy_reads: int = 0
    # The pods on the node a drain would move, as a dry run reads them.
    pods: tuple[PodRef, ...] = ()
    # Whether the provider can terminate the machine (policy repair.replace), and whether the node
    # object then goes (the cloud's node controller deletes it).
    replaceable: bool = True
    deleted_on_replace: bool = True
    # The node of a terminated machine goes only when the test deletes it (a wait for that lasts until then).
    deleted_late: bool = False
    replace_requests: list[ReplaceRequest] = field(default_factory=list)
    # What the agent does with a GPU check order: pass it, fail it, or never answer; the orders it got.
    check_outcomes: list[Literal["pass", "fail", "inconclusive", "silent"]] = field(default_factory=lambda: ["pass"])
    check_orders: list[GpuCheckRequest] = field(default_factory=list)
    check_report: GpuCheckReport | None = None
    # What the agent does with a diagnostics order: store a bundle, fail, or never answer.
    diagnostics_outcome: Literal["stored", "fail", "silent"] = "stored"
    diagnostics_orders: list[DiagnosticsRequest] = field(default_factory=list)
    diagnostics_report: DiagnosticsReport | None = None

    def __post_init__(self) -> None:
        self.reported_on = self.reported_on or self.boot_id

    async def answer_late_waits(self) -> None:
        """The agent answers at last, and every wait still running returns: a wait left running after
        its run ended holds the time-skipping test server's clock for the tests after it."""
        self.reset_outcome = "confirm"
        while self.open_waits:
            await asyncio.sleep(0.01)

    def state(self) -> NodeState:
        """The node as a read of it shows it now."""
        return NodeState(
            node=self.name,
            exists=self.exists,
            ready=self.ready,
            boot_id=self.boot_id,
            unschedulable=self.cordoned,
            gpu_healthy=self.gpus_healthy,
            gpu_report=None if self.gpus_healthy is None else self.gpu_report(),
            gpu_reset=self.reset_report,
            gpu_check=self.check_report,
            diagnostics=self.diagnostics_report,
            held=self.held,
        )

    def gpu_report(self) -> GpuHealthReport:
        """The GpuHealthy condition as gpuheal's agent writes it: naming its boot and the moment."""
        return GpuHealthReport(
            status="True" if self.gpus_healthy else "False",
            message="all GPUs healthy" if self.gpus_healthy else "XID 79 on GPU 3",
            boot_id=self.reported_on,
            reported_at=self.reported_at,
        )

    def agent_reports(self, healthy: bool | None, at: datetime | None = None) -> None:
        """The node's agent writes GpuHealthy now, on the current boot."""
        self.gpus_healthy = healthy
        self.reported_on = self.boot_id
        self.reported_at = at or datetime.now(UTC)

    def _recorded(self, request: RebootRequest, result: RebootResult) -> RebootResult:
        self.reboots_recorded[(request.request_id, request.graceful)] = result
        return result

    @property
    def writes(self) -> list[str]:
        """The steps that changed something: all but the reads of the node."""
        return [step for step in self.steps if step not in _READS]

    def activities(self) -> list[Callable[..., Any]]:
        return list(self.served().values())

    def served(self) -> dict[str, Callable[..., Any]]:
        """This node's activities, by step name."""

        @implements(contracts.QUARANTINE)
        async def quarantine(request: QuarantineRequest) -> NodeRecord:
            self.steps.append(Step.QUARANTINE.value)
            before = self.cordoned
            if self.managed:
                self.cordoned = True
            return NodeRecord(
                node=self.name,
                exists=True,
                managed=self.managed,
                cordoned_before=before,
                boot_id=self.boot_id,
                labels=self.labels,
            )

        @implements(contracts.DRAIN)
        async def drain(request: DrainRequest) -> DrainProgress:
            self.steps.append(Step.DRAIN.value)
            self.drain_requests.append(request)
            if self.uncordon_during_drain:
                self.cordoned = False
                return DrainProgress(uncordoned=True)
            pod = PodRef(namespace="ml", name="trainer-0")
            if self.failed_passes > 0:
                self.failed_passes -= 1
                error = "HTTP 500: This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
                evicted = 1 if len(self.drain_requests) == 1 else 0
                return DrainProgress(evicted=evicted, failed=(PodFailure(pod=pod, error=error),), remaining=(pod,))
            if self.blocked_passes > 0:
                self.blocked_passes -= 1
                holds: tuple[BudgetHold, ...] = ()
                if self.blocking_budgets:
                    budget = (
                        self.blocking_budgets.pop(0) if len(self.blocking_budgets) > 1 else self.blocking_budgets[0]
                    )
                    holds = (BudgetHold(pod=pod, budget=budget),)
                return DrainProgress(blocked=(pod,), holds=holds, remaining=(pod,))
            return DrainProgress(evicted=1)

        @implements(contracts.REBOOT)
        async def reboot(request: RebootRequest) -> RebootResult:
            self.steps.append(Step.REBOOT.value)
            if self.reboot_held is not None:
                async with asyncio.timeout(60):  # bounded: a test that never sets it fails, not hangs
                    await self.reboot_held.wait()
            if self.provider_errors:
                raise self.provider_errors.pop(0)
            self.reboot_requests.append(request)
            # As the real step: a request recorded on the node is not sent again (a retried attempt,
            # the same round asked twice); only another round, or a force after a graceful one, is new.
            earlier = self.reboots_recorded.get((request.request_id, request.graceful))
            if earlier is not None:
                return earlier.model_copy(update={"requested_now": False})
            requested_at = datetime.now(UTC)
            before = self.boot_id
            if self.manual_provider:
                return self._recorded(
                    request,
                    RebootResult(
                        boot_id_before=before,
                        requested_now=True,
                        provider="manual",
                        detail="repair performed by an operator",
                        expects_new_boot=False,
                        requested_at=requested_at,
                    ),
                )
            graceful = request.graceful and self.graceful_supported
            if graceful and not self.graceful_restarts:
                return self._recorded(
                    request, RebootResult(boot_id_before=before, requested_now=True, provider="fake", graceful=True)
                )
            self.reboots += 1
            if self.deleted_on_reboot:
                self.exists = False
            elif not self.comes_back:
                self.ready = False
            elif not self.keeps_boot_id:
                self.boot_id = f"boot-{self.reboots + 1}"
                if self.agent_reports_after_reboot:
                    self.agent_reports(self.gpus_healthy_after_reboot)
            return self._recorded(
                request,
                RebootResult(
                    boot_id_before=before,
                    requested_now=True,
                    provider="fake",
                    detail="fake reboot",
                    graceful=graceful,
                    requested_at=requested_at,
                ),
            )

        @implements(contracts.DESCRIBE_MACHINE)
        async def describe(request: MachineRequest) -> MachineState:
            self.steps.append(Step.DESCRIBE_MACHINE.value)
            return MachineState(provider="fake", summary="instance stopped by the cloud")

        @implements(contracts.REPLACE)
        async def replace(request: ReplaceRequest) -> MachineState:
            self.steps.append(Step.REPLACE.value)
            if not self.replaceable:
                raise ApplicationError(
                    "provider fake cannot terminate machines", non_retryable=True, type=FailureType.PROVIDER.value
                )
            if request.boot_id and request.boot_id != self.boot_id:  # as the real step: a new machine is spared
                return MachineState(provider="fake", summary="a new machine", boot_id=self.boot_id)
            self.replace_requests.append(request)
            boot = self.boot_id
            if self.deleted_on_replace and not self.deleted_late:
                self.exists = False
            return MachineState(provider="fake", summary=f"terminated the machine of {request.node}", boot_id=boot)

        @implements(contracts.RESET_GPUS)
        async def reset(request: GpuResetRequest) -> GpuResetOrder:
            self.steps.append(Step.RESET_GPUS.value)
            self.reset_orders.append(request)
            order = GpuResetOrder(id=request.request_id, holder=request.holder, gpus=request.gpus, at=datetime.now(UTC))
            if self.reset_outcome in ("confirm", "fail"):
                ok = self.reset_outcome == "confirm"
                self.reset_report = GpuResetReport(
                    id=order.id,
                    ok=ok,
                    detail=f"reset {', '.join(request.gpus)}" if ok else "nvidia-smi: GPU is in use",
                    confirmed_by="kernel-log" if ok else "",
                    at=datetime.now(UTC),
                )
                if ok and self.agent_reports_after_reset:
                    # The agent reports GPU health again right after its answer.
                    self.agent_reports(self.gpus_healthy_after_reset, self.reset_report.at + timedelta(milliseconds=1))
            return order

        @implements(contracts.CHECK_GPUS)
        async def check(request: GpuCheckRequest) -> GpuCheckOrder:
            self.steps.append(Step.CHECK_GPUS.value)
            self.check_orders.append(request)
            order = GpuCheckOrder(id=request.order_id, holder=request.holder, level=request.level, at=datetime.now(UTC))
            # The outcomes in turn, the last one repeating (a person's resume checks again).
            outcome = self.check_outcomes.pop(0) if len(self.check_outcomes) > 1 else self.check_outcomes[0]
            details = {
                "pass": "all 12 tests passed",
                "fail": "Memory bandwidth: GPU 3 below 80% of spec",
                "inconclusive": "cannot run dcgmi: No such file or directory",
            }
            if outcome != "silent":
                self.check_report = GpuCheckReport(
                    id=order.id,
                    ok=outcome == "pass",
                    detail=details[outcome],
                    tool=f"dcgmi diag -r {request.level}",
                    conclusive=outcome == "fail",
                    at=datetime.now(UTC),
                )
            return order

        @implements(contracts.COLLECT_DIAGNOSTICS)
        async def diagnostics(request: DiagnosticsRequest) -> DiagnosticsOrder:
            self.steps.append(Step.COLLECT_DIAGNOSTICS.value)
            self.diagnostics_orders.append(request)
            order = DiagnosticsOrder(
                id=request.order_id, holder=request.holder, reason=request.reason, at=datetime.now(UTC)
            )
            if self.diagnostics_outcome != "silent":
                stored = self.diagnostics_outcome == "stored"
                self.diagnostics_report = DiagnosticsReport(
                    id=order.id,
                    ok=stored,
                    detail="nvml bundle of 2048 bytes stored"
                    if stored
                    else "cannot write /var/lib/gpuheal: No space left",
                    location=f"s3://bundles/{self.name}/probe.json.gz" if stored else "",
                    at=datetime.now(UTC),
                )
            return order

        @implements(contracts.OBSERVE)
        async def observe(request: NodeRef) -> NodeState:
            self.steps.append(Step.OBSERVE.value)
            return self.state()

        @implements(contracts.RELEASE)
        async def release(request: ReleaseRequest) -> NodeState:
            self.steps.append(Step.RELEASE.value)
            if self.release_held is not None and not self.release_reached.is_set():
                self.release_reached.set()
                async with asyncio.timeout(60):
                    await self.release_held.wait()
            self.releases.append(request)
            if request.outcome is Outcome.RESOLVED and not request.cordoned_before:
                self.cordoned = False
            return self.state()

        @implements(contracts.WITHDRAW_GPU_RESET)
        async def withdraw(request: GpuResetRequest) -> NodeRef:
            self.steps.append(Step.WITHDRAW_GPU_RESET.value)
            return NodeRef(node=request.node)

        @implements(contracts.WAIT_FOR_NODE)
        async def wait_for_node(request: NodeWaitRequest) -> NodeWaitResult:
            """The node as it is: the fake changes only in steps, so a condition unmet now stays unmet
            until the timeout; an agent answering late is waited for."""
            self.steps.append(Step.WAIT_FOR_NODE.value)
            self.waits.append(request)
            self.open_waits += 1
            try:
                waits_for_the_test = (
                    self.reset_outcome == "late"
                    or request.condition.kind == "hold_lifted"
                    or (self.deleted_late and request.condition.kind == "node_gone")
                )
                while waits_for_the_test and self.exists and not request.condition.met(self.state()):
                    await asyncio.sleep(0.01)
            finally:
                self.open_waits -= 1
            state = self.state()
            return NodeWaitResult(reached=request.condition.met(state), state=state)

        @implements(contracts.FIND_HISTORY)
        async def find_earlier_remediations(request: HistoryRequest) -> RemediationHistory:
            self.history_requests.append(request)
            if self.history is None:
                raise ApplicationError("Temporal refused the query: unknown search attribute", non_retryable=True)
            return self.history(request)

        async def ask(request: PermitRequest, send: Ask) -> PermitAsked:
            if self.fleet is None:
                return PermitAsked(governed=False)
            if not self.exists:  # as the real activity: a node deleted before its permit
                raise node_gone(self.name)
            labelled = request.model_copy(update={"labels": self.fleet.budget.naming_group(self.labels)})
            self.permit_requests.append(labelled)
            queue = governor_task_queue(self.governor_id)
            await send(activity.client(), labelled, self.fleet, self.governor_id, queue)
            return PermitAsked(governed=True, governor_id=self.governor_id, boot_id=self.boot_id)

        @implements(contracts.ASK_PERMIT)
        async def ask_for_permit(request: PermitRequest) -> PermitAsked:
            return await ask(request, governor.ask)

        # One for the node's activities, as a worker keeps one for all its asks.
        collector = GrantCollector(self.governor_id)

        @implements(contracts.COLLECT_PERMIT)
        async def collect_permit(request: PermitRequest) -> PermitAsked:
            asked = await ask(request, collector.ask)
            if not asked.governed:
                return asked
            grant = await collector.wait(activity.client(), request.permit_id, self.collect_within)
            self.collected += grant is not None
            return asked.model_copy(update={"grant": grant})

        @implements(contracts.COLLECT_UNLESS_HELD)
        async def collect_permit_unless_held(request: PermitRequest) -> PermitAsked:
            self.steps.append(Step.COLLECT_UNLESS_HELD.value)  # it reads the node
            if not self.exists:
                raise node_gone(self.name)
            if self.held:
                return PermitAsked(governed=self.fleet is not None, held=True)
            return await collect_permit(request)

        @implements(contracts.CURRENT_POLICY)
        async def current_policy(request: NodeRef) -> PolicySnapshot:
            self.policy_reads += 1
            return PolicySnapshot(version=self.policy.version, policy=self.policy.remediation())

        @implements(contracts.NAME_PROVIDER)
        async def name_provider(request: MachineRequest) -> ProviderNamed:
            self.steps.append(Step.NAME_PROVIDER.value)
            if self.naming_fails:
                raise ApplicationError("the API server is not answering")
            if not self.exists:
                return ProviderNamed()
            # As the real read: the provider the request names, else the one that owns the node (the
            # fake reboot's own).
            provider = request.provider if request.provider != "auto" else "fake"
            return ProviderNamed(provider=provider, machine=f"fake://{self.name}")

        @implements(contracts.SURVEY)
        async def survey(request: MachineRequest) -> NodeSurvey:
            self.steps.append(Step.SURVEY.value)
            if not self.exists:
                return NodeSurvey(node=self.name, exists=False)
            # As the real survey: the provider the request names, else the one that owns the node.
            provider = request.provider if request.provider != "auto" else "simulator"
            return NodeSurvey(
                node=self.name,
                exists=True,
                managed=self.managed,
                held=self.held,
                cordoned_before=self.cordoned,
                labels=self.labels,
                governed=self.fleet is not None,
                pods=self.pods,
                pod_count=len(self.pods),
                provider=provider,
                provider_id=f"sim://{self.name}",
                graceful=self.graceful_supported,
                reboots=provider != "manual",
            )

        served: list[Callable[..., Any]] = [
            quarantine,
            drain,
            reboot,
            describe,
            replace,
            reset,
            withdraw,
            check,
            diagnostics,
            observe,
            release,
            wait_for_node,
            ask_for_permit,
            collect_permit,
            collect_permit_unless_held,
            find_earlier_remediations,
            current_policy,
            survey,
            name_provider,
        ]
        steps: list[contracts.StepContract[Any, Any]] = [
            contracts.QUARANTINE,
            contracts.DRAIN,
            contracts.REBOOT,
            contracts.DESCRIBE_MACHINE,
            contracts.REPLACE,
            contracts.RESET_GPUS,
            contracts.WITHDRAW_GPU_RESET,
            contracts.CHECK_GPUS,
            contracts.COLLECT_DIAGNOSTICS,
            contracts.OBSERVE,
            contracts.RELEASE,
            contracts.WAIT_FOR_NODE,
            contracts.ASK_PERMIT,
            contracts.COLLECT_PERMIT,
            contracts.COLLECT_UNLESS_HELD,
            contracts.FIND_HISTORY,
            contracts.CURRENT_POLICY,
            contracts.SURVEY,
            contracts.NAME_PROVIDER,
        ]
        return {step.name.value: fn for step, fn in zip(steps, served, strict=True)}


@dataclass
class FakeFleet:
    """Several fake nodes behind one set of activities: each request goes to the node it names.

    It samples its own state after every step (how many nodes are cordoned, in all and per value
    of `group_label`), so a test reads the fleet's worst moment from the nodes, not from gpuheal.
    """

    nodes: dict[str, FakeNode]
    group_label: str = ""
    # What counting the GPU nodes answers (None: the number of nodes).
    gpu_nodes: int | None = None
    max_cordoned: int = 0
    max_cordoned_per_group: dict[str, int] = field(default_factory=dict)
    # Every step as it ended, (node, step), in order across the nodes.
    ended: list[tuple[str, str]] = field(default_factory=list)

    def _sample(self) -> None:
        cordoned = [node for node in self.nodes.values() if node.cordoned]
        self.max_cordoned = max(self.max_cordoned, len(cordoned))
        groups: dict[str, int] = {}
        for node in cordoned:
            group = node.labels.get(self.group_label, "")
            groups[group] = groups.get(group, 0) + 1
        for group, count in groups.items():
            self.max_cordoned_per_group[group] = max(self.max_cordoned_per_group.get(group, 0), count)

    def activities(self) -> list[Callable[..., Any]]:
        by_node = {name: node.served() for name, node in self.nodes.items()}
        steps = [step for step in vars(contracts).values() if isinstance(step, contracts.StepContract)]
        served = FakeNode().served()
        routed = [self._route(step, by_node) for step in steps if step.name.value in served]

        @implements(contracts.COUNT_GPU_NODES)
        async def count_gpu_nodes(request: NodeCountRequest) -> NodeCount:
            return NodeCount(count=len(self.nodes) if self.gpu_nodes is None else self.gpu_nodes)

        return [*routed, count_gpu_nodes, find_ended_holders, deliver_permits, return_permit]

    def _route(
        self, step: contracts.StepContract[Any, Any], by_node: dict[str, dict[str, Callable[..., Any]]]
    ) -> Callable[..., Any]:
        """One activity for `step` that hands each request to the node it names."""

        async def route(request: Any) -> Any:
            result = await by_node[request.node][step.name.value](request)
            self.ended.append((request.node, step.name.value))
            self._sample()
            return result

        route.__annotations__ = {"request": step.request, "return": step.result}
        return activity.defn(name=step.name.value)(route)


def resolved_earlier(node: str, gpu: str) -> Callable[[HistoryRequest], RemediationHistory]:
    """What visibility shows: `gpu` on `node` was remediated (Resolved) five days into the window looked at."""

    def history(request: HistoryRequest) -> RemediationHistory:
        earlier = EarlierRemediation(
            workflow_id=f"remediate-{node}",
            run_id="4f1c",
            node=node,
            phase="Resolved",
            gpus=(gpu,),
            repairs=1,
            started_at=request.since + timedelta(days=5),
            closed_at=request.since + timedelta(days=6),
        )
        return RemediationHistory(remediations=(earlier,))

    return history
