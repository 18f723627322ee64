"""The search attributes every remediation carries, so operators can find it in the UI and CLI.

Register them once per namespace (`gpuheal worker` does it when it may; the dev server gets them on
its command line): `temporal operator search-attribute create --name GpuhealNode --type Keyword` …
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeKey

# Passed through like every domain import of the workflow: a second, sandboxed copy of the domain's
# models would make the workflow's HealthBar a different class from the one its requests expect.
with workflow.unsafe.imports_passed_through():
    from gpuheal.domain.remediation_contract import NODE_ATTRIBUTE, PHASE_ATTRIBUTE, PHASE_SINCE_ATTRIBUTE

NODE = SearchAttributeKey.for_keyword(NODE_ATTRIBUTE)
PHASE = SearchAttributeKey.for_keyword(PHASE_ATTRIBUTE)
PHASE_SINCE = SearchAttributeKey.for_datetime(PHASE_SINCE_ATTRIBUTE)
XID = SearchAttributeKey.for_int("GpuhealXid")
ACTION = SearchAttributeKey.for_keyword("GpuhealAction")
GPUS = SearchAttributeKey.for_keyword_list("GpuhealGpu")
# The board serials of the faulty GPUs, where the agent knows them (NVML): a GPU keeps its serial
# when it moves to another machine.
SERIALS = SearchAttributeKey.for_keyword_list("GpuhealGpuSerial")

# How many repairs (GPU resets, reboots) the run asked for: repeat offences count only those runs.
REPAIRS = SearchAttributeKey.for_int("GpuhealRepairs")

# The version of the policy the run decides by (gpuheal.domain.policy_document).
POLICY_VERSION = SearchAttributeKey.for_keyword("GpuhealPolicyVersion")

ALL = (NODE, PHASE, PHASE_SINCE, XID, ACTION, GPUS, SERIALS, REPAIRS, POLICY_VERSION)

# The type names the temporal CLI takes (`--search-attribute NAME=TYPE`, `--type TYPE`).
_CLI_TYPES = {"KEYWORD": "Keyword", "INT": "Int", "KEYWORD_LIST": "KeywordList", "DATETIME": "Datetime"}


def cli_type(key: SearchAttributeKey[Any]) -> str:
    """The temporal CLI's name for the attribute's type."""
    return _CLI_TYPES[key.indexed_value_type.name]
