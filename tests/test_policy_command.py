"""`gpuheal policy schema|check`: the published JSON schema is current and says what the worker accepts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]
from click.testing import CliRunner

from gpuheal.cli import main
from gpuheal.commands.policy import policy_schema
from gpuheal.policyfile import PolicyFileInvalid, read_policy

DOCS = Path(__file__).parent.parent / "docs"
EXAMPLE = DOCS / "policy.example.yaml"


def as_json(document: Any) -> Any:
    """A YAML document as a JSON tool (an editor's YAML support, a CI check) sees it: keys are strings."""
    if isinstance(document, dict):
        return {str(key): as_json(value) for key, value in document.items()}
    if isinstance(document, list):
        return [as_json(item) for item in document]
    return document


def schema_problems(text: str) -> list[str]:
    validator = jsonschema.Draft202012Validator(json.loads((DOCS / "policy.schema.json").read_text()))
    return [error.message for error in validator.iter_errors(as_json(yaml.safe_load(text) or {}))]


def test_the_published_schema_is_the_one_the_worker_checks_by() -> None:
    published = json.loads((DOCS / "policy.schema.json").read_text())

    assert published == policy_schema(), "regenerate: gpuheal policy schema > docs/policy.schema.json"


def test_the_example_policy_is_accepted_by_the_schema_and_by_the_worker() -> None:
    assert schema_problems(EXAMPLE.read_text()) == []
    loaded = read_policy(EXAMPLE)
    assert loaded.document.fleet is not None and loaded.document.fleet.budget.max_per_group == 2


@pytest.mark.parametrize(
    "text",
    [
        "drain:\n  tiemout: PT5M\n",  # a field that does not exist
        "repair:\n  approval_for: [REBOOT]\n",  # an action that does not exist
        "fleet:\n  budget:\n    max_concurrent: 0\n",  # out of range
        "drain:\n  default_mode: Whenever\n",  # not a drain mode
    ],
)
def test_a_file_the_worker_refuses_is_refused_by_the_schema_too(tmp_path: Path, text: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)

    with pytest.raises(PolicyFileInvalid):
        read_policy(path)
    assert schema_problems(text) != []


def test_check_prints_the_version_or_every_problem_with_its_line(tmp_path: Path) -> None:
    good = CliRunner().invoke(main, ["policy", "check", str(EXAMPLE)])
    bad_file = tmp_path / "policy.yaml"
    bad_file.write_text("drain:\n  timeout: PT20M\nloops:\n  max_per_node: -1\n")
    bad = CliRunner().invoke(main, ["policy", "check", str(bad_file)])

    assert good.exit_code == 0, good.output
    assert f"policy {read_policy(EXAMPLE).version}; the fleet's limits come from its fleet section" in good.output
    assert bad.exit_code == 2
    assert f"{bad_file} line 4: loops.max_per_node: Input should be greater than or equal to 0" in bad.output


def test_schema_prints_the_published_schema() -> None:
    printed = CliRunner().invoke(main, ["policy", "schema"])

    assert printed.exit_code == 0
    assert json.loads(printed.output) == json.loads((DOCS / "policy.schema.json").read_text())
