"""The node's GPU cache: every GPU by name, under one resource version for the whole cache.

Each write (create, update, status update, delete) bumps the cache's version by exactly one and
stamps it on the GPU it wrote, both as `metadata.resource_version` (a string, as Kubernetes clients
expect) and as `resource_version` (int64). So the version names a point in the cache's history, a
GPU's version says when it last changed, and a watcher that saw version N has seen every write up to
N.

Consistency comes from asyncio rather than locks: every method runs to completion without awaiting,
so a write is exclusive and a read never sees half of one. The cache is therefore meant to be used
from the event loop the server runs on (in-process providers call it directly; everyone else goes
through gRPC); it is not thread-safe.

Objects are copied on the way in and on the way out. A stored `Gpu` is never mutated afterwards (a
write replaces it with a new object), which lets snapshots, watch events and the cached ListGpus
response share stored objects without copying them again.

Writes are announced to listeners (the watch hub, the readiness gate) synchronously, in version
order, before the write returns.

What a write stores is the GPU's name, namespace, spec and status, without fields gpuheal does not
know (a newer client's, or padding: they would carry bytes past every check), checked against
`limits.GpuLimits` as a whole before anything is written. A UUID names one physical GPU: no two
GPUs share one (compared without regard to case), and an update cannot change a GPU's UUID (delete
it and create it again).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gpuheal.agents.device_api.errors import (
    AlreadyExistsError,
    CacheFullError,
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
)
from gpuheal.agents.device_api.limits import (
    MAX_LIST_BYTES,
    SHOWN_BYTES,
    GpuLimits,
    check_gpu,
    check_name,
    worst_list_bytes,
)
from gpuheal.domain.truncate import truncate
from gpuheal.protos import gpu_pb2

ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"

DEFAULT_MAX_GPUS = 1024


@dataclass(frozen=True, slots=True)
class CacheEvent:
    """One write, as listeners see it: the event type, the GPU as written (shared: do not mutate)
    and the cache version the write produced (for DELETED, the GPU's last state stamped with it)."""

    type: str
    gpu: gpu_pb2.Gpu
    resource_version: int


Listener = Callable[[CacheEvent], None]


def parse_resource_version(text: str, field: str) -> int:
    """The integer in a string resource version; "" means 0 (no version given)."""
    if not text:
        return 0
    try:
        value = int(text)
    except ValueError:
        raise InvalidArgumentError(
            f"{field} {truncate(text, SHOWN_BYTES)!r} is not an integer resource version"
        ) from None
    if value < 0:
        raise InvalidArgumentError(f"{field} {value} is negative")
    return value


def _copy(gpu: gpu_pb2.Gpu) -> gpu_pb2.Gpu:
    clone = gpu_pb2.Gpu()
    clone.CopyFrom(gpu)
    return clone


def _storable(gpu: gpu_pb2.Gpu, status: gpu_pb2.GpuStatus | None = None) -> gpu_pb2.Gpu:
    """What the cache keeps of a GPU written with `status` (its own by default): no versions, no unknown fields."""
    stored = gpu_pb2.Gpu()
    stored.metadata.name = gpu.metadata.name
    stored.metadata.namespace = gpu.metadata.namespace
    stored.spec.CopyFrom(gpu.spec)
    stored.status.CopyFrom(gpu.status if status is None else status)
    stored.DiscardUnknownFields()
    return stored


class GpuCache:
    """Every GPU of the node by name; see the module docstring for the consistency rules.

    `max_gpus` bounds the cache (creates beyond it fail with RESOURCE_EXHAUSTED) so that a runaway
    provider cannot grow the agent without limit; the design target is 1,024 GPUs per node.
    `limits` bounds what each GPU may carry. Together they must keep the largest ListGpus response
    within what clients accept (`MAX_LIST_BYTES`): a cache that could answer more is refused.
    """

    def __init__(self, max_gpus: int = DEFAULT_MAX_GPUS, limits: GpuLimits | None = None) -> None:
        if max_gpus < 1:
            raise ValueError(f"max_gpus must be at least 1, not {max_gpus}")
        self.limits = limits or GpuLimits()
        if (worst := worst_list_bytes(max_gpus, self.limits)) > MAX_LIST_BYTES:
            raise ValueError(
                f"a ListGpus response of {max_gpus} GPUs may be {worst} bytes; at most {MAX_LIST_BYTES} "
                "are accepted by clients: lower max_gpus or the per-GPU limits"
            )
        self._max_gpus = max_gpus
        self._gpus: dict[str, gpu_pb2.Gpu] = {}
        # Case-folded spec.uuid -> name: a UUID belongs to one GPU.
        self._names_by_uuid: dict[str, str] = {}
        self._version = 0
        self._listeners: list[Listener] = []
        # ListGpus is the hot read: its response is built once per cache version and shared.
        self._list_response: gpu_pb2.ListGpusResponse | None = None

    # -- reading -------------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        """The version of the latest write (0 before any)."""
        return self._version

    @property
    def max_gpus(self) -> int:
        return self._max_gpus

    def __len__(self) -> int:
        return len(self._gpus)

    def __contains__(self, name: object) -> bool:
        return name in self._gpus

    def get(self, name: str) -> gpu_pb2.Gpu:
        """A copy of the named GPU; NotFoundError if there is none."""
        return _copy(self._stored(name))

    def list_gpus(self) -> tuple[int, list[gpu_pb2.Gpu]]:
        """The cache version and copies of every GPU, sorted by name."""
        version, gpus = self.snapshot()
        return version, [_copy(g) for g in gpus]

    def snapshot(self) -> tuple[int, list[gpu_pb2.Gpu]]:
        """The cache version and the stored GPUs themselves, sorted by name: cheap, but read-only."""
        return self._version, [self._gpus[name] for name in sorted(self._gpus)]

    def list_response(self) -> gpu_pb2.ListGpusResponse:
        """The ListGpus response for the current version, shared between callers: do not mutate."""
        if self._list_response is None:
            version, gpus = self.snapshot()
            response = gpu_pb2.ListGpusResponse()
            response.gpu_list.metadata.resource_version = str(version)
            response.gpu_list.items.extend(gpus)
            self._list_response = response
        return self._list_response

    # -- writing -------------------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call `listener` with every write from now on, synchronously and in version order."""
        self._listeners.append(listener)

    def create(self, gpu: gpu_pb2.Gpu) -> tuple[gpu_pb2.Gpu, bool]:
        """Register a GPU; returns a copy of the stored GPU and whether it was created.

        Creating a GPU that exists with the same spec (the same physical GPU, e.g. a provider
        registering again after a restart) is idempotent, as upstream's CreateGpu is: the existing
        GPU comes back unchanged with created=False and nothing is written. A name that is taken by
        a GPU with a different spec, or a UUID another GPU has, is ALREADY_EXISTS. metadata.name
        and spec.uuid are required; any resource version the caller set is ignored (the cache
        assigns it).
        """
        gpu = _storable(gpu)
        check_gpu(gpu, self.limits)
        name = gpu.metadata.name
        existing = self._gpus.get(name)
        if existing is not None:
            if existing.spec == gpu.spec:
                return _copy(existing), False
            raise AlreadyExistsError(f'gpu "{name}" already exists with uuid {existing.spec.uuid}, not {gpu.spec.uuid}')
        holder = self._names_by_uuid.get(gpu.spec.uuid.casefold())
        if holder is not None:
            raise AlreadyExistsError(f'gpu "{name}": uuid {gpu.spec.uuid} is already registered as gpu "{holder}"')
        if len(self._gpus) >= self._max_gpus:
            raise CacheFullError(f'cannot create gpu "{name}": the cache is full ({self._max_gpus} GPUs)')
        self._commit(ADDED, gpu)
        return _copy(gpu), True

    def update(self, gpu: gpu_pb2.Gpu) -> gpu_pb2.Gpu:
        """Replace a GPU's spec and status (and namespace); returns a copy of the stored GPU.

        The expected version comes from `gpu.resource_version` or `gpu.metadata.resource_version`;
        0 (or none) means "whatever is current", anything else must equal the GPU's current version
        (ABORTED otherwise). An update that changes nothing writes nothing and returns the GPU as it
        is, so providers that re-send the same state do not wake every watcher. The UUID cannot
        change (INVALID_ARGUMENT).
        """
        name = gpu.metadata.name
        check_name(name, "gpu.metadata.name")
        current = self._stored(name)
        expected = self._expected_version(gpu)
        self._check_version(current, expected)
        updated = _storable(gpu)
        check_gpu(updated, self.limits)
        if updated.spec.uuid != current.spec.uuid:
            raise InvalidArgumentError(
                f'gpu "{name}": spec.uuid is immutable: it is {current.spec.uuid}, '
                f"not {truncate(updated.spec.uuid, SHOWN_BYTES)!r}"
            )
        if (
            updated.spec == current.spec
            and updated.status == current.status
            and updated.metadata.namespace == current.metadata.namespace
        ):
            return _copy(current)
        self._commit(MODIFIED, updated)
        return _copy(updated)

    def update_status(self, name: str, status: gpu_pb2.GpuStatus, resource_version: int = 0) -> gpu_pb2.Gpu:
        """Replace a GPU's whole status; returns a copy of the stored GPU.

        `resource_version` 0 means "whatever is current"; anything else must equal the GPU's
        current version (ABORTED otherwise). A status equal to the current one writes nothing.
        """
        current = self._stored(name)
        if resource_version < 0:
            raise InvalidArgumentError(f"resource_version {resource_version} is negative")
        self._check_version(current, resource_version)
        updated = _storable(current, status)
        check_gpu(updated, self.limits)
        if updated.status == current.status:
            return _copy(current)
        self._commit(MODIFIED, updated)
        return _copy(updated)

    def delete(self, name: str) -> gpu_pb2.Gpu:
        """Remove a GPU; returns its last state, stamped with the version of the deletion."""
        current = self._stored(name)
        del self._gpus[name]
        del self._names_by_uuid[current.spec.uuid.casefold()]
        gone = _copy(current)
        self._commit(DELETED, gone)
        return _copy(gone)

    # -- internals -----------------------------------------------------------------------------

    def _stored(self, name: str) -> gpu_pb2.Gpu:
        gpu = self._gpus.get(name)
        if gpu is None:
            check_name(name)  # a stored GPU's name passed `check_gpu`; only a miss can be malformed
            raise NotFoundError(f'gpu "{name}" not found')
        return gpu

    @staticmethod
    def _expected_version(gpu: gpu_pb2.Gpu) -> int:
        from_meta = parse_resource_version(gpu.metadata.resource_version, "metadata.resource_version")
        from_field = gpu.resource_version
        if from_field < 0:
            raise InvalidArgumentError(f"resource_version {from_field} is negative")
        if from_meta and from_field and from_meta != from_field:
            raise InvalidArgumentError(
                f'gpu "{gpu.metadata.name}": resource_version {from_field} and '
                f"metadata.resource_version {from_meta} disagree"
            )
        return from_field or from_meta

    @staticmethod
    def _check_version(current: gpu_pb2.Gpu, expected: int) -> None:
        if expected and expected != current.resource_version:
            relation = "stale" if expected < current.resource_version else "from the future"
            raise ConflictError(
                f'gpu "{current.metadata.name}": resource_version {expected} is {relation}: '
                f"current is {current.resource_version}"
            )

    def _commit(self, kind: str, gpu: gpu_pb2.Gpu) -> None:
        """Stamp the next version on `gpu`, store it (unless deleted) and tell the listeners."""
        self._version += 1
        gpu.resource_version = self._version
        gpu.metadata.resource_version = str(self._version)
        if kind != DELETED:
            self._gpus[gpu.metadata.name] = gpu
            self._names_by_uuid[gpu.spec.uuid.casefold()] = gpu.metadata.name
        self._list_response = None
        event = CacheEvent(kind, gpu, self._version)
        for listener in self._listeners:
            listener(event)
