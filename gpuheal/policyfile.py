"""Reading the policy file (YAML) and following its changes.

A file that cannot be used is refused with every problem named by its line: YAML that does not parse,
a key written twice (YAML would silently keep the last), an unknown field, a value out of range. At a
worker's start that stops the worker; later, while it follows the file, a bad edit is logged and the
policy in force stays, so a typo in a ConfigMap never leaves a fleet without limits.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]
from pydantic import ValidationError

from gpuheal.domain.fleet import FleetPolicy
from gpuheal.domain.policy_document import PolicyDocument

log = logging.getLogger(__name__)

# A path in the document, as pydantic names it: field names, list indexes and dict keys.
Location = tuple[str, ...]
# What a duration may be written as, said where one is written otherwise.
_DURATION_FORMS = " (a duration is seconds, or ISO 8601: PT30M, P1DT12H)"


class PolicyFileInvalid(ValueError):
    """The policy file cannot be used; the message names the file, and each problem's line."""


@dataclass(frozen=True, slots=True)
class LoadedPolicy:
    """A policy file as read: where from, its content and the digest of the bytes it was read from."""

    path: Path
    document: PolicyDocument
    # Of the file's bytes: a change of any kind is noticed, even one that leaves the content the same.
    text_digest: str

    @property
    def version(self) -> str:
        return self.document.version


def read_policy(path: Path) -> LoadedPolicy:
    """Read and check a policy file; raises PolicyFileInvalid naming what is wrong and where."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise PolicyFileInvalid(f"{path}: cannot read the policy file: {error.strerror or error}") from None
    return LoadedPolicy(path=path, document=parse_policy(data, str(path)), text_digest=_digest(data))


def parse_policy(data: bytes, name: str) -> PolicyDocument:
    """The policy document a file's bytes hold; `name` (the file's) heads every problem."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise PolicyFileInvalid(f"{name}: not UTF-8 text (byte {error.start})") from None
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        content = loader.construct_document(root) if root is not None else {}
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise PolicyFileInvalid(f"{name}{where}: not valid YAML: {error.problem or error.context}") from None
    except yaml.YAMLError as error:
        raise PolicyFileInvalid(f"{name}: not valid YAML: {error}") from None
    finally:
        loader.dispose()
    if content is None:  # a file of comments only
        content = {}
    if not isinstance(content, dict):
        raise PolicyFileInvalid(f"{name} line 1: the policy must be a mapping of sections, not a {_kind(content)}")
    lines: dict[Location, int] = {}
    problems = list(_twice_written(root, (), lines)) if root is not None else []
    if problems:
        raise PolicyFileInvalid(_report(name, problems))
    try:
        return PolicyDocument.model_validate(content)
    except ValidationError as error:
        raise PolicyFileInvalid(_report(name, [_problem(item, lines) for item in error.errors()])) from None


def _twice_written(node: yaml.Node, at: Location, lines: dict[Location, int]) -> Iterator[tuple[int, str]]:
    """Record the line of every key and item under `node`, and name the keys written twice."""
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            label = str(key.value) if isinstance(key, yaml.ScalarNode) else "?"
            line = key.start_mark.line + 1
            if label in first:
                yield line, f"{'.'.join((*at, label))}: written twice (first on line {first[label]})"
                continue
            first[label] = line
            lines[(*at, label)] = line
            yield from _twice_written(value, (*at, label), lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*at, str(index))] = item.start_mark.line + 1
            yield from _twice_written(item, (*at, str(index)), lines)


def _problem(error: Any, lines: dict[Location, int]) -> tuple[int, str]:
    """One validation error, at the line of the deepest part of its location the file wrote."""
    location = tuple(str(part) for part in error["loc"] if part != "[key]")
    line = 1
    for depth in range(len(location), 0, -1):
        if location[:depth] in lines:
            line = lines[location[:depth]]
            break
    message = str(error["msg"]).removeprefix("Value error, ")
    if str(error["type"]).startswith("time_delta"):
        message += _DURATION_FORMS
    where = ".".join(location) or "the policy"
    return line, f"{where}: {message}"


def _report(name: str, problems: list[tuple[int, str]]) -> str:
    ordered = sorted(problems)
    return "\n".join(f"{name} line {line}: {text}" for line, text in ordered)


def _kind(value: object) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), type(value).__name__
    )


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class PolicyWatch:
    """The policy in force, from a file it reads again when told to, or every `every` while it follows.

    A file that changed and reads well replaces the policy; one that does not is logged with its
    problems, once per edit, and the policy in force stays.
    """

    def __init__(self, loaded: LoadedPolicy) -> None:
        self._current = loaded
        self._refused_digest = ""

    @property
    def current(self) -> LoadedPolicy:
        return self._current

    def check(self) -> LoadedPolicy | None:
        """Read the file again; the new policy when it changed and reads well, else None."""
        path = self._current.path
        try:
            data = path.read_bytes()
        except OSError as error:
            self._refuse(f"missing:{error.errno}", f"{path}: cannot read the policy file: {error.strerror or error}")
            return None
        digest = _digest(data)
        if digest == self._current.text_digest:
            self._refused_digest = ""
            return None
        try:
            document = parse_policy(data, str(path))
        except PolicyFileInvalid as error:
            self._refuse(digest, str(error))
            return None
        self._refused_digest = ""
        before, self._current = self._current, LoadedPolicy(path=path, document=document, text_digest=digest)
        if document.version == before.version:
            return None  # comments or layout only
        log.info("policy %s in force from %s (was %s)", document.version, path, before.version)
        return self._current

    async def follow(self, every: timedelta, changed: Callable[[LoadedPolicy], Awaitable[None]]) -> None:
        """Check the file every `every` and hand each new policy to `changed`, until cancelled; a
        policy `changed` failed on is handed again at the next check."""
        unsent: LoadedPolicy | None = None
        while True:
            await asyncio.sleep(every.total_seconds())
            unsent = await asyncio.to_thread(self.check) or unsent
            if unsent is None:
                continue
            try:
                await changed(unsent)
            except Exception as error:
                log.warning("policy %s not yet applied everywhere (%s); trying again", unsent.version, error)
            else:
                unsent = None

    def _refuse(self, digest: str, problem: str) -> None:
        if digest != self._refused_digest:
            self._refused_digest = digest
            log.error("policy file not used; policy %s stays in force:\n%s", self._current.version, problem)


class WorkerPolicy:
    """What a worker runs under: its policy file's latest good version (the defaults without one),
    and the fleet's limits: the file's `fleet` section, or, where it has none, the worker's flags."""

    def __init__(self, flags_fleet: FleetPolicy, watch: PolicyWatch | None = None) -> None:
        self._flags_fleet = flags_fleet
        self._watch = watch

    @property
    def document(self) -> PolicyDocument:
        return self._watch.current.document if self._watch is not None else _DEFAULTS

    @property
    def fleet(self) -> FleetPolicy:
        return self.document.fleet or self._flags_fleet


_DEFAULTS = PolicyDocument()
