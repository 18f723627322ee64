"""gpuheal's per-node GPU agent as the simulated fleet plays it: the one writer of ``GpuHealthy``.

On a real node the agent is a DaemonSet pod, a writer separate from the kubelet: it reports the
``GpuHealthy`` condition (and here, standing in for the device plugin, the allocatable
``nvidia.com/gpu`` count) when what it knows changes. As gpuheal's agent does, it names in the
condition's message the boot it wrote it on and the moment (``gpuheal.domain.gpu_health``).

When the node goes down the agent stops with it; after the node is back it reports again only
once its own start delay (``gpu_agent_start_seconds``) has passed, so until then the condition
written before the reboot lingers, as on a real node. A node handed to a real agent
(``hand_over``) is left to that agent entirely.
"""

from __future__ import annotations

from collections.abc import Callable

from gpuheal.domain.gpu_health import stamp_message

from .clock import Timers
from .conditions import post_condition
from .gpus import CONDITION_TYPE, GPU_RESOURCE, NodeGpus
from .jsonvalues import JsonDict
from .registry import Registry
from .timestamps import rfc3339, utcnow

# What the agent knows of a node: its GPUs and the boot it runs on (None: no such node).
Truth = Callable[[str], tuple[NodeGpus, str] | None]


def gpu_condition(gpus: NodeGpus, boot_id: str) -> tuple[str, str, str]:
    """``(status, reason, message)`` of GpuHealthy as the agent writes it now, on ``boot_id``."""
    status, reason, message = gpus.condition()
    return status, reason, stamp_message(message, boot_id, utcnow())


class SimulatedGpuAgent:
    def __init__(self, registry: Registry, timers: Timers, truth: Truth, *, start_seconds: float) -> None:
        self.registry = registry
        self.timers = timers
        self.truth = truth
        self.start_seconds = start_seconds
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

    def hand_over(self, node: str) -> None:
        """A real agent runs on this node: the simulated one writes nothing there any more."""
        self.real.add(node)
        self.timers.cancel(("gpu-agent-start", node))

    def forget(self, node: str) -> None:
        self.down.discard(node)
        self.real.discard(node)
        self.timers.cancel(("gpu-agent-start", node))
