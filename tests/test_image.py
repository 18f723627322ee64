"""The image the chart deploys: its Containerfile lints clean, and its install steps, run here in a fresh
venv, give the product's commands and nothing of the test bed or the dev tools.

No container engine is needed: the build stage's COPY and RUN steps are in exec form (JSON), so this
test reads them from the Containerfile and carries them out itself.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[1]
CONTAINERFILE = ROOT / "Containerfile"
BIN = Path(sys.executable).parent
COMMANDS = [["gpuheal"], ["gpuheal", "worker"], ["gpuheal", "agent"], ["gpuheal-eventgen"], ["gpuheal-telemetry"]]
# What only the test bed or the dev group brings.
NOT_IN_THE_IMAGE = ["gpuheal_sim", "pytest", "mypy", "hypothesis", "moto"]


@dataclass
class Stage:
    name: str | None
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arguments for name, arguments in self.instructions if name == keyword]

    def env(self) -> dict[str, str]:
        pairs = re.findall(r'(\w+)=("[^"]*"|\S+)', " ".join(self.all("ENV")))
        return {key: value.strip('"') for key, value in pairs}


def stages() -> list[Stage]:
    """The Containerfile's stages, each instruction on one line (continuations joined, comments gone)."""
    text = re.sub(r"\\\n\s*", " ", CONTAINERFILE.read_text())
    found: list[Stage] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        keyword, _, arguments = line.strip().partition(" ")
        if keyword == "FROM":
            base, _, alias = arguments.strip().partition(" ")
            name = re.fullmatch(r"AS\s+(\S+)", alias.strip(), re.IGNORECASE)
            found.append(Stage(name.group(1) if name else None, base))
        elif found:
            found[-1].instructions.append((keyword, arguments.strip()))
    return found


def build_stage() -> Stage:
    [stage] = [stage for stage in stages() if stage.name == "build"]
    return stage


