"""gpuheal's per-node GPU agent as the simulated fleet plays it: the one writer of ``GpuHealthy``.

On a real node the agent is a DaemonSet pod, a writer separate from the kubelet: it reports the
``GpuHealthy`` condition (and here, standing in for the device plugin, the allocatable
``nvidia.com/gpu`` count) when what it knows changes. As gpuheal's agent does, it names in the
condition's message the boot it wrote it on and the moment (``gpuheal.domain.gpu_health``).

It answers GPU check orders too (``gpuheal.io/gpu-check-request``, gpuheal.domain.gpu_check), as
gpuheal's agent does, ``check_seconds`` after the order (or after it starts again): the check passes
when every GPU is healthy and names the faults otherwise, in the ``GpuCheck`` condition.

When the node goes down the agent stops with it; after the node is back it reports again only
once its own start delay (``gpu_agent_start_seconds``) has passed, so until then the condition
written before the reboot lingers, as on a real node. A node handed to a real agent
(``hand_over``) is left to that agent entirely.
"""

from __future__ import annotations

from collections.abc import Callable

from gpuheal.domain.gpu_check import GPU_CHECK
from gpuheal.domain.gpu_health import stamp_message

from .clock import Timers
from .conditions import find_condition, post_condition
from .gpus import CONDITION_TYPE, GPU_RESOURCE, NodeGpus
from .jsonvalues import JsonDict, dig
from .registry import Registry
from .timestamps import rfc3339, utcnow

# What the agent knows of a node: its GPUs and the boot it runs on (None: no such node).
Truth = Callable[[str], tuple[NodeGpus, str] | None]


def gpu_condition(gpus: NodeGpus, boot_id: str) -> tuple[str, str, str]:
    """``(status, reason, message)`` of GpuHealthy as the agent writes it now, on ``boot_id``."""
    status, reason, message = gpus.condition()
    return status, reason, stamp_message(message, boot_id, utcnow())


class SimulatedGpuAgent:
    def __init__(
        self, registry: Registry, timers: Timers, truth: Truth, *, start_seconds: float, check_seconds: float = 0.2
    ) -> None:
        self.registry = registry
        self.timers = timers
        self.truth = truth
        self.start_seconds = start_seconds
        self.check_seconds = check_seconds
        # Nodes whose agent is not running (down with the node, or still starting).
        self.down: set[str] = set()
        # Nodes where a real agent runs instead.
        self.real: set[str] = set()

    def report(self, node: str) -> None:
        """Write what the agent knows now, unless it is not running there."""
        known = self.truth(node)
        if known is None or node in self.down or node in self.real:
            return
        gpus, boot_id = known
        status, reason, message = gpu_condition(gpus, boot_id)
        now = rfc3339()

        def update(obj: JsonDict) -> bool:
            node_status = obj.setdefault("status", {})
            post_condition(node_status.setdefault("conditions", []), CONDITION_TYPE, status, reason, message, now)
            if gpus.gpus:
                node_status.setdefault("capacity", {})[GPU_RESOURCE] = str(len(gpus.gpus))
                node_status.setdefault("allocatable", {})[GPU_RESOURCE] = str(gpus.healthy_count)
            return True

        self.registry.mutate("nodes", "", node, update)

    def node_down(self, node: str) -> None:
        self.down.add(node)
        self.timers.cancel(("gpu-agent-start", node))

    def node_up(self, node: str) -> None:
        """The node booted: the agent starts and reports after its start delay."""
        self.down.add(node)
        self.timers.later(("gpu-agent-start", node), self.start_seconds, lambda: self._started(node))

    def _started(self, node: str) -> None:
        self.down.discard(node)
        self.report(node)
        self.check_ordered(node)

    def check_ordered(self, node: str) -> None:
        """The node's GPU check order changed: answer it after the check's time."""
        self.timers.later(("gpu-check", node), self.check_seconds, lambda: self._answer_check(node))

    def _answer_check(self, node: str) -> None:
        """Answer the node's GPU check order once, on the boot it was written on, from the GPUs' truth."""
        known = self.truth(node)
        entry = self.registry.store.get("nodes", "", node)
        if known is None or entry is None or node in self.down or node in self.real:
            return
        try:
            order = GPU_CHECK.order.model_validate_json(
                str(dig(entry.obj, "metadata", "annotations", GPU_CHECK.annotation))
            )
        except ValueError:
            return  # none, or not one gpuheal wrote
        gpus, boot_id = known
        if (order.boot_id and order.boot_id != boot_id) or _answered(entry.obj) == order.id:
            return
        status, _, message = gpus.condition()
        ok = status == "True"
        report = GPU_CHECK.report(id=order.id, ok=ok, detail=message, tool="simulator", at=utcnow())

        def update(obj: JsonDict) -> bool:
            conditions = obj.setdefault("status", {}).setdefault("conditions", [])
            reason = GPU_CHECK.reason_ok if ok else GPU_CHECK.reason_failed
            post_condition(conditions, GPU_CHECK.condition, status, reason, report.model_dump_json(), rfc3339())
            return True

        self.registry.mutate("nodes", "", node, update)

    def hand_over(self, node: str) -> None:
        """A real agent runs on this node: the simulated one writes nothing there any more."""
        self.real.add(node)
        self.timers.cancel(("gpu-agent-start", node))

    def forget(self, node: str) -> None:
        self.down.discard(node)
        self.real.discard(node)
        self.timers.cancel(("gpu-agent-start", node))
        self.timers.cancel(("gpu-check", node))


def _answered(node: JsonDict) -> str | None:
    """The id of the check order the node's GpuCheck condition answers, if any."""
    answer = find_condition(dig(node, "status", "conditions"), GPU_CHECK.condition) or {}
    try:
        return GPU_CHECK.report.model_validate_json(str(answer.get("message", ""))).id
    except ValueError:
        return None
