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

# dcgmi's statuses of a result (DCGM writes "Pass", "Fail", "Warn", "Skip"; older versions upper-case
# them). Anything else ("Not Run", "Error", none) proves nothing.
_PASSED = {"pass"}
_FAILED = {"fail"}
_WARNED = {"warn", "warning"}
_SKIPPED = {"skip", "skipped"}
# The most failures named one by one in a report.
_NAMED = 8


@dataclass(frozen=True, slots=True)
class CheckResult:
    """How a check went: `ok`, a line for people, and what ran; `conclusive` when a failure was found
    in the GPUs, not in the check (see GpuCheckReport.conclusive)."""

    ok: bool
    detail: str
    tool: str
    conclusive: bool = False


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
            read = read_diagnostic(finished.stdout)
        except ValueError as error:
            said = finished.said()
            return CheckResult(False, f"{tool} (exit {finished.returncode}) gave no diagnostic: {error}; {said}", tool)
        if read.failed:
            failed = f"{len(read.failed)} of {read.results} results failed: {_named(read.failed)}"
            return CheckResult(False, failed, tool, conclusive=True)
        if finished.returncode != 0:
            return CheckResult(False, f"{tool} failed (exit {finished.returncode}): {finished.said()}", tool)
        if read.unproven or not read.passed:
            unproven = f": {_named(read.unproven)}" if read.unproven else " (every test skipped)"
            return CheckResult(
                False, f"{read.passed} of {read.results} results passed, the rest proved nothing{unproven}", tool
            )
        warned = f"; warnings: {_named(read.warned)}" if read.warned else ""
        skipped = f", {read.skipped} skipped" if read.skipped else ""
        return CheckResult(True, f"{read.passed} of {read.results} results passed{skipped}{warned}", tool)


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """What a `dcgmi diag -j` document says: how many results, how many passed or were skipped, and
    those that failed, warned or proved nothing, each as "<test> (GPU <ids>): <what it said>"."""

    results: int
    passed: int
    skipped: int
    failed: list[str]
    warned: list[str]
    unproven: list[str]


def read_diagnostic(output: bytes) -> Diagnostic:
    """Read `dcgmi diag -j` output. Raises ValueError for anything that is not such a document."""
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
    results = passed = skipped = 0
    failed: list[str] = []
    warned: list[str] = []
    unproven: list[str] = []
    for name, result in _results(categories):
        results += 1
        status = str(result.get("status", "")).lower()
        # DCGM 3 names the GPUs of a result in gpu_ids; DCGM 4 names an entity.
        gpu = result.get("gpu_ids", result.get("entity_id"))
        where = f" (GPU {gpu})" if gpu not in (None, "") else ""
        said = _said(result)
        if status in _PASSED:
            passed += 1
        elif status in _SKIPPED:
            skipped += 1
        elif status in _FAILED:
            failed.append(f"{name}{where}: {said or 'failed'}")
        elif status in _WARNED:
            passed += 1
            warned.append(f"{name}{where}: {said or 'warned'}")
        else:
            unproven.append(f"{name}{where}: status {result.get('status', 'missing')!r}")
    if not results:
        raise ValueError("the diagnostic holds no results")
    return Diagnostic(results, passed, skipped, failed, warned, unproven)


def _named(lines: list[str]) -> str:
    return "; ".join(lines[:_NAMED]) + (f"; … {len(lines) - _NAMED} more" if len(lines) > _NAMED else "")


def _results(categories: list[Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for category in categories:
        tests = category.get("tests") if isinstance(category, dict) else None
        for test in tests if isinstance(tests, list) else []:
            results = test.get("results") if isinstance(test, dict) else None
            for result in results if isinstance(results, list) else []:
                if isinstance(result, dict):
                    yield str(test.get("name", "?")), result


def _said(result: dict[str, Any]) -> str:
    """A result's warnings (DCGM 3 and 4 write a list of {"warning": …}) and info, on one line."""
    parts: list[str] = []
    warnings = result.get("warnings")
    for warning in warnings if isinstance(warnings, list) else []:
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
        return await asyncio.to_thread(self._check, level)

    def _check(self, level: int) -> CheckResult:
        tool = "nvml"
        try:
            count = self._nvml.device_count()
        except NvmlError as error:
            return CheckResult(False, f"NVML cannot count the GPUs: {error}", tool)
        if count == 0:
            return CheckResult(False, "NVML sees no GPUs on this node", tool, conclusive=True)
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
            return CheckResult(False, "; ".join(problems), tool, conclusive=True)
        # NVML has one level: say so where the policy asked DCGM for more.
        deeper = f"; level {level} asks for DCGM's diagnostic, which is not installed" if level > 1 else ""
        return CheckResult(
            True, f"NVML reports all {count} GPUs healthy (no lost GPU, ECC error or pending repair){deeper}", tool
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
