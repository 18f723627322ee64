"""The contract between RemediationWorkflow and its activities: one typed definition per step.

Each step's `StepContract` names the activity (gpuheal.domain.steps.Step), its request and result
types and its default options. The workflow runs a step through its contract
(`RemediationWorkflow._run`), the activity implements it (`gpuheal.activities.contract.implements`),
and so do the test fakes: a renamed step or a changed result type fails the type check, and a
reader follows a call to its activity through the contract's name. Failures the workflow must tell
apart cross as an ApplicationError whose `type` is a `FailureType`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from gpuheal.domain.diagnostics import DiagnosticsOrder
from gpuheal.domain.fleet import (
    COLLECT_WITHIN,
    EndedHolders,
    HolderCheck,
    NodeCount,
    NodeCountRequest,
    PermitAsked,
    PermitDelivery,
    PermitGiveBack,
    PermitGivenBack,
    PermitRequest,
)
from gpuheal.domain.gpu_check import GpuCheckOrder
from gpuheal.domain.gpu_reset import GpuResetOrder
from gpuheal.domain.history import HistoryRequest, RemediationHistory
from gpuheal.domain.node_wait import NodeWaitRequest, NodeWaitResult
from gpuheal.domain.policy import StepTimeouts
from gpuheal.domain.policy_document import PolicySnapshot
from gpuheal.domain.steps import (
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
    ProviderNamed,
    QuarantineRequest,
    RebootRequest,
    RebootResult,
    ReleaseRequest,
    ReplaceRequest,
    Step,
)


class FailureType(StrEnum):
    """The `type` of the ApplicationError an activity fails with, for failures the workflow tells apart."""

    # The reboot provider failed (throttled past its attempts, refused, misconfigured): a person looks.
    PROVIDER = "ProviderError"
    # The node was deleted while the remediation held it.
    NODE_GONE = "NodeGone"


RequestT = TypeVar("RequestT", bound=BaseModel)
ResultT = TypeVar("ResultT", bound=BaseModel)


@dataclass(frozen=True)
class Retry:
    """How a step's attempts are retried: exponential backoff from `initial` up to `maximum`."""

    initial: timedelta = timedelta(seconds=1)
    # None: Temporal's default, 100 times `initial`.
    maximum: timedelta | None = None
    # 0: without limit.
    attempts: int = 0


def _node_call(timeouts: StepTimeouts, _: Any) -> timedelta:
    return timeouts.node_call


# Kubernetes calls are short; retry them patiently (an API server outage must not end a remediation).
KUBERNETES_RETRY = Retry(initial=timedelta(milliseconds=200), maximum=timedelta(seconds=10))


@dataclass(frozen=True)
class StepContract(Generic[RequestT, ResultT]):
    """One step: the activity's name, its request and result types and how the workflow runs it.

    A local step runs inside the workflow task that asks for it, so quarantine, reads and release
    cost no extra round trip through the server; in a storm of faults that is most of the load.
    Steps that heartbeat or must be recorded before the next one stay regular activities. Every
    step is retried, so every activity is idempotent.

    A step that `acts_on_node` (evicts its pods, reboots or terminates its machine) is not left
    running when its run is cancelled (runs begun under 0.3.0): the cancel reaches the activity at
    its next heartbeat, and the run waits until the activity has ended (taken the cancel, or
    finished) before it hands the node back and returns its permit; the attempt's start-to-close
    and heartbeat timeouts bound that wait. So such a step is a regular activity that heartbeats.
    """

    name: Step
    request: type[RequestT]
    result: type[ResultT]
    local: bool
    # Each attempt's start-to-close timeout, from the remediation's policy and the request.
    timeout: Callable[[StepTimeouts, RequestT], timedelta] = _node_call
    heartbeat: Callable[[StepTimeouts], timedelta] | None = None
    retry: Callable[[StepTimeouts], Retry] = lambda _: KUBERNETES_RETRY
    acts_on_node: bool = False

    def __post_init__(self) -> None:
        if self.local and self.heartbeat is not None:
            raise ValueError(f"{self.name}: a local activity cannot heartbeat")
        if self.acts_on_node and self.heartbeat is None:
            raise ValueError(f"{self.name}: a step that acts on the node must heartbeat, to learn of a cancel")


# What one more permit adds to the time a delivery may take (a storm's pass can grant a thousand).
_PER_PERMIT = timedelta(milliseconds=100)

QUARANTINE = StepContract(Step.QUARANTINE, QuarantineRequest, NodeRecord, local=True)
DRAIN = StepContract(
    Step.DRAIN,
    DrainRequest,
    DrainProgress,
    False,
    lambda t, _: t.drain_pass,
    lambda t: t.drain_heartbeat,
    acts_on_node=True,
)


def _provider_retry(timeouts: StepTimeouts) -> Retry:
    """Provider calls that keep failing are retried `provider_attempts` times before a person is asked."""
    return Retry(initial=timedelta(seconds=2), maximum=timedelta(minutes=1), attempts=timeouts.provider_attempts)


