"""Running a node tool (nvidia-smi, dcgmi) as a plain argv, never through a shell, bounded in time."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

# How much of a command's output goes into a report.
TAIL_CHARS = 400
# How long a killed command is waited for before it is given up on.
_AFTER_KILL_S = 5.0


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

    Its output goes to unnamed temporary files, not pipes: a child it left behind holding them
    cannot keep the agent waiting once it has exited. Raises CommandError when the program cannot
    be started (not installed, not executable) or is killed, with every process of its group; a
    command the agent is stopping for is killed too, never left running unseen.
    """
    shown = " ".join(argv)
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                # Its own process group, so a kill reaches what it started too (dcgmi runs nvvs).
                start_new_session=True,
            )
        except OSError as error:  # not installed, not executable, not on PATH
            raise CommandError(f"cannot run {argv[0]}: {error.strerror or error}") from error
        try:
            await asyncio.wait_for(process.wait(), timeout.total_seconds())
        except BaseException as error:  # timed out, or the agent is stopping
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            # A process stuck in the kernel (a wedged GPU's driver call) outlives even SIGKILL: bounded.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(process.wait()), _AFTER_KILL_S)
            if isinstance(error, TimeoutError):
                raise CommandError(f"{shown} did not finish within {timeout.total_seconds():g}s; killed") from error
            raise
        # What it left running in its group goes with it: nothing the agent started outlives the answer.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        stdout.seek(0)
        stderr.seek(0)
        return Finished(process.returncode if process.returncode is not None else -1, stdout.read(), stderr.read())


def tail(output: bytes, limit: int = TAIL_CHARS) -> str:
    """The last `limit` characters of a command's output, on one line."""
    text = " ".join(output.decode("utf-8", errors="replace").split())
    return text if len(text) <= limit else "…" + text[-limit:]
