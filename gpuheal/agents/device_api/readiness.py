"""The readiness gate: consumers are not served until providers have registered the node's GPUs.

A device plugin that listed the GPUs a moment after the agent started would see an empty or partial
node and could advertise the wrong capacity, so reads (Get, List, Watch) answer UNAVAILABLE until
the gate opens. Writes are always allowed: they are how the gate gets opened.

The gate opens, once and for good, on whichever comes first:

- the cache holds `expected_gpus` GPUs: the server was told how many GPUs the node has (from NVML
  enumeration, say) and providers have registered that many (0 opens it at once: a node without
  GPUs has nothing to wait for);
- a provider calls `mark_ready()`: it has registered everything it is going to, however many that
  is (the way to go when the count is not known up front).

It never closes again: a GPU that is later deleted (fallen off the bus) is news for consumers, not
a reason to stop serving them.
"""

from __future__ import annotations

from collections.abc import Callable

from gpuheal.agents.device_api.errors import NotReadyError


class ReadinessGate:
    """Opens when `expected_gpus` GPUs are registered or on `mark_ready()`; see the module doc."""

    def __init__(self, expected_gpus: int | None = None) -> None:
        if expected_gpus is not None and expected_gpus < 0:
            raise ValueError(f"expected_gpus must not be negative, not {expected_gpus}")
        self._expected = expected_gpus
        self._registered = 0
        self._opened = False
        self._listeners: list[Callable[[], None]] = []
        self.reason = ""
        if expected_gpus == 0:
            self._open("the node has no GPUs")

    @property
    def ready(self) -> bool:
        return self._opened

    @property
    def expected_gpus(self) -> int | None:
        return self._expected

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener` when the gate opens (at once if it is open already)."""
        if self.ready:
            listener()
        else:
            self._listeners.append(listener)

    def mark_ready(self, reason: str = "a provider marked registration complete") -> None:
        """Open the gate: providers have registered the node's GPUs."""
        self._open(reason)

    def observe(self, registered: int) -> None:
        """Tell the gate how many GPUs the cache holds now; opens it when that is enough."""
        self._registered = registered
        if self._expected is not None and registered >= self._expected:
            self._open(f"{registered} of {self._expected} GPUs registered")

    def check(self) -> None:
        """Raise NotReadyError (UNAVAILABLE) while the gate is closed."""
        if not self.ready:
            if self._expected is None:
                progress = f"{self._registered} registered, waiting for a provider to mark registration complete"
            else:
                progress = f"{self._registered} of {self._expected} registered"
            raise NotReadyError(f"providers have not registered this node's GPUs yet ({progress})")

    def _open(self, reason: str) -> None:
        if self.ready:
            return
        self.reason = reason
        self._opened = True
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener()