REBOOT = StepContract(
    Step.REBOOT,
    RebootRequest,
    RebootResult,
    False,
    lambda t, _: t.reboot_call,
    lambda t: t.reboot_heartbeat,
    _provider_retry,
    acts_on_node=True,
)
RESET_GPUS = StepContract(Step.RESET_GPUS, GpuResetRequest, GpuResetOrder, local=True)
WITHDRAW_GPU_RESET = StepContract(Step.WITHDRAW_GPU_RESET, GpuResetRequest, NodeRef, local=True)
CHECK_GPUS = StepContract(Step.CHECK_GPUS, GpuCheckRequest, GpuCheckOrder, local=True)
COLLECT_DIAGNOSTICS = StepContract(Step.COLLECT_DIAGNOSTICS, DiagnosticsRequest, DiagnosticsOrder, local=True)
DESCRIBE_MACHINE = StepContract(
    Step.DESCRIBE_MACHINE, MachineRequest, MachineState, local=False, retry=lambda _: Retry(attempts=3)
)
# Terminating is idempotent (EC2 terminates a terminated instance again without effect, and the
# activity takes a deleted node as done), so retries need no record of their own; attempts heartbeat
# as a reboot's do.
REPLACE = StepContract(
    Step.REPLACE,
    ReplaceRequest,
    MachineState,
    False,
    lambda t, _: t.reboot_call,
    lambda t: t.reboot_heartbeat,
    _provider_retry,
    acts_on_node=True,
)
OBSERVE = StepContract(Step.OBSERVE, NodeRef, NodeState, local=True)
RELEASE = StepContract(Step.RELEASE, ReleaseRequest, NodeState, local=True)

# The wait answers once, at the latest when the request's timeout (counted from the first attempt)
# has passed; an attempt may run that long, and heartbeats the states it sees so a retry resumes.
WAIT_FOR_NODE = StepContract(
    Step.WAIT_FOR_NODE,
    NodeWaitRequest,
    NodeWaitResult,
    False,
    lambda t, request: request.timeout + t.node_call,
    lambda t: t.node_call,
)

# The fleet governor: a remediation asks for its permit (the governor answers with a signal); the
# governor counts the GPU nodes, signals the permits it grants, and asks Temporal which holders of
# its permits have ended. The permits of one pass go out in one step (a signal from the workflow
# itself costs its history two events and a workflow task per permit, which a storm's hundreds of
# grants queue behind), and a regular one: a local step would signal before the task that decided
# the grants is recorded, and a worker lost in between would leave permits out that a replay, with
# a pause arrived meanwhile, never grants.
ASK_PERMIT = StepContract(Step.ASK_PERMIT, PermitRequest, PermitAsked, local=True)
# … or asks, and waits a moment for the grant, which it then carries back itself (no signal) …
COLLECT_PERMIT = StepContract(
    Step.COLLECT_PERMIT, PermitRequest, PermitAsked, True, lambda t, _: t.node_call + COLLECT_WITHIN
)
# … or first reads the node, and asks only where it is not on hold (a read and a signal: 2 calls).
COLLECT_UNLESS_HELD = StepContract(
    Step.COLLECT_UNLESS_HELD, PermitRequest, PermitAsked, True, lambda t, _: 2 * t.node_call + COLLECT_WITHIN
)
# … and gives its permit back when it ends (runs begun under 0.3.0): a local step that signals the
# governor, so the run ends in the workflow task that decided its ending, where a signal sent by the
# workflow itself waited for the server's answer in a task of its own. The governor takes a permit
# back once however often it is returned, so a step run again (its task lost and replayed) is
# harmless. A few attempts within seconds, in the run's last task: a governor that refuses the signal
# for good, or cannot be reached meanwhile, must not keep the run (and so its permit) open; the run
# logs it and ends, and the governor's holder check takes back the permit of a run that has ended.
RETURN_PERMIT = StepContract(
    Step.RETURN_PERMIT,
    PermitGiveBack,
    PermitGivenBack,
    local=True,
    retry=lambda _: Retry(initial=timedelta(seconds=1), maximum=timedelta(seconds=5), attempts=5),
)
COUNT_GPU_NODES = StepContract(Step.COUNT_GPU_NODES, NodeCountRequest, NodeCount, local=False)
DELIVER_PERMITS = StepContract(
    Step.DELIVER_PERMITS,
    PermitDelivery,
    EndedHolders,
    False,
    lambda t, delivery: t.node_call + _PER_PERMIT * len(delivery.permits),
)
FIND_ENDED = StepContract(Step.FIND_ENDED, HolderCheck, EndedHolders, local=False)

# Temporal's visibility, read for the remediations before this one; a few attempts only: a remediation
# whose history cannot be read goes on without it, and says so.
FIND_HISTORY = StepContract(
    Step.FIND_HISTORY, HistoryRequest, RemediationHistory, local=True, retry=lambda _: Retry(attempts=5)
)

# A remediation started without a policy runs under the worker's policy file, as it stands when the
# run begins (recorded, so a later edit of the file never changes a run under way or its replay).
CURRENT_POLICY = StepContract(Step.CURRENT_POLICY, NodeRef, PolicySnapshot, local=True)

# A dry run reads the node, the pods a drain would move and the provider that would reboot it, in one step.
SURVEY = StepContract(Step.SURVEY, MachineRequest, NodeSurvey, local=True)
# Only a name for the reboot step's summary: a few quick attempts, then the step goes on without it
# (an API server outage must not hold up a reboot for a label).
NAME_PROVIDER = StepContract(
    Step.NAME_PROVIDER,
    MachineRequest,
    ProviderNamed,
    local=True,
    timeout=lambda _t, _r: timedelta(seconds=5),
    retry=lambda _: Retry(initial=timedelta(milliseconds=200), maximum=timedelta(seconds=2), attempts=3),
)
