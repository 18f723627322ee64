"""`gpuheal policy`: the policy file's JSON schema, and a check of a file before it is deployed."""

from __future__ import annotations

import json

import click
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from gpuheal.domain.policy_document import PolicyDocument
from gpuheal.params import PolicyFile
from gpuheal.policyfile import LoadedPolicy


@click.group()
def policy() -> None:
    """The policy file (YAML) that `gpuheal worker --policy` and `gpuheal agent --policy` read."""


@policy.command()
def schema() -> None:
    """Print the policy file's JSON schema (for editors and CI checks of a ConfigMap)."""
    click.echo(json.dumps(policy_schema(), indent=2))


@policy.command()
@click.argument("file", type=PolicyFile())
def check(file: LoadedPolicy[PolicyDocument]) -> None:
    """Check a policy file as the worker would at start: print its version, or every problem with its
    line (exit 2)."""
    fleet = "its fleet section" if file.document.fleet is not None else "the worker's flags (no fleet section)"
    click.echo(f"{file.path}: policy {file.version}; the fleet's limits come from {fleet}")


def policy_schema() -> dict[str, object]:
    """The JSON schema of the policy file, as published in docs/policy.schema.json."""
    document = PolicyDocument.model_json_schema(schema_generator=_PolicySchema)
    return {**document, "$schema": "https://json-schema.org/draft/2020-12/schema", "title": "gpuheal policy file"}


class _PolicySchema(GenerateJsonSchema):
    """pydantic's schema, with durations as the file may write them: seconds, or ISO 8601."""

    def timedelta_schema(self, schema: core_schema.TimedeltaSchema) -> JsonSchemaValue:
        return {"anyOf": [{"type": "number"}, {"type": "string", "format": "duration"}]}
