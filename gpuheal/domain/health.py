"""Health events: what every detector reports, in one shape, before anything acts on it.

The kernel-log monitor, the NVML monitor and the PlatformConnector intake all produce these; one
pipeline in the agent takes them from there. The fields follow the health-event contract (so an
event received on the wire converts without loss), with names in Python's spelling.
"""

from __future__ import annotations

from datetime import datetime
from enum import IntEnum

from pydantic import BaseModel, ConfigDict, Field

from gpuheal.domain.actions import Action, RecommendedAction
from gpuheal.domain.faults import MAX_MESSAGE_BYTES, MAX_SOURCE_BYTES, Fault
from gpuheal.domain.truncate import truncate

GPU_UUID = "GPU_UUID"
# A GPU's board serial (NVML's nvmlDeviceGetSerial), which stays with the board across machines.
GPU_SERIAL = "GPU_SERIAL"
PCI = "PCI"
# The check of a GPU-reset acknowledgement: a healthy event from it clears every fault of that GPU.
CHECK_GPU_RESET = "GpuReset"


class ProcessingStrategy(IntEnum):
    """What may be done with an event, with its wire numbers. UNSPECIFIED is read as EXECUTE_REMEDIATION."""

    UNSPECIFIED = 0
    EXECUTE_REMEDIATION = 1
    STORE_ONLY = 2
    STORE_AND_ANALYSE = 3


class Entity(BaseModel):
    """Something an event is about: (`GPU_UUID`, `GPU-…`), (`PCI`, `0000:3b:00`), …"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    value: str


class HealthEvent(BaseModel):
    """One health observation about one node."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    node: str = Field(min_length=1)
    agent: str = ""
    component_class: str = ""
    check_name: str = ""
    is_fatal: bool = False
    is_healthy: bool = True
    message: str = ""
    action: Action = RecommendedAction.NONE
    custom_action: str = ""
    error_codes: tuple[str, ...] = ()
    entities: tuple[Entity, ...] = ()
    metadata: dict[str, str] = Field(default_factory=dict)
    generated_at: datetime | None = None
    strategy: ProcessingStrategy = ProcessingStrategy.EXECUTE_REMEDIATION

    @property
    def gpu_uuids(self) -> tuple[str, ...]:
        return tuple(e.value for e in self.entities if e.type == GPU_UUID)

    @property
    def gpu_serials(self) -> tuple[str, ...]:
        return tuple(e.value for e in self.entities if e.type == GPU_SERIAL)

    @property
    def xid(self) -> int | None:
        """The XID when the event carries one as its first numeric error code."""
        for code in self.error_codes:
            if code.isascii() and code.isdigit():  # "²".isdigit() is true, and int() refuses it
                return int(code)
        return None

    @property
    def changes_the_cluster(self) -> bool:
        """STORE_ONLY events are recorded and never act on the cluster."""
        return self.strategy is not ProcessingStrategy.STORE_ONLY

    @property
    def needs_remediation(self) -> bool:
        """Fatal, actionable and allowed to act: the events that start or join a remediation."""
        return (
            self.is_fatal
            and self.action.is_actionable
            and self.strategy in (ProcessingStrategy.EXECUTE_REMEDIATION, ProcessingStrategy.UNSPECIFIED)
        )

    def to_fault(self) -> Fault:
        """The fault a remediation receives for this event, its free text cut to what a payload carries."""
        return Fault(
            node=self.node,
            action=self.action,
            xid=self.xid,
            gpu_uuids=self.gpu_uuids,
            gpu_serials=self.gpu_serials,
            message=truncate(self.message, MAX_MESSAGE_BYTES),
            source=truncate("/".join(part for part in (self.agent, self.check_name) if part), MAX_SOURCE_BYTES),
            event_id=self.id,
            detected_at=self.generated_at,
        )
