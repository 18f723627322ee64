"""`lint-imports` enforces the layers: each rule, broken on purpose in a copy of the package, fails its contract."""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import gpuheal
import gpuheal_sim

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
SETTINGS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
CONTRACTS = [contract["name"] for contract in SETTINGS["contracts"]]
LAYERS, NO_IO, NO_TEMPORAL, AGENT_NO_WORKFLOWS, NO_TEST_BED = CONTRACTS


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The product, its test bed and their import-linter settings, copied where a test may break them."""
    root = tmp_path_factory.mktemp("layers")
    for package in (gpuheal, gpuheal_sim):
        [source] = map(Path, package.__path__)
        shutil.copytree(source, root / source.name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    # lint-imports analyses the packages found first on the path: the copies in the working directory.
    env = {**os.environ, "COLUMNS": "1000", "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("package", SETTINGS["root_packages"])
def test_every_top_level_module_has_a_layer(package: str) -> None:
    """A new module beside the layers would be bound by none of them."""
    [layers] = [contract["layers"] for contract in SETTINGS["contracts"] if contract["type"] == "layers"]
    layered = {name.strip("() ") for layer in layers for name in re.split(r"[|:]", layer)}
    path = importlib.import_module(package).__path__
    modules = {f"{package}.{module.name}" for module in pkgutil.iter_modules(path)}
    assert package in layered or modules - layered == set()


def test_the_package_as_it_is_keeps_every_contract(copy: Path) -> None:
    result = lint(copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert all(f"{name} KEPT" in result.stdout for name in CONTRACTS), result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("gpuheal/domain/marks.py", "import kubernetes", NO_IO),
        ("gpuheal/workflows/search_attributes.py", "import os", NO_IO),
        ("gpuheal/workflows/search_attributes.py", "import threading", NO_IO),
        ("gpuheal/workflows/search_attributes.py", "import uuid", NO_IO),
        ("gpuheal/workflows/search_attributes.py", "from gpuheal import kubeclient", LAYERS),
        ("gpuheal/domain/marks.py", "from gpuheal.workflows import search_attributes", LAYERS),
        ("gpuheal/agents/sink.py", "import gpuheal.activities.kube", LAYERS),
        ("gpuheal/control/lifetime.py", "import gpuheal_sim.simulator", LAYERS),
        ("gpuheal_sim/simulator/clock.py", "import gpuheal.agents.sink", LAYERS),
        ("gpuheal/domain/marks.py", "import temporalio", NO_TEMPORAL),
        ("gpuheal/agents/sink.py", "from gpuheal.control import remediations", AGENT_NO_WORKFLOWS),
        ("gpuheal/agents/agent.py", "import gpuheal_sim.fake_nvml", NO_TEST_BED),
    ],
)
def test_an_import_against_the_rules_breaks_its_contract(copy: Path, module: str, line: str, contract: str) -> None:
    path = copy / module
    original = path.read_text()
    path.write_text(f"{original}\n{line}  # noqa\n")
    try:
        result = lint(copy)
    finally:
        path.write_text(original)

    assert result.returncode != 0
    assert f"{contract} BROKEN" in result.stdout, result.stdout