def default_arg(name: str) -> str:
    value: str
    [value] = re.findall(rf"^ARG {name}=(\S+)$", CONTAINERFILE.read_text(), re.MULTILINE)
    return value


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    # An empty configuration: no ignore list of the repository's or the user's applies.
    config = tmp_path / "hadolint.yaml"
    config.write_text("{}\n")
    result = subprocess.run(
        [
            str(BIN / "hadolint"),
            "--config",
            str(config),
            "--failure-threshold",
            "style",
            "--no-color",
            str(CONTAINERFILE),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    lines = CONTAINERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            assert number and lines[number - 1].startswith("#"), f"line {number + 1}: an ignore without its reason"


def test_the_build_context_is_what_the_build_stage_copies() -> None:
    rules = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    # Everything is left out (.venv, .state, caches, the tests) but what is let in by name.
    assert rules[0] == "*"
    let_in = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    copied = {
        source.rstrip("/")
        for copy in build_stage().all("COPY")
        if not copy.startswith("--from=")
        for source in json.loads(copy)[:-1]
    }
    assert let_in == copied


def test_the_build_stage_installs_the_product_alone(tmp_path: Path) -> None:
    stage = build_stage()
    [workdir] = stage.all("WORKDIR")
    env = stage.env()
    context = tmp_path / "context"
    for copy in stage.all("COPY"):
        if copy.startswith("--from="):
            continue
        *sources, destination = json.loads(copy)
        target = context / Path(workdir, destination).relative_to(workdir)
        for source in sources:
            path = ROOT / source
            if path.is_dir():
                shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, target / path.name)

    here = tmp_path / "venv"
    run_env = {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PYTHONPATH")}
    # The test's venv for the image's, and this Python for the base image's. Compiling bytecode and
    # keeping no cache shape the image, not what is installed: here uv's cache keeps the test fast.
    run_env |= {**env, "UV_PROJECT_ENVIRONMENT": str(here), "UV_PYTHON": sys.executable}
    for key in ("UV_COMPILE_BYTECODE", "UV_NO_CACHE"):
        run_env.pop(key, None)
    runs = [json.loads(run) for run in stage.all("RUN")]
    assert runs, "the build stage installs nothing"
    for argv in runs:
        assert argv[0] == "uv"
        subprocess.run([str(BIN / "uv"), *argv[1:]], cwd=context, env=run_env, check=True, capture_output=True)

    clean = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    for command in COMMANDS:
        result = subprocess.run(
            [str(here / "bin" / command[0]), *command[1:], "--help"],
            cwd=tmp_path,
            env=clean,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, (command, result.stderr)
    demo = subprocess.run(
        [str(here / "bin" / "gpuheal"), "demo"], cwd=tmp_path, env=clean, capture_output=True, text=True, check=False
    )
    assert demo.returncode == 2 and "No such command 'demo'" in demo.stderr, demo.stderr

    probe = (
        "import importlib.util, json, sys; "
        "print(json.dumps({name: getattr(importlib.util.find_spec(name), 'origin', None) for name in sys.argv[1:]}))"
    )
    found = subprocess.run(
        [str(here / "bin" / "python"), "-I", "-c", probe, "gpuheal", *NOT_IN_THE_IMAGE],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    origins = json.loads(found.stdout)
    assert origins.pop("gpuheal").startswith(str(here)), "gpuheal is installed in the venv, not linked to the sources"
    assert origins == dict.fromkeys(NOT_IN_THE_IMAGE)
    # The license (Apache-2.0) travels with what is distributed.
    [license_file] = here.glob("lib/python*/site-packages/gpuheal-*.dist-info/licenses/LICENSE")
    assert license_file.read_text() == (ROOT / "LICENSE").read_text()


def test_the_image_uses_the_makefiles_uv_and_the_projects_python() -> None:
    makefile = (ROOT / "Makefile").read_text()
    [uv_version] = re.findall(r"^UV_VERSION := (\S+)$", makefile, re.MULTILINE)
    assert default_arg("UV_VERSION") == uv_version
    python = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]["python_version"]
    assert re.fullmatch(rf".*/python:{re.escape(python)}\.\d+-slim-\w+", default_arg("PYTHON_IMAGE"))


ENGINE = "/usr/bin/podman"


def make_image_dry_run(*variables: str) -> str:
    """The build command `make image` would run, on one line, with an engine named (none is needed to print it)."""
    result = subprocess.run(
        ["make", "-n", "image", f"CONTAINER_ENGINE={ENGINE}", *variables],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return " ".join(result.stdout.replace("\\\n", " ").split())


def image_labels() -> dict[str, str]:
    return dict(re.findall(r'(org\.opencontainers\.image\.\w+)="([^"]*)"', " ".join(stages()[-1].all("LABEL"))))


def test_make_image_tags_the_charts_image_with_the_projects_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    chart = yaml.safe_load((ROOT / "helm" / "gpuheal" / "Chart.yaml").read_text())
    values = yaml.safe_load((ROOT / "helm" / "gpuheal" / "values.yaml").read_text())
    build = make_image_dry_run()
    assert f"{ENGINE} build -f Containerfile" in build
    assert f"--build-arg VERSION={project['version']}" in build
    assert f"-t {values['image']['repository']}:{chart['appVersion']}" in build
    assert chart["appVersion"] == project["version"]
    labels = image_labels()
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert labels["org.opencontainers.image.title"] == project["name"]
    assert labels["org.opencontainers.image.description"] == project["description"]
    assert labels["org.opencontainers.image.licenses"] == project["license"]


def test_make_image_labels_the_commit_built_and_its_commit_time() -> None:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    revision, created = git("rev-parse", "HEAD"), git("log", "-1", "--format=%cI", "HEAD")
    # The commit's time, not the build's: two builds of one commit label it alike.
    assert datetime.fromisoformat(created).tzinfo is not None
    build = make_image_dry_run()
    assert f"--build-arg REVISION={revision}" in build
    assert f"--build-arg CREATED={created}" in build
    assert image_labels()["org.opencontainers.image.revision"] == "${REVISION}"
    assert image_labels()["org.opencontainers.image.created"] == "${CREATED}"
    # Outside a git checkout make passes neither, and a plain build takes the Containerfile's defaults:
    # no revision it does not know, and the epoch (RFC 3339) for a date that does not vary.
    build = make_image_dry_run("GIT=false")
    assert "REVISION" not in build and "CREATED" not in build
    assert default_arg("REVISION") == "unknown"
    assert datetime.fromisoformat(default_arg("CREATED")) == datetime(1970, 1, 1, tzinfo=UTC)


def test_the_image_runs_the_build_stages_venv_with_the_python_it_was_built_with() -> None:
    build, final = build_stage(), stages()[-1]
    venv = build.env()["UV_PROJECT_ENVIRONMENT"]
    # The venv's bin/python links to the base image's interpreter: another base leaves it dangling.
    assert final.base == build.base == "${PYTHON_IMAGE}"
    # The venv's scripts name their interpreter by its path: the venv stays where it was built.
    assert final.all("COPY") == [f"--from=build {venv} {venv}"]
    assert final.env()["PATH"].startswith(f"{venv}/bin:")


def test_the_image_runs_as_a_numeric_non_root_user_with_a_writable_home() -> None:
    final = stages()[-1]
    # Numeric, so Kubernetes' runAsNonRoot can check it without a passwd file.
    [user] = final.all("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit(), user
    # The user has no passwd entry, hence no home of its own: one every user may write to.
    assert final.env()["HOME"] == "/tmp"


def test_make_image_says_when_there_is_no_engine() -> None:
    result = subprocess.run(
        ["make", "image", "CONTAINER_ENGINE="], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "neither podman nor docker" in result.stderr


def test_make_image_says_when_it_cannot_read_the_version() -> None:
    # Even a dry run: an image tagged with nothing is never what was meant.
    result = subprocess.run(
        ["make", "-n", "image", "PYTHON=false", "CONTAINER_ENGINE=/usr/bin/podman"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "could not read the project's version from pyproject.toml" in result.stderr
    assert "build" not in result.stdout


def test_the_image_carries_the_bytecode_of_everything_the_agent_imports(tmp_path: Path) -> None:
    # Compiling each module at each start is CPU, and the compiler's garbage: the agent's resident set
    # was 237 MB instead of 146 MB with no bytecode. uv compiles the venv's modules.
    assert build_stage().env()["UV_COMPILE_BYTECODE"] == "1"
    # The base image's standard library comes without bytecode and the agent's root filesystem is
    # read-only, so the image compiles it, as root, before its user is set.
    final = stages()[-1]
    keywords = [keyword for keyword, _ in final.instructions]
    [run] = final.all("RUN")
    assert keywords.index("RUN") < keywords.index("USER")
    python, flag, code = json.loads(run)
    assert (python, flag) == ("python", "-c")
    # The step, run here on a stand-in for the standard library: it compiles packages at any depth,
    # and a module that does not compile fails the build.
    stdlib = tmp_path / "stdlib"
    (stdlib / "email" / "mime").mkdir(parents=True)
    (stdlib / "email" / "mime" / "text.py").write_text("TEXT = 1\n")
    (stdlib / "os_like.py").write_text("NAME = 'posix'\n")
    here = f"import sysconfig; sysconfig.get_path = lambda name: {str(stdlib)!r}\n"
    subprocess.run([sys.executable, "-I", "-c", here + code], check=True)
    assert {path.name.split(".")[0] for path in stdlib.rglob("__pycache__/*.pyc")} == {"text", "os_like"}
    (stdlib / "broken.py").write_text("def (\n")
    assert subprocess.run([sys.executable, "-I", "-c", here + code], capture_output=True, check=False).returncode != 0
