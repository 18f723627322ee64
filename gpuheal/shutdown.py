"""The signal that ends a long-running gpuheal process: SIGTERM from Kubernetes, or Ctrl-C."""

from __future__ import annotations

import asyncio
import signal


def shutdown_requested() -> asyncio.Event:
    """An event set on SIGTERM or SIGINT; install it before starting, so an early signal is not lost."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop
