"""`NvidiaSmiResetter` against a test-owned `nvidia-smi` script on PATH: the exact argv, and every failure."""

from __future__ import annotations

import contextlib
import os
import shlex
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from gpuheal.agents.reset import NvidiaSmiResetter, ResetCommandError, ResetSettings, make_resetter
from gpuheal.domain.gpu_reset import GPU_RESET
from tests.agents.reset.conftest import FAST, Cluster, Node


class FakeNvidiaSmi:
    """An executable `nvidia-smi` in its own directory that records each argv and answers as scripted."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "nvidia-smi"
        self.calls_file = directory / "calls.log"
        self.script()

    def script(self, *, exit_code: int = 0, stdout: str = "", stderr: str = "", sleep: float = 0) -> None:
        record = shlex.quote(str(self.calls_file))
        self.path.write_text(
            "#!/bin/sh\n"
            f"printf '%s\\n' \"$*\" >> {record}\n"
            + (f"exec sleep {sleep}\n" if sleep else "")  # exec: killing it leaves no orphan
            + f"printf '%s' {shlex.quote(stdout)}\n"
            + f"printf '%s' {shlex.quote(stderr)} >&2\n"
            + f"exit {exit_code}\n"
        )
        self.path.chmod(0o755)

    def calls(self) -> list[list[str]]:
        if not self.calls_file.exists():
            return []
        return [line.split(" ") for line in self.calls_file.read_text().splitlines()]


@pytest.fixture
def nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeNvidiaSmi:
    directory = tmp_path / "bin"
    directory.mkdir()
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ.get('PATH', '')}")
    return FakeNvidiaSmi(directory)


async def test_each_gpu_is_reset_with_its_own_argv(nvidia_smi: FakeNvidiaSmi, node: Node) -> None:
    resetter = make_resetter("nvidia-smi", ResetSettings(), kernel_log=None, nvml=node.nvml)
    assert isinstance(resetter, NvidiaSmiResetter) and resetter.binary == "nvidia-smi"  # found on PATH
    await resetter.reset([node.gpus[1], node.gpus[3]])
    assert nvidia_smi.calls() == [
        ["--gpu-reset", "-i", node.gpus[1].uuid],
        ["--gpu-reset", "-i", node.gpus[3].uuid],
    ]


async def test_a_non_zero_exit_fails_with_the_tail_of_stderr(nvidia_smi: FakeNvidiaSmi, node: Node) -> None:
    nvidia_smi.script(
        exit_code=3, stdout="ignored when stderr says something", stderr="x" * 1000 + " Insufficient Permissions\n"
    )
    with pytest.raises(ResetCommandError) as failed:
        await NvidiaSmiResetter().reset([node.gpus[0], node.gpus[1]])
    message = str(failed.value)
    assert message.startswith(f"nvidia-smi --gpu-reset -i {node.gpus[0].uuid} failed (exit 3): …")
    assert message.endswith("Insufficient Permissions") and len(message) < 600
    assert len(nvidia_smi.calls()) == 1, "it stops at the first GPU that fails"


async def test_a_refusal_written_to_stdout_is_reported(nvidia_smi: FakeNvidiaSmi, node: Node) -> None:
    refusal = "The following GPUs could not be reset:\n  GPU 00000000:03:00.0: In use by another client\n"
    nvidia_smi.script(exit_code=255, stdout=refusal)
    with pytest.raises(ResetCommandError, match=r"exit 255.*In use by another client"):
        await NvidiaSmiResetter().reset([node.gpus[0]])


async def test_a_later_failure_names_the_gpus_already_reset(nvidia_smi: FakeNvidiaSmi, node: Node) -> None:
    # Fails for the second GPU only.
    nvidia_smi.path.write_text(
        f'#!/bin/sh\ncase "$3" in {node.gpus[1].uuid}) echo "GPU is lost" >&2; exit 15;; esac\nexit 0\n'
    )
    with pytest.raises(ResetCommandError) as failed:
        await NvidiaSmiResetter().reset([node.gpus[0], node.gpus[1]])
    assert f"-i {node.gpus[1].uuid} failed (exit 15): GPU is lost" in str(failed.value)
    assert f"(already reset: {node.gpus[0].uuid})" in str(failed.value)


async def test_a_missing_binary_fails_without_raising_anything_else(tmp_path: Path, node: Node) -> None:
    with pytest.raises(ResetCommandError, match=r"cannot run .*nvidia-smi"):
        await NvidiaSmiResetter(str(tmp_path / "nowhere" / "nvidia-smi")).reset([node.gpus[0]])


async def test_a_hanging_reset_is_killed(nvidia_smi: FakeNvidiaSmi, node: Node) -> None:
    nvidia_smi.script(sleep=30)
    with pytest.raises(ResetCommandError, match=r"did not finish within 0\.3s; killed"):
        await NvidiaSmiResetter(timeout=timedelta(seconds=0.3)).reset([node.gpus[0]])


async def test_the_watcher_releases_nvml_around_nvidia_smi(
    nvidia_smi: FakeNvidiaSmi, node: Node, cluster: Cluster
) -> None:
    """The agent's own NVML would make nvidia-smi refuse: it is let go for the reset and taken up after."""
    seen: list[tuple[str, int]] = []

    @contextlib.asynccontextmanager
    async def release_nvml() -> AsyncIterator[None]:
        seen.append(("released", len(nvidia_smi.calls())))
        yield
        seen.append(("taken up", len(nvidia_smi.calls())))

    settings = replace(FAST, nvml_grace=timedelta(seconds=0.1))  # nvidia-smi writes no kernel log line: NVML vouches
    resetter = make_resetter("nvidia-smi", settings)
    async with node.watcher(resetter, settings=settings, release_nvml=release_nvml):
        order = await cluster.order([node.gpus[2].uuid])
        status, _, report = await cluster.report(order.id)
    assert (status, report.confirmed_by) == ("True", "nvml"), report.detail
    assert seen == [("released", 0), ("taken up", 1)]
    assert nvidia_smi.calls() == [["--gpu-reset", "-i", node.gpus[2].uuid]]


async def test_a_failed_nvidia_smi_is_a_failed_report(nvidia_smi: FakeNvidiaSmi, node: Node, cluster: Cluster) -> None:
    nvidia_smi.script(exit_code=255, stderr="Unable to reset GPU: Not Supported")
    async with node.watcher(make_resetter("nvidia-smi", FAST)):
        order = await cluster.order([node.gpus[0].uuid])
        status, reason, report = await cluster.report(order.id)
    assert (status, reason, report.ok) == ("False", GPU_RESET.reason_failed, False)
    assert report.detail == (
        f"nvidia-smi --gpu-reset -i {node.gpus[0].uuid} failed (exit 255): Unable to reset GPU: Not Supported"
    )
