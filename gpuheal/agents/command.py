"""Running a node tool (nvidia-smi, dcgmi) as a plain argv, never through a shell, bounded in time."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

# How much of a command's output goes into a report.
TAIL_CHARS = 400


class CommandError(Exception):
    """The command could not be run, or did not finish in time; the message names it."""


@dataclass(frozen=True, slots=True)
class Finished:
    """A command that ran to its end."""

    returncode: int
    stdout: bytes
    stderr: bytes

    def said(self) -> str:
        """The end of what it wrote, for people: its errors, else its output."""
        return tail(self.stderr) or tail(self.stdout) or "no output"


async def run_bounded(argv: Sequence[str], timeout: timedelta) -> Finished:
    """Run `argv` with no input and wait for it at most `timeout`; one that overstays is killed.

    Raises CommandError when the program cannot be started (not installed, not executable) or is
    killed, with every process it started; a command the agent is stopping for is killed too, never
    left running unseen.
    """
    shown = " ".join(argv)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            # Its own process group, so a kill reaches what it started too (dcgmi runs nvvs): a
            # child left holding its output would keep the agent waiting.
            start_new_session=True,
        )
    except OSError as error:  # not installed, not executable, not on PATH
        raise CommandError(f"cannot run {argv[0]}: {error.strerror or error}") from error
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout.total_seconds())
    except BaseException as error:  # timed out, or the agent is stopping
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await asyncio.shield(process.wait())
        if isinstance(error, TimeoutError):
            raise CommandError(f"{shown} did not finish within {timeout.total_seconds():g}s; killed") from error
        raise
    return Finished(process.returncode if process.returncode is not None else -1, stdout, stderr)


def tail(output: bytes, limit: int = TAIL_CHARS) -> str:
    """The last `limit` characters of a command's output, on one line."""
    text = " ".join(output.decode("utf-8", errors="replace").split())
    return text if len(text) <= limit else "…" + text[-limit:]
