"""GPU checkers: what proves a node's GPUs healthy on a check order (gpuheal.domain.gpu_check).

- `DcgmiChecker`: DCGM's own diagnostic, `dcgmi diag -r <level> -j` (a plain argv, no shell,
  bounded in time). Its JSON (`DCGM Diagnostic` or, before DCGM 3, `DCGM GPU Diagnostic`: test
  categories, their tests, each test's results) is read for any result that failed; output that is
  not such a document, or a failing exit status, is a failed check: what is not proven passes nothing.
- `NvmlChecker`: where DCGM is absent, what NVML reports of every GPU the node has: a GPU lost, or a
  double-bit ECC error, retired pages or row remapping pending, a row remapping failure
  (gpuheal.agents.nvml.verdict) fails the check. It has one level.

`choose` picks one by the agent's `--gpu-check` mode: "auto" (dcgmi where it is installed, else
NVML), "dcgmi", "nvml" or "off" (orders are answered with a failure).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, Protocol

from gpuheal.agents.command import CommandError, run_bounded, tail
from gpuheal.agents.nvml.interface import GpuLostError, Nvml, NvmlError
from gpuheal.agents.nvml.verdict import polled_problems

GpuCheckMode = Literal["auto", "dcgmi", "nvml", "off"]
GPU_CHECK_MODES: tuple[GpuCheckMode, ...] = ("auto", "dcgmi", "nvml", "off")

# dcgmi's statuses of a result that failed (DCGM writes "Fail"; older versions upper-case it).
_FAILED = {"fail"}
_WARNED = {"warn", "warning"}
# The most failures named one by one in a report.
_NAMED = 8


@dataclass(frozen=True, slots=True)
class CheckResult:
    """How a check went: `ok`, a line for people, and what ran."""

    ok: bool
    detail: str
    tool: str


class GpuChecker(Protocol):
    """Checks every GPU of the node at a DCGM diagnostic level."""

    name: str

    async def check(self, level: int) -> CheckResult: ...


class DcgmiChecker:
    """`dcgmi diag -r <level> -j`; see the module docstring."""

    name = "dcgmi"

    def __init__(self, binary: str = "dcgmi", *, timeout: timedelta = timedelta(hours=2)) -> None:
        self.binary = binary
        self.timeout = timeout

    def argv(self, level: int) -> list[str]:
        return [self.binary, "diag", "-r", str(level), "-j"]

    async def check(self, level: int) -> CheckResult:
        tool = f"dcgmi diag -r {level}"
        try:
            finished = await run_bounded(self.argv(level), self.timeout)
        except CommandError as error:
            return CheckResult(False, str(error), tool)
        try:
            tests, failures, warnings = read_diagnostic(finished.stdout)
        except ValueError as error:
            said = finished.said()
            return CheckResult(False, f"{tool} (exit {finished.returncode}) gave no diagnostic: {error}; {said}", tool)
        if failures:
            named = "; ".join(failures[:_NAMED]) + (
                f"; … {len(failures) - _NAMED} more" if len(failures) > _NAMED else ""
            )
            return CheckResult(False, f"{len(failures)} of {tests} results failed: {named}", tool)
        if finished.returncode != 0:
            return CheckResult(False, f"{tool} failed (exit {finished.returncode}): {finished.said()}", tool)
        warned = f"; warnings: {'; '.join(warnings[:_NAMED])}" if warnings else ""
        return CheckResult(True, f"all {tests} results passed{warned}", tool)


def read_diagnostic(output: bytes) -> tuple[int, list[str], list[str]]:
    """From `dcgmi diag -j` output: how many results it holds, those that failed and those that
    warned, each as "<test> (GPU <ids>): <what it said>". Raises ValueError for anything else."""
    try:
        document = json.loads(output)
    except ValueError as error:
        raise ValueError(f"not JSON ({error})") from None
    diagnostic = None
    if isinstance(document, dict):
        diagnostic = document.get("DCGM Diagnostic", document.get("DCGM GPU Diagnostic"))
    categories = diagnostic.get("test_categories") if isinstance(diagnostic, dict) else None
    if not isinstance(categories, list):
        raise ValueError("no test_categories in a DCGM Diagnostic object")
    tests, failures, warnings = 0, [], []
    for name, result in _results(categories):
        tests += 1
        status = str(result.get("status", "")).lower()
        where = f" (GPU {result['gpu_ids']})" if result.get("gpu_ids") not in (None, "") else ""
        said = _said(result)
        if status in _FAILED:
            failures.append(f"{name}{where}: {said or 'failed'}")
        elif status in _WARNED:
            warnings.append(f"{name}{where}: {said or 'warned'}")
    if not tests:
        raise ValueError("the diagnostic holds no results")
    return tests, failures, warnings


def _results(categories: list[Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for category in categories:
        for test in (category.get("tests") if isinstance(category, dict) else None) or []:
            if not isinstance(test, dict):
                continue
            for result in test.get("results") or []:
                if isinstance(result, dict):
                    yield str(test.get("name", "?")), result


def _said(result: dict[str, Any]) -> str:
    """A result's warnings (DCGM 3 and 4 write a list of {"warning": …}) and info, on one line."""
    parts: list[str] = []
    for warning in result.get("warnings") or []:
        text = warning.get("warning") if isinstance(warning, dict) else warning
        if text:
            parts.append(str(text))
    info = result.get("info")
    if isinstance(info, list):
        parts.extend(str(item) for item in info if item)
    elif info:
        parts.append(str(info))
    return tail(" | ".join(parts).encode())


class NvmlChecker:
    """What NVML reports of every GPU the node has; see the module docstring."""

    name = "nvml"

    def __init__(self, nvml: Nvml) -> None:
        self._nvml = nvml

    async def check(self, level: int) -> CheckResult:
        return await asyncio.to_thread(self._check)

    def _check(self) -> CheckResult:
        tool = "nvml"
        try:
            count = self._nvml.device_count()
        except NvmlError as error:
            return CheckResult(False, f"NVML cannot count the GPUs: {error}", tool)
        if count == 0:
            return CheckResult(False, "NVML sees no GPUs on this node", tool)
        problems: list[str] = []
        for index in range(count):
            try:
                signals = self._nvml.health_signals(index)
            except GpuLostError as error:
                problems.append(f"GPU {index}: lost ({error})")
                continue
            except NvmlError as error:
                problems.append(f"GPU {index}: NVML cannot read it ({error})")
                continue
            problems.extend(f"GPU {index}: {problem.message}" for problem in polled_problems({}, signals).values())
        if problems:
            return CheckResult(False, "; ".join(problems), tool)
        return CheckResult(
            True, f"NVML reports all {count} GPUs healthy (no lost GPU, ECC error or pending repair)", tool
        )


def choose(
    mode: GpuCheckMode, *, nvml: Nvml | None, dcgmi: str = "dcgmi", timeout: timedelta = timedelta(hours=2)
) -> GpuChecker | None:
    """The checker for `mode` on this node: None for "off", or where NVML is wanted and the agent has none."""
    if mode == "off":
        return None
    if mode == "dcgmi" or (mode == "auto" and shutil.which(dcgmi) is not None):
        return DcgmiChecker(dcgmi, timeout=timeout)
    return NvmlChecker(nvml) if nvml is not None else None
