"""What a remediation waits for on its node, and the request and answer of the one activity that waits.

The workflow does not poll the node: it asks `wait_for_node` (gpuheal.activities.node_wait) to watch
the node until a condition holds, the timeout passes or the node is deleted, and receives one answer.
The conditions are pure judgements of a `NodeState`, so the workflow and the activity read a state
the same way and tests need no cluster.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from gpuheal.domain.gpu_health import HealthBar, gpu_health_problem
from gpuheal.domain.node_orders import NodeReport
from gpuheal.domain.steps import NodeState

DELETED = "the node was deleted"


class _Condition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def missing(self, state: NodeState) -> str | None:
        """None when the state meets the condition, else what it still lacks, for people."""
        return DELETED if not state.exists else self._missing(state)

    def met(self, state: NodeState) -> bool:
        return self.missing(state) is None

    def _missing(self, state: NodeState) -> str | None:
        raise NotImplementedError


class BackFromReboot(_Condition):
    """The node is Ready and, when the reboot was to start a new boot, on another boot than before it."""

    kind: Literal["back_from_reboot"] = "back_from_reboot"
    boot_id_before: str
    # False for a provider that repairs without rebooting (a person, the manual provider).
    expects_new_boot: bool = True

    def _missing(self, state: NodeState) -> str | None:
        if self.expects_new_boot and state.boot_id == self.boot_id_before:
            return f"the node is still on boot {self.boot_id_before or '(unknown)'}, as before the reboot"
        if not state.ready:
            return f"the node is not Ready (boot {state.boot_id or 'unknown'})"
        return None


class GpusHealthy(_Condition):
    """The node's GpuHealthy condition proves the GPUs healthy after the repair `bar` names."""

    kind: Literal["gpus_healthy"] = "gpus_healthy"
    bar: HealthBar

    def _missing(self, state: NodeState) -> str | None:
        return gpu_health_problem(state.gpu_report, state.boot_id, self.bar)


class _OrderAnswered(_Condition):
    """The node's agent answered order `order_id` (successfully or not) in the condition of its kind."""

    order_id: str
    _what: ClassVar[str]

    def _answer(self, state: NodeState) -> NodeReport | None:
        raise NotImplementedError

    def _missing(self, state: NodeState) -> str | None:
        answer = self._answer(state)
        if answer is None:
            return f"the node's agent has not answered a {self._what} order"
        if answer.id != self.order_id:
            return f"the node's agent last answered {self._what} order {answer.id}, not {self.order_id}"
        return None


class GpuResetAnswered(_OrderAnswered):
    """The node's agent answered GPU reset order `order_id` in the GpuReset condition."""

    kind: Literal["gpu_reset_answered"] = "gpu_reset_answered"
    _what: ClassVar[str] = "GPU reset"

    def _answer(self, state: NodeState) -> NodeReport | None:
        return state.gpu_reset


class GpuCheckAnswered(_OrderAnswered):
    """The node's agent answered GPU check order `order_id` in the GpuCheck condition."""

    kind: Literal["gpu_check_answered"] = "gpu_check_answered"
    _what: ClassVar[str] = "GPU check"

    def _answer(self, state: NodeState) -> NodeReport | None:
        return state.gpu_check


class HoldLifted(_Condition):
    """The node is no longer labelled gpuheal.io/hold=true."""

    kind: Literal["hold_lifted"] = "hold_lifted"

    def _missing(self, state: NodeState) -> str | None:
        return "the node is labelled gpuheal.io/hold=true" if state.held else None


class NodeGone(_Condition):
    """The node object was deleted (its machine terminated, the cloud's node controller removed it),
    or it runs on another boot than `boot_id_before`: a new machine took the old name."""

    kind: Literal["node_gone"] = "node_gone"
    boot_id_before: str = ""

    def missing(self, state: NodeState) -> str | None:
        if not state.exists or (self.boot_id_before and state.boot_id and state.boot_id != self.boot_id_before):
            return None
        return "the node object still exists"


class DiagnosticsAnswered(_OrderAnswered):
    """The node's agent answered diagnostics order `order_id` in the GpuDiagnostics condition."""

    kind: Literal["diagnostics_answered"] = "diagnostics_answered"
    _what: ClassVar[str] = "diagnostics"

    def _answer(self, state: NodeState) -> NodeReport | None:
        return state.diagnostics


NodeCondition = Annotated[
    BackFromReboot | GpusHealthy | GpuResetAnswered | GpuCheckAnswered | DiagnosticsAnswered | HoldLifted | NodeGone,
    Field(discriminator="kind"),
]


class NodeWaitRequest(BaseModel):
    """Watch `node` until `condition` holds, for at most `timeout` from when the wait was first scheduled."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node: str
    condition: NodeCondition
    timeout: timedelta


class NodeWaitResult(BaseModel):
    """How the wait ended, with the last state of the node it saw."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The condition held on `state`.
    reached: bool
    state: NodeState

    @property
    def deleted(self) -> bool:
        """The node was deleted while (or before) it was waited for."""
        return not self.state.exists


class NodeWaitProgress(BaseModel):
    """The heartbeat of a wait: the last state seen, and the resourceVersion a retried attempt resumes from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    state: NodeState
    resource_version: str
