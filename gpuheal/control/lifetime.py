"""The Temporal runtime of a gpuheal process, gone before the interpreter exits.

The SDK's Rust core runs on its own threads, and its client has no `close`: the threads go when the
last reference to the runtime does. The SDK's default runtime lives in a module global, so it goes
while the interpreter is finalizing, and a Rust thread that touches Python then aborts the process
("Fatal Python error: PyGILState_Release", about one `gpuheal list` in 14; temporalio/sdk-python#300).

So a command runs its coroutine under a `ProcessRuntime`: every client `gpuheal.control.connection`
makes meanwhile uses that runtime, and once the event loop has closed, the runtime is released
(clients and the frames of a failure that still hold them included) and collected, joining its
threads while the interpreter is whole.

The runtime's core (Rust) logs go to the Python logger `temporalio.core`, not straight to the console:
they then take the process's format (`--log-format json` included) and handlers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import traceback
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from temporalio.runtime import LogForwardingConfig, LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter

T = TypeVar("T")

_current: Runtime | None = None
# The SDK's default levels (core warnings, other errors), forwarded to Python logging.
_CORE_LOGGING = LoggingConfig(
    filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
    # The core's target (its Rust module) ends the logger's name: the message need not repeat it.
    forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core"), prepend_target_on_message=False),
)


def current_runtime() -> Runtime | None:
    """The runtime of the `ProcessRuntime.run` in progress; None outside one (the SDK's default applies)."""
    return _current


class ProcessRuntime:
    """A runtime this process owns; creating it raises `ValueError` when its telemetry cannot start
    (a Prometheus address that does not parse or is in use). Whatever `telemetry` says of logging, the
    core's logs are forwarded to Python logging."""

    def __init__(self, telemetry: TelemetryConfig | None = None) -> None:
        forwarded = dataclasses.replace(telemetry or TelemetryConfig(), logging=_CORE_LOGGING)
        self._runtime: Runtime | None = Runtime(telemetry=forwarded)
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
