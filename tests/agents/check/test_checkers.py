"""The GPU checkers: DCGM's diagnostic read from `dcgmi diag -j` (a stand-in dcgmi, run as a real
process), and NVML's view of every GPU (the fake NVML)."""

from __future__ import annotations

import json
import stat
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gpuheal.agents.check import DcgmiChecker, NvmlChecker, choose, read_diagnostic
from gpuheal.agents.check.checkers import Diagnostic
from gpuheal_sim.fake_nvml import FakeNvml


def diagnostic(*tests: tuple[str, list[dict[str, Any]]], key: str = "DCGM Diagnostic") -> dict[str, Any]:
    """A `dcgmi diag -j` document: one category holding `tests`, each with its results."""
    return {
        key: {"test_categories": [{"category": "Hardware", "tests": [{"name": n, "results": r} for n, r in tests]}]}
    }


PASSED = diagnostic(
    ("Denylist", [{"status": "Pass"}]),
    ("GPU Memory", [{"gpu_ids": "0", "status": "Pass"}, {"gpu_ids": "1", "status": "Pass"}]),
)
FAILED = diagnostic(
    (
        "GPU Memory",
        [
            {"gpu_ids": "0", "status": "Pass"},
            {
                "gpu_ids": "1",
                "status": "Fail",
                "warnings": [
                    {"warning": "Memory bandwidth of GPU 1 is 412 GB/s, below the 1,600 GB/s expected", "error_id": 51}
                ],
            },
        ],
    ),
    ("PCIe", [{"gpu_ids": "1", "status": "Warn", "info": ["link width x8, expected x16"]}]),
    key="DCGM GPU Diagnostic",
)


def test_a_diagnostic_is_read_for_its_failed_and_warned_results_in_either_dcgm_spelling() -> None:
    assert read_diagnostic(json.dumps(PASSED).encode()) == Diagnostic(3, 3, 0, [], [], [])
    assert read_diagnostic(json.dumps(FAILED).encode()) == Diagnostic(
        results=3,
        passed=2,
        skipped=0,
        failed=["GPU Memory (GPU 1): Memory bandwidth of GPU 1 is 412 GB/s, below the 1,600 GB/s expected"],
        warned=["PCIe (GPU 1): link width x8, expected x16"],
        unproven=[],
    )


def test_dcgm_4_results_name_their_entity_and_unknown_statuses_prove_nothing() -> None:
    dcgm4 = diagnostic(
        ("software", [{"entity_group": "GPU", "entity_id": 0, "status": "Pass"}]),
        ("memory", [{"entity_group": "GPU", "entity_id": 1, "status": "Not Run"}, {"entity_id": 2}]),
        ("pcie", [{"entity_id": 3, "status": "Skip"}]),
    )

    read = read_diagnostic(json.dumps(dcgm4).encode())

    assert (read.results, read.passed, read.skipped, read.failed) == (4, 1, 1, [])
    assert read.unproven == ["memory (GPU 1): status 'Not Run'", "memory (GPU 2): status 'missing'"]


