"""Fake GPUs: per-node GPU inventory, injected faults, and the ``GpuHealthy`` node condition.

Each node has ``G`` GPUs with stable identities: the UUID is derived from the node name and the
index (so the same fleet always has the same UUIDs) and the PCI bus id follows a DGX-like layout.
Injecting a fault (an XID on one GPU) makes that GPU unhealthy; the node's ``GpuHealthy``
condition turns False with reason ``GpuFault`` and a message naming the XID and the GPU, and the
node's allocatable ``nvidia.com/gpu`` drops, as the NVIDIA device plugin reports. A completed
reboot clears faults, except those injected as surviving reboots (a fault the reboot did not fix).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from .jsonvalues import JsonDict
from .timestamps import rfc3339_micro

GPU_RESOURCE = "nvidia.com/gpu"
CONDITION_TYPE = "GpuHealthy"
HEALTHY_REASON = "GpusHealthy"
FAULT_REASON = "GpuFault"

_UUID_NAMESPACE = uuid.UUID("6c7a1f0e-4d3b-5f7e-9a2c-8b1d0e3f4a5b")
# PCI bus numbers of the eight GPUs of an HGX/DGX baseboard.
_DGX_BUSES = (0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB)

# Short descriptions of common XIDs for default fault messages.
XID_TEXT = {
    13: "Graphics Engine Exception",
    31: "GPU memory page fault",
    43: "GPU stopped processing",
    45: "Preemptive cleanup, due to previous errors",
    48: "Double Bit ECC Error",
    63: "ECC page retirement or row remapping recording event",
    64: "ECC page retirement or row remapper recording failure",
    74: "NVLink Error",
    79: "GPU has fallen off the bus",
    92: "High single-bit ECC error rate",
    94: "Contained ECC error",
    95: "Uncontained ECC error",
    119: "GSP RPC Timeout",
    120: "GSP Error",
}


def gpu_uuid(node: str, index: int) -> str:
    """The deterministic UUID of GPU ``index`` on ``node``, in nvidia-smi's ``GPU-…`` form."""
    return "GPU-" + str(uuid.uuid5(_UUID_NAMESPACE, f"{node}/{index}"))


def pci_bus_id(index: int) -> str:
    """A plausible PCI bus id: DGX bus numbers for the first eight, then further domains."""
    domain, slot = divmod(index, len(_DGX_BUSES))
    return f"{domain:04X}:{_DGX_BUSES[slot]:02X}:00.0"


@dataclass
class RecordedXid:
    """An XID injected into a simulated GPU; it clears on reboot unless `survives_reboot`."""

    xid: int
    message: str
    at: str
    survives_reboot: bool = False


@dataclass
class Gpu:
    index: int
    uuid: str
    pci: str
    faults: list[RecordedXid] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.faults

    def as_json(self) -> JsonDict:
        return {
            "index": self.index,
            "uuid": self.uuid,
            "pci": self.pci,
            "healthy": self.healthy,
            "xids": [f.xid for f in self.faults],
        }


class UnknownGpu(LookupError):
    """The GPU reference names no GPU of this node."""


@dataclass
class NodeGpus:
    """The GPUs of one node and their health."""

    node: str
    gpus: list[Gpu]

    @classmethod
    def create(cls, node: str, count: int) -> NodeGpus:
        return cls(node, [Gpu(i, gpu_uuid(node, i), pci_bus_id(i)) for i in range(count)])

    def find(self, ref: int | str) -> Gpu:
        """A GPU by index or by UUID."""
        if isinstance(ref, int):
            if 0 <= ref < len(self.gpus):
                return self.gpus[ref]
            raise UnknownGpu(f"node {self.node} has no GPU with index {ref} (it has {len(self.gpus)})")
        for gpu in self.gpus:
            if gpu.uuid == ref or gpu.pci == ref:
                return gpu
        raise UnknownGpu(f"node {self.node} has no GPU {ref!r}")

    def inject(self, xid: int, ref: int | str, message: str | None, survives_reboot: bool) -> Gpu:
        gpu = self.find(ref)
        text = message or XID_TEXT.get(xid, "GPU error")
        gpu.faults.append(RecordedXid(xid, text, rfc3339_micro(), survives_reboot))
        return gpu

    def clear(self, *, reboot: bool, keep_all_on_reboot: bool = False) -> None:
        """Clear faults: all of them, or (``reboot``) those a reboot fixes."""
        for gpu in self.gpus:
            if not reboot:
                gpu.faults.clear()
            elif not keep_all_on_reboot:
                gpu.faults = [f for f in gpu.faults if f.survives_reboot]

    @property
    def healthy(self) -> bool:
        return all(g.healthy for g in self.gpus)

    @property
    def healthy_count(self) -> int:
        return sum(1 for g in self.gpus if g.healthy)

    def condition(self) -> tuple[str, str, str]:
        """``(status, reason, message)`` of the node's GpuHealthy condition."""
        if self.healthy:
            return "True", HEALTHY_REASON, f"All {len(self.gpus)} GPUs are healthy"
        parts = []
        for gpu in self.gpus:
            for fault in gpu.faults:
                parts.append(f"XID {fault.xid} on GPU {gpu.index} ({gpu.uuid}, {gpu.pci}): {fault.message}")
        return "False", FAULT_REASON, "; ".join(parts)
