"""The policy file: read, refused with the line named, versioned by content, followed as it changes."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path

import pytest

from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.policy import DrainMode
from gpuheal.domain.policy_document import AgentPolicy, PolicyDocument
from gpuheal.policyfile import LoadedPolicy, PolicyFileInvalid, PolicyWatch, read_policy

FULL = """\
# Every section of the policy file.
xids:
  overrides:
    74: RESTART_BM        # NVLink errors: a power cycle
  sxid_overrides:
    12028: NONE
drain:
  default_mode: Immediate
  namespaces:
    batch: AllowCompletion
  timeout: PT20M
repair:
  gpu_reset: false
  approval_for: [RESTART_BM]
  approval_node_selector: {pool: h100-prod}
  auto_approve_after: 3600
loops:
  max_per_node: 2
  gpu_window: P3D
timeouts:
  provider_attempts: 4
fleet:
  budget:
    max_concurrent: 3
    group_label: topology.kubernetes.io/zone
  breaker:
    share: 0.1
"""


def write(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def refusal(tmp_path: Path, text: str) -> str:
    with pytest.raises(PolicyFileInvalid) as refused:
        read_policy(write(tmp_path, text))
    return str(refused.value)


def test_every_section_is_read_into_the_models_gpuheal_runs_on(tmp_path: Path) -> None:
    document = read_policy(write(tmp_path, FULL)).document

    assert document.xids.overrides == {74: RecommendedAction.RESTART_BM}
    assert document.xids.sxid_overrides == {12028: RecommendedAction.NONE}
    assert document.drain.mode_for("batch") is DrainMode.ALLOW_COMPLETION
    assert document.drain.timeout == timedelta(minutes=20)
    assert document.repair.gpu_reset is False
    assert document.repair.approval_for == frozenset({RecommendedAction.RESTART_BM})
    assert document.repair.auto_approve_after == timedelta(hours=1)
    assert document.loops.max_per_node == 2
    assert document.loops.gpu_window == timedelta(days=3)
    assert document.timeouts.provider_attempts == 4
    assert document.fleet is not None
    assert document.fleet.budget.max_concurrent == 3
    assert document.fleet.breaker.share == 0.1
    # What a remediation carries is the same policy, without the agent's and the governor's parts.
    assert document.remediation().drain == document.drain
    assert "fleet" not in document.remediation().model_dump()


def test_an_empty_file_is_the_defaults_and_a_file_without_fleet_leaves_the_flags_in_charge(tmp_path: Path) -> None:
    empty = read_policy(write(tmp_path, "# nothing decided yet\n"))

    assert empty.document == PolicyDocument()
    assert empty.document.fleet is None


def test_the_version_follows_the_content_not_the_text(tmp_path: Path) -> None:
    reordered = (
        "fleet:\n  breaker:\n    share: 0.1\n  budget:\n    group_label: topology.kubernetes.io/zone\n"
        "    max_concurrent: 3\n" + FULL.split("fleet:")[0].replace("# Every section of the policy file.\n", "")
    )

    one = read_policy(write(tmp_path, FULL, "one.yaml"))
    other = read_policy(write(tmp_path, reordered, "other.yaml"))
    changed = read_policy(write(tmp_path, FULL.replace("share: 0.1", "share: 0.2"), "changed.yaml"))

    assert one.version == other.version
    assert changed.version != one.version
    assert len(one.version) == 12


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A field that does not exist: a typo must not be silently ignored.
        (
            "drain:\n  timeout: PT5M\n  tiemout: PT9M\n",
            "policy.yaml line 3: drain.tiemout: Extra inputs are not permitted",
        ),
        # A value out of range, under a list.
        (
            "fleet:\n  budget:\n    max_concurrent: 0\n",
            "policy.yaml line 3: fleet.budget.max_concurrent: Input should be greater than or equal to 1",
        ),
        # An action that does not exist, as a list item.
        ("repair:\n  approval_for:\n    - RESTART_VM\n    - REBOOT\n", "policy.yaml line 4: repair.approval_for.1: "),
        # An XID that is not a number, as a mapping key.
        ("xids:\n  overrides:\n    seventy-nine: RESTART_BM\n", "policy.yaml line 3: xids.overrides.seventy-nine: "),
        # A rule across fields (a model validator), at the line of its section.
        (
            "\ndrain:\n  timeout: PT5M\n  delete_after: PT10M\n",
            "policy.yaml line 2: drain: drain.delete_after must not exceed drain.timeout",
        ),
        # A key written twice: YAML keeps the last one without a word.
        (
            "loops:\n  max_per_node: 2\n  gpu_window: P1D\n  max_per_node: 5\n",
            "policy.yaml line 4: loops.max_per_node: written twice (first on line 2)",
        ),
        # Not YAML.
        ("drain:\n  timeout: [PT5M\n", "policy.yaml line 3: not valid YAML"),
        # Two documents.
        ("drain: {}\n---\nrepair: {}\n", "policy.yaml line 2: not valid YAML"),
        # Not a mapping.
        ("- drain\n", "policy.yaml line 1: the policy must be a mapping of sections, not a list"),
    ],
)
def test_a_file_that_cannot_be_used_is_refused_naming_the_line_and_the_reason(
    tmp_path: Path, text: str, expected: str
) -> None:
    message = refusal(tmp_path, text)

    assert message.startswith(str(tmp_path / "policy.yaml")), message
    assert expected in message, message


def test_every_problem_is_named_in_line_order(tmp_path: Path) -> None:
    message = refusal(tmp_path, "repair:\n  gpu_reset: sometimes\nloops:\n  max_per_node: -1\n")

    lines = message.splitlines()
    assert [line.split(": ")[0].rsplit(" ", 2)[-2:] for line in lines] == [["line", "2"], ["line", "4"]]
    assert "repair.gpu_reset" in lines[0] and "loops.max_per_node" in lines[1]


def test_a_file_that_is_not_there_or_not_text_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileInvalid, match="cannot read the policy file"):
        read_policy(tmp_path / "absent.yaml")
    binary = tmp_path / "policy.yaml"
    binary.write_bytes(b"drain:\n  timeout: \xff\n")
    with pytest.raises(PolicyFileInvalid, match="not UTF-8"):
        read_policy(binary)


def test_a_watch_takes_a_good_edit_keeps_the_policy_through_a_bad_one_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, "fleet:\n  budget:\n    max_concurrent: 3\n")
    watch = PolicyWatch(read_policy(path))
    first = watch.current.version

    assert watch.check() is None  # unchanged

    path.write_text("# layout only\nfleet:\n  budget: {max_concurrent: 3}\n")
    assert watch.check() is None
    assert watch.current.version == first

    path.write_text("fleet:\n  budget:\n    max_concurrent: 0\n")
    with caplog.at_level(logging.ERROR, logger="gpuheal.policyfile"):
        assert watch.check() is None
        assert watch.check() is None
    refusals = [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR]
    assert len(refusals) == 1
    assert f"policy {first} stays in force" in refusals[0] and "line 3: fleet.budget.max_concurrent" in refusals[0]
    assert watch.current.version == first

    path.write_text("fleet:\n  budget:\n    max_concurrent: 5\n")
    taken = watch.check()
    assert taken is not None and taken is watch.current
    assert taken.document.fleet is not None and taken.document.fleet.budget.max_concurrent == 5
    assert taken.version != first

    path.unlink()
    assert watch.check() is None
    assert watch.current is taken


def test_a_duration_written_otherwise_is_refused_with_the_forms_it_may_take(tmp_path: Path) -> None:
    message = refusal(tmp_path, "drain:\n  timeout: 30m\n")

    assert "line 2: drain.timeout:" in message and "ISO 8601: PT30M" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # YAML 1.1 reads 0x4a as 74: two keys for one XID, the last silently winning.
        (
            "xids:\n  overrides:\n    74: NONE\n    0x4a: RESTART_BM\n",
            "line 4: xids.overrides.0x4a: write the XID in decimal",
        ),
        # … and 074 as octal 60: an override of another XID than the one written.
        (
            "xids:\n  overrides:\n    074: NONE\n",
            "line 3: xids.overrides.074: write the XID in decimal (YAML reads '074' as 60)",
        ),
        # Elsewhere, one key written two ways is still written twice.
        (
            "drain:\n  namespaces:\n    1: Immediate\n    0x1: AllowCompletion\n",
            "line 4: drain.namespaces.0x1: written twice (first on line 3)",
        ),
        # `on`, `yes`, `true` are booleans to YAML 1.1, not names.
        (
            "drain:\n  namespaces:\n    on: Immediate\n",
            "line 3: drain.namespaces.on: YAML reads the key 'on' as True: quote it",
        ),
        # A number of thousands of digits, a control character, nesting without end: refused, not a traceback.
        ("loops:\n  max_per_node: " + "9" * 5000 + "\n", "cannot be read: Exceeds the limit"),
        ("drain:\n  timeout: \x07\n", "line 2: not valid YAML: special characters are not allowed"),
        ("drain: &a [*a]\n", "line 1: drain: Input should be a valid dictionary"),
        ("drain: " + "[" * 5000 + "]" * 5000 + "\n", "cannot be read: maximum recursion depth exceeded"),
    ],
)
def test_what_yaml_would_read_otherwise_than_meant_is_refused_naming_the_line(
    tmp_path: Path, text: str, expected: str
) -> None:
    message = refusal(tmp_path, text)

    assert expected in message, message
    assert "Traceback" not in message


def test_a_merge_key_is_yaml_s_way_of_sharing_and_a_key_beside_it_overrides(tmp_path: Path) -> None:
    document = read_policy(write(tmp_path, "drain:\n  <<: {timeout: PT40M, settle: 3}\n  timeout: PT50M\n")).document

    assert (document.drain.timeout, document.drain.settle) == (timedelta(minutes=50), timedelta(seconds=3))


def test_aliases_repeated_level_upon_level_are_read_at_once(tmp_path: Path) -> None:
    """Each level names the one before ten times: walked naively, 10**9 nodes (hours, gigabytes)."""
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 10)]
    text = "drain:\n  namespaces: {}\n" + "".join(f"# {line}\n" for line in levels) + "xids:\n  " + "\n  ".join(levels)

    message = refusal(tmp_path, text)  # the section `xids` has no field a0…a9

    assert "line 14: xids.a0: Extra inputs are not permitted" in message


def test_the_agent_reads_its_section_and_leaves_the_others_to_the_worker(tmp_path: Path) -> None:
    """A mistake in the worker's sections must not stop the agents that watch the GPUs."""
    path = write(tmp_path, "xids:\n  overrides:\n    31: RESTART_VM\ndrain:\n  tiemout: PT5M\n")

    agent = read_policy(path, AgentPolicy).document
    with pytest.raises(PolicyFileInvalid, match=r"line 5: drain\.tiemout"):
        read_policy(path)
    path.write_text("xids:\n  overides: {}\n")
    with pytest.raises(PolicyFileInvalid, match=r"line 2: xids\.overides"):
        read_policy(path, AgentPolicy)

    assert agent.xids.overrides == {31: RecommendedAction.RESTART_VM}


async def test_a_watch_that_fails_to_read_keeps_following(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, "loops:\n  max_per_node: 2\n")
    watch = PolicyWatch(read_policy(path))
    checks = 0
    real_check = watch.check

    def check() -> LoadedPolicy[PolicyDocument] | None:
        nonlocal checks
        checks += 1
        if checks == 1:
            raise RuntimeError("the disk went away")
        return real_check()

    watch.check = check  # type: ignore[method-assign]
    taken: list[str] = []

    async def changed(loaded: LoadedPolicy[PolicyDocument]) -> None:
        taken.append(loaded.version)

    path.write_text("loops:\n  max_per_node: 5\n")
    following = asyncio.create_task(watch.follow(timedelta(milliseconds=10), changed))
    async with asyncio.timeout(10):  # a hang guard
        while not taken:
            await asyncio.sleep(0.01)
    following.cancel()

    assert taken == [read_policy(path).version]
    assert "could not be read again" in caplog.text
