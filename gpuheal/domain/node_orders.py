"""Orders a remediation hands the agent on its node, and the agent's reports, through the node itself.

The remediation cannot reach a node's agent directly (its sockets are local to the node), so the
Kubernetes API carries the conversation. The worker writes an order into a node annotation of the
order's kind; the agent, which watches its own node, carries it out once and answers in a node
condition of that kind, whose message is the report (status "True" when it went well). The agent
writes only node status, as it already does for `GpuHealthy`, so it needs no right to change
anything else on any node.

Every order names its run (`holder`), is unique (`id`, which the report carries back, so an agent
that restarted finds its answer in the condition and does not act again) and names the boot it was
written on: an agent on a later boot ignores it, the remediation having moved on to a reboot.
The kinds are a GPU reset (gpuheal.domain.gpu_reset) and a GPU check (gpuheal.domain.gpu_check).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict


class _Message(BaseModel):
    # Ignore what a newer worker or agent adds: the two are upgraded one after the other.
    model_config = ConfigDict(extra="ignore", frozen=True)


class NodeOrder(_Message):
    """An order for the node's agent. `id` is unique per order; the report must carry it back."""

    id: str
    holder: str
    at: datetime
    # The node's bootID when the order was written; an agent on a later boot ignores the order.
    boot_id: str = ""


class NodeReport(_Message):
    """What the agent did with order `id`."""

    id: str
    ok: bool
    # One line for people: what was done, or why it failed or could not be confirmed.
    detail: str
    at: datetime


OrderT = TypeVar("OrderT", bound=NodeOrder)
ReportT = TypeVar("ReportT", bound=NodeReport)


@dataclass(frozen=True)
class OrderKind(Generic[OrderT, ReportT]):
    """One kind of order: where it is written, where it is answered, and its two messages."""

    # For people and logs ("GPU reset").
    name: str
    annotation: str
    condition: str
    order: type[OrderT]
    report: type[ReportT]
    # The condition's reason when the report says it went well, and when not.
    reason_ok: str
    reason_failed: str
