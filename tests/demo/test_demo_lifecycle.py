"""`gpuheal demo` as a person runs and stops it: one demo per state directory, and SIGTERM or a
terminal's Ctrl-C stops everything it started, quietly, the Temporal dev server included."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

GPUHEAL = str(Path(sys.executable).parent / "gpuheal")
DEMO = ["demo", "--nodes", "2", "--gpus-per-node", "2", "--reboot-seconds", "0.5", "--port", "0"]


@contextmanager
def running_demo(state: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """A demo in a session of its own (as a terminal's foreground job is); killed if a test leaves it running."""
    process = subprocess.Popen(
        [GPUHEAL, *DEMO, "--state-dir", str(state), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def read_until(process: subprocess.Popen[str], marker: str) -> str:
    """Its output up to and including the first line containing `marker`."""
    assert process.stdout is not None and process.stderr is not None
    seen = ""
    for line in process.stdout:
        seen += line
        if marker in line:
            return seen
    raise AssertionError(f"the demo ended before printing {marker!r}: {seen[-3000:]}{process.stderr.read()}")


def temporal_children(pid: int) -> list[int]:
    """The `temporal` processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid and command.endswith(b"/temporal"):
            found.append(int(entry.name))
    return found


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"  # exited; only its reaping (by init, once its parent is gone) is left


@pytest.mark.timeout(300)
def test_a_second_demo_on_the_same_state_directory_is_refused_and_sigterm_stops_the_first(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with running_demo(state, "--keep") as first:
        read_until(first, "--keep: everything keeps running")
        kubeconfig = state / "credentials" / "worker.kubeconfig"
        written = kubeconfig.stat().st_mtime_ns
        [temporal] = temporal_children(first.pid)
        # Temporal writes its own log to a file in the state directory, never to the terminal.
        log = state / "temporal" / "temporal.log"
        assert {os.readlink(f"/proc/{temporal}/fd/{fd}") for fd in (1, 2)} == {str(log)}

        second = subprocess.run(
            [GPUHEAL, *DEMO, "--state-dir", str(state)], capture_output=True, text=True, timeout=120, check=False
        )

        assert second.returncode == 2, second.stderr
        assert "Traceback" not in second.stderr
        [error] = [line for line in second.stderr.splitlines() if line.startswith("Error: ")]
        assert f"a demo (pid {first.pid}) is already running with state directory {state}" in error
        assert kubeconfig.stat().st_mtime_ns == written, "the running demo's kubeconfig was left alone"

        first.send_signal(signal.SIGTERM)
        out, err = first.communicate(timeout=120)

    assert first.returncode == 0, err  # the remediation had ended Resolved before the stop
    assert err == ""
    assert "stopped: everything the demo started is down" in out
    assert gone(temporal)
    # The lock went with the demo.
    with (state / "demo.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)


@pytest.mark.timeout(300)
def test_ctrl_c_mid_remediation_stops_everything_quietly(tmp_path: Path) -> None:
    with running_demo(tmp_path / "state") as demo:
        read_until(demo, "into gpu-node-001's kernel log")
        [temporal] = temporal_children(demo.pid)

        os.killpg(demo.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
        out, err = demo.communicate(timeout=120)

    assert demo.returncode == 1
    assert err == "", err
    assert "stopped: everything the demo started is down" in out and "the remediation had not ended" in out
    assert gone(temporal)
