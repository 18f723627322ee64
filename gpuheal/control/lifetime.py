"""The Temporal runtime of a gpuheal process, gone before the interpreter exits.

The SDK's Rust core runs on its own threads, and its client has no `close`: the threads go when the
last reference to the runtime does. The SDK's default runtime lives in a module global, so it goes
while the interpreter is finalizing, and a Rust thread that touches Python then aborts the process
("Fatal Python error: PyGILState_Release", about one `gpuheal list` in 14; temporalio/sdk-python#300).

So a command runs its coroutine under a `ProcessRuntime`: every client `gpuheal.control.connection`
makes meanwhile uses that runtime, and once the event loop has closed, the runtime is released
(clients and the frames of a failure that still hold them included) and collected, joining its
threads while the interpreter is whole.
"""

from __future__ import annotations

import asyncio
import gc
import traceback
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from temporalio.runtime import Runtime, TelemetryConfig

T = TypeVar("T")

_current: Runtime | None = None


def current_runtime() -> Runtime | None:
    """The runtime of the `ProcessRuntime.run` in progress; None outside one (the SDK's default applies)."""
    return _current


class ProcessRuntime:
    """A runtime this process owns; creating it raises `ValueError` when its telemetry cannot start
    (a Prometheus address that does not parse or is in use)."""

    def __init__(self, telemetry: TelemetryConfig | None = None) -> None:
        self._runtime: Runtime | None = Runtime(telemetry=telemetry or TelemetryConfig())
        self._released: weakref.ref[Runtime] | None = None

    def run(self, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run `main()` in a new event loop with this runtime current, then release the runtime."""
        global _current
        if self._runtime is None:
            raise RuntimeError("a ProcessRuntime runs once")
        _current = self._runtime
        try:
            return asyncio.run(main())
        except BaseException as error:
            _clear_frames(error)  # a traceback's frames hold the clients, and through them the runtime
            raise
        finally:
            _current = None
            self._released = weakref.ref(self._runtime)
            self._runtime = None
            gc.collect()

    @property
    def released(self) -> bool:
        """True once `run` has returned and nothing holds the runtime any more (its threads are gone)."""
        return self._released is not None and self._released() is None


def _clear_frames(error: BaseException) -> None:
    """Drop the local variables of every finished frame in the error's traceback and its causes."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)
        pending += [current.__cause__, current.__context__]
        if isinstance(current, BaseExceptionGroup):
            pending += current.exceptions