@pytest.mark.parametrize(
    ("output", "why"),
    [
        (b"Error: unable to connect to host engine", "not JSON"),
        (b'{"error": "DCGM Failure"}', "no test_categories in a DCGM Diagnostic object"),
        (json.dumps(diagnostic()).encode(), "the diagnostic holds no results"),
        (
            json.dumps(
                {"DCGM Diagnostic": {"test_categories": [{"tests": 7}, {"tests": [{"results": "x"}]}]}}
            ).encode(),
            "the diagnostic holds no results",
        ),
    ],
)
def test_output_that_is_not_a_diagnostic_is_refused(output: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        read_diagnostic(output)


def fake_dcgmi(tmp_path: Path, output: dict[str, Any] | str, exit_code: int = 0, sleep: float = 0) -> Path:
    """A dcgmi that records its arguments and prints `output`, as the real one answers `diag -j`.
    (A shell script: a shebang naming the venv's python may pass the kernel's length limit.)"""
    printed = tmp_path / "output"
    printed.write_text(output if isinstance(output, str) else json.dumps(output))
    script = tmp_path / "dcgmi"
    script.write_text(
        f'#!/bin/sh\necho "$@" > "{tmp_path / "argv"}"\nsleep {sleep}\ncat "{printed}"\nexit {exit_code}\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


async def test_dcgmi_passes_a_clean_diagnostic_at_the_level_ordered(tmp_path: Path) -> None:
    result = await DcgmiChecker(str(fake_dcgmi(tmp_path, PASSED))).check(3)

    assert (result.ok, result.tool, result.detail) == (True, "dcgmi diag -r 3", "3 of 3 results passed")
    assert (tmp_path / "argv").read_text() == "diag -r 3 -j\n"


async def test_dcgmi_fails_on_a_failed_result_and_names_it(tmp_path: Path) -> None:
    result = await DcgmiChecker(str(fake_dcgmi(tmp_path, FAILED, exit_code=226))).check(2)

    assert not result.ok and result.conclusive, "a failed result condemns the GPUs"
    assert result.detail.startswith("1 of 3 results failed: GPU Memory (GPU 1): Memory bandwidth of GPU 1 is 412")


@pytest.mark.parametrize(
    ("output", "exit_code", "said"),
    [
        ("Error: unable to establish a connection to the specified host: localhost", 255, "gave no diagnostic"),
        (json.dumps(PASSED), 1, "dcgmi diag -r 1 failed (exit 1)"),
    ],
    ids=["no host engine", "a failing exit with clean results"],
)
async def test_dcgmi_that_proves_nothing_fails_the_check(
    tmp_path: Path, output: str, exit_code: int, said: str
) -> None:
    result = await DcgmiChecker(str(fake_dcgmi(tmp_path, output, exit_code))).check(1)

    assert not result.ok and said in result.detail
    assert not result.conclusive, "the check failed, not (provably) the GPUs"


async def test_a_diagnostic_whose_every_test_was_skipped_passes_nothing(tmp_path: Path) -> None:
    skipped = diagnostic(("Targeted Stress", [{"gpu_ids": "0", "status": "Skip"}]))

    result = await DcgmiChecker(str(fake_dcgmi(tmp_path, skipped))).check(3)

    assert (result.ok, result.conclusive) == (False, False)
    assert result.detail == "0 of 1 results passed, the rest proved nothing (every test skipped)"


async def test_a_child_left_holding_the_output_does_not_keep_the_check_waiting(tmp_path: Path) -> None:
    """dcgmi exits while a process it started in the background still holds its output: the answer
    comes when dcgmi exits, not when the child does (through pipes it came only with the kill at
    the timeout, a failed check)."""
    script = fake_dcgmi(tmp_path, PASSED)
    script.write_text(script.read_text().replace("#!/bin/sh\n", "#!/bin/sh\nsleep 30 &\n", 1))

    result = await DcgmiChecker(str(script), timeout=timedelta(seconds=10)).check(1)

    assert result.ok, result.detail


async def test_dcgmi_missing_or_overstaying_fails_the_check(tmp_path: Path) -> None:
    missing = await DcgmiChecker(str(tmp_path / "no-such-dcgmi")).check(1)
    slow = await DcgmiChecker(str(fake_dcgmi(tmp_path, PASSED, sleep=30)), timeout=timedelta(seconds=0.3)).check(1)

    assert not missing.ok and missing.detail.startswith(f"cannot run {tmp_path / 'no-such-dcgmi'}")
    assert not slow.ok and slow.detail.endswith("did not finish within 0.3s; killed")


async def test_nvml_passes_healthy_gpus_and_names_each_problem() -> None:
    nvml = FakeNvml("gpu-node-7", 4)
    nvml.init()
    checker = NvmlChecker(nvml)
    assert (await checker.check(1)).detail == (
        "NVML reports all 4 GPUs healthy (no lost GPU, ECC error or pending repair)"
    )
    assert (await checker.check(3)).detail.endswith("; level 3 asks for DCGM's diagnostic, which is not installed")

    nvml.set_ecc_dbe(1, 3)
    nvml.fail_device(2)
    result = await checker.check(2)

    assert (result.ok, result.tool) == (False, "nvml")
    assert result.detail.startswith("GPU 1: 3 double-bit ECC errors since the last GPU reset; GPU 2: lost (")
    assert result.conclusive


def test_auto_chooses_dcgmi_only_where_it_is_installed(tmp_path: Path) -> None:
    nvml = FakeNvml("gpu-node-7", 1)
    installed = str(fake_dcgmi(tmp_path, PASSED))

    assert isinstance(choose("auto", nvml=nvml, dcgmi=installed), DcgmiChecker)
    assert isinstance(choose("auto", nvml=nvml, dcgmi=str(tmp_path / "absent")), NvmlChecker)
    assert isinstance(choose("dcgmi", nvml=None), DcgmiChecker)
    assert choose("nvml", nvml=None) is None and choose("off", nvml=nvml) is None
