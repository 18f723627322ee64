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
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

import yaml  # type: ignore[import-untyped]
from pydantic import ValidationError

from gpuheal.domain.fleet import FleetPolicy
from gpuheal.domain.policy_document import AgentPolicy, PolicyDocument

log = logging.getLogger(__name__)

# A path in the document, as pydantic names it: field names, list indexes and dict keys.
Location = tuple[str, ...]
# What a duration may be written as, said where one is written otherwise.
_DURATION_FORMS = " (a duration is seconds, or ISO 8601: PT30M, P1DT12H)"


class PolicyFileInvalid(ValueError):
    """The policy file cannot be used; the message names the file, and each problem's line."""


# The documents a policy file is read as: the whole policy (the worker), or the agent's part of it.
Document = TypeVar("Document", PolicyDocument, AgentPolicy)

# Mappings whose keys are XIDs (or SXids): YAML 1.1 would read `074` as octal 60 and `0x4a` as 74.
_XID_MAPS = {("xids", "overrides"), ("xids", "sxid_overrides")}
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True, slots=True)
class LoadedPolicy(Generic[Document]):
    """A policy file as read: where from, its content and the digest of the bytes it was read from."""

    path: Path
    document: Document
    # Of the file's bytes: a change of any kind is noticed, even one that leaves the content the same.
    text_digest: str

    @property
    def version(self) -> str:
        return self.document.version


@overload
def read_policy(path: Path) -> LoadedPolicy[PolicyDocument]: ...
@overload
def read_policy(path: Path, model: type[Document]) -> LoadedPolicy[Document]: ...
def read_policy(path: Path, model: type[Any] = PolicyDocument) -> LoadedPolicy[Any]:
    """Read and check a policy file as `model` (the whole policy by default); raises PolicyFileInvalid
    naming what is wrong and where."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise PolicyFileInvalid(f"{path}: cannot read the policy file: {error.strerror or error}") from None
    return LoadedPolicy(path=path, document=parse_policy(data, str(path), model), text_digest=_digest(data))


def parse_policy(data: bytes, name: str, model: type[Document] = PolicyDocument) -> Document:  # type: ignore[assignment]
    """The policy a file's bytes hold, as `model`; `name` (the file's) heads every problem."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise PolicyFileInvalid(f"{name}: not UTF-8 text (byte {error.start})") from None
    lines: dict[Location, int] = {}
    problems: list[tuple[int, str]] = []
    content: Any = {}
    try:
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
            # Walked before it is constructed: construction folds merge keys (`<<`) into their mappings.
            if root is not None:
                problems = list(_walk(root, (), lines, loader, set()))
                content = loader.construct_document(root)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise PolicyFileInvalid(f"{name}{where}: not valid YAML: {error.problem or error.context}") from None
    except yaml.reader.ReaderError as error:
        line = text[: error.position].count("\n") + 1
        raise PolicyFileInvalid(f"{name} line {line}: not valid YAML: {error.reason}") from None
    except yaml.YAMLError as error:
        raise PolicyFileInvalid(f"{name}: not valid YAML: {error}") from None
    except (ValueError, RecursionError) as error:  # a number of thousands of digits; nesting without end
        raise PolicyFileInvalid(f"{name}: cannot be read: {error}") from None
    if problems:
        raise PolicyFileInvalid(_report(name, problems))
    if content is None:  # a file of comments only
        content = {}
    if not isinstance(content, dict):
        raise PolicyFileInvalid(f"{name} line 1: the policy must be a mapping of sections, not a {_kind(content)}")
    try:
        return model.model_validate(content)
    except ValidationError as error:
        raise PolicyFileInvalid(_report(name, [_problem(item, lines) for item in error.errors()])) from None


def _walk(
    node: yaml.Node, at: Location, lines: dict[Location, int], loader: yaml.SafeLoader, seen: set[int]
) -> Iterator[tuple[int, str]]:
    """Record the line of every key and item under `node`, and name what YAML would read otherwise than
    meant: a key written twice (as the value it reads as: `74` and `0x4a` are one key), a key YAML
    reads as a boolean (`on`, `yes`), an XID not written in decimal. A node an alias repeats is walked
    once: aliases could otherwise make a short file take hours."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines.setdefault((*at, str(index)), item.start_mark.line + 1)
            yield from _walk(item, (*at, str(index)), lines, loader, seen)
        return
    if not isinstance(node, yaml.MappingNode):
        return
    first: dict[object, int] = {}
    for key, value in node.value:
        line = key.start_mark.line + 1
        if key.tag == _MERGE_TAG:  # `<<: *defaults`: keys written beside it override the merged ones
            yield from _walk(value, at, lines, loader, seen)
            continue
        label = str(key.value) if isinstance(key, yaml.ScalarNode) else "?"
        where = ".".join((*at, label))
        read_as = loader.construct_object(key, deep=True) if isinstance(key, yaml.ScalarNode) else label
        if isinstance(read_as, bool):
            yield line, f"{where}: YAML reads the key {label!r} as {read_as}: quote it"
            continue
        if at in _XID_MAPS and not _DECIMAL.fullmatch(label):
            yield line, f"{where}: write the XID in decimal (YAML reads {label!r} as {read_as!r})"
            continue
        if read_as in first:
            yield line, f"{where}: written twice (first on line {first[read_as]})"
            continue
        first[read_as] = line
        lines[(*at, label)] = line
        if str(read_as) != label:
            lines.setdefault((*at, str(read_as)), line)
        yield from _walk(value, (*at, label), lines, loader, seen)


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


class PolicyWatch(Generic[Document]):
    """The policy in force, from a file it reads again when told to, or every `every` while it follows.

    A file that changed and reads well replaces the policy; one that does not is logged with its
    problems, once per edit, and the policy in force stays.
    """

    def __init__(self, loaded: LoadedPolicy[Document]) -> None:
        self._current: LoadedPolicy[Document] = loaded
        self._refused_digest = ""

    @property
    def current(self) -> LoadedPolicy[Document]:
        return self._current

    def check(self) -> LoadedPolicy[Document] | None:
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
            document = parse_policy(data, str(path), type(self._current.document))
        except PolicyFileInvalid as error:
            self._refuse(digest, str(error))
            return None
        self._refused_digest = ""
        before = self._current
        self._current = LoadedPolicy(path=path, document=document, text_digest=digest)
        if document.version == before.version:
            return None  # comments or layout only
        log.info("policy %s in force from %s (was %s)", document.version, path, before.version)
        return self._current

    async def follow(self, every: timedelta, changed: Callable[[LoadedPolicy[Document]], Awaitable[None]]) -> None:
        """Check the file every `every` and hand each new policy to `changed`, until cancelled; a
        policy `changed` failed on is handed again at the next check. Nothing but a cancel ends it:
        a watch that died would leave every later edit unread without a word."""
        unsent: LoadedPolicy[Document] | None = None
        while True:
            await asyncio.sleep(every.total_seconds())
            try:
                unsent = await asyncio.to_thread(self.check) or unsent
            except Exception:
                log.exception("the policy file could not be read again; trying at the next check")
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

    def __init__(self, flags_fleet: FleetPolicy, watch: PolicyWatch[PolicyDocument] | None = None) -> None:
        self._flags_fleet = flags_fleet
        self._watch = watch

    @property
    def document(self) -> PolicyDocument:
        return self._watch.current.document if self._watch is not None else _DEFAULTS

    @property
    def fleet(self) -> FleetPolicy:
        return self.document.fleet or self._flags_fleet


_DEFAULTS = PolicyDocument()
