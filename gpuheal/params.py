"""Click parameter types for what a person names on gpuheal's command line, checked before anything starts.

Each type loads or parses its value the way the command will use it and turns every way it can be
wrong into click's own one-line `Invalid value for '--flag': …` (exit status 2), so a typo never
surfaces later as a traceback, or as a process that runs but cannot do its job.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import click
import yaml  # type: ignore[import-untyped]
from pydantic import ValidationError

from gpuheal.address import parse_host_port
from gpuheal.agents.kmsg.decide import load_xid_policy
from gpuheal.domain.policy_document import AgentPolicy, PolicyDocument
from gpuheal.policyfile import LoadedPolicy, PolicyFileInvalid, read_policy
from gpuheal.tools.goflags import go_duration

# The longest duration a flag takes: past it, `now - duration` leaves the calendar (year 1) or means nothing.
LONGEST_DURATION = timedelta(days=3650)


class Duration(click.ParamType[timedelta, Any]):
    """A duration as Go writes it (`90m`, `1h`, `1h30m`), over zero and at most `LONGEST_DURATION`."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> timedelta:
        try:
            duration = value if isinstance(value, timedelta) else go_duration(str(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)
        if duration <= timedelta(0):
            self.fail(f"{value!r} must be longer than zero", param, ctx)
        if duration > LONGEST_DURATION:
            self.fail(f"{value!r} is longer than {LONGEST_DURATION.days} days", param, ctx)
        return duration


class HostPort(click.ParamType[str, Any]):
    """`host:port` (see `gpuheal.address.parse_host_port`): a host is required and the port runs from 1."""

    name = "host:port"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip()
        try:
            parse_host_port(text)
        except ValueError as error:
            self.fail(str(error), param, ctx)
        return text


class XidPolicyFile(click.ParamType[Path, Any]):
    """An XID policy file (JSON, see `gpuheal.domain.xid_policy.XidPolicy`), read and validated; its path is kept."""

    name = "file"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        path = Path(value)
        try:
            load_xid_policy(path)
        except OSError as error:
            self.fail(f"cannot read {path}: {error.strerror or error}", param, ctx)
        except ValidationError as error:
            self.fail(f"{path} is not an XID policy: {_problems(error)}", param, ctx)
        return path


class PolicyFile(click.ParamType[LoadedPolicy[Any], Any]):
    """The policy file (YAML, see `gpuheal.domain.policy_document`), read as `model` (the whole policy,
    or the agent's part of it) and checked: every problem is named with its line."""

    name = "file"

    def __init__(self, model: type[PolicyDocument] | type[AgentPolicy] = PolicyDocument) -> None:
        self._model = model

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> LoadedPolicy[Any]:
        try:
            return read_policy(Path(value), self._model)
        except PolicyFileInvalid as error:
            self.fail(str(error), param, ctx)


class KubeconfigFile(click.ParamType[Path, Any]):
    """A kubeconfig file that names a usable cluster: YAML, with a current context whose cluster has a server.

    These are the checks the Kubernetes client makes while loading it, with messages that say which
    entry is wrong; credentials are not exercised here (an exec plugin would run a command).
    """

    name = "file"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        path = Path(value)
        try:
            document = yaml.safe_load(path.read_text())
        except OSError as error:
            self.fail(f"cannot read {path}: {error.strerror or error}", param, ctx)
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            self.fail(f"{path} is not YAML: {_yaml_problem(error)}", param, ctx)
        problem = kubeconfig_problem(document)
        if problem is not None:
            self.fail(f"{path} is not a usable kubeconfig: {problem}", param, ctx)
        return path


def kubeconfig_problem(document: object) -> str | None:
    """Why a parsed kubeconfig names no cluster to talk to, or None when its current context does."""
    if not isinstance(document, dict):
        return "it is not a mapping of clusters, contexts and users"
    current = document.get("current-context")
    if not current:
        return "it sets no current-context"
    context = _named(document, "contexts", current)
    if context is None:
        return f"its current-context {current!r} is not among its contexts"
    cluster_name = (context.get("context") or {}).get("cluster")
    cluster = _named(document, "clusters", cluster_name) if cluster_name else None
    if cluster is None:
        return f"context {current!r} names cluster {cluster_name!r}, which it does not define"
    if not (cluster.get("cluster") or {}).get("server"):
        return f"cluster {cluster_name!r} has no server"
    return None


def _named(document: dict[str, Any], section: str, name: object) -> dict[str, Any] | None:
    entries = document.get(section)
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry
    return None


def _problems(error: ValidationError) -> str:
    """A pydantic error on one line: `where: what` for each problem."""
    return "; ".join(
        f"{'.'.join(map(str, problem['loc']))}: {problem['msg']}" if problem["loc"] else problem["msg"]
        for problem in error.errors(include_url=False)
    )


def _yaml_problem(error: Exception) -> str:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        return f"{error.problem} at line {error.problem_mark.line + 1}, column {error.problem_mark.column + 1}"
    return str(error).splitlines()[0]
