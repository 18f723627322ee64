"""The signal that ends a long-running gpuheal process: SIGTERM from Kubernetes, or Ctrl-C; and waiting on it."""

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


async def stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds` for `stop`; True when it is set by then, so a pause ends at once on a stop."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True
