"""The search attributes every remediation carries, so operators can find it in the UI and CLI.

Register them once per namespace (`gpuheal worker` does it when it may; the dev server gets them on
its command line): `temporal operator search-attribute create --name GpuhealNode --type Keyword` …
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeKey, SearchAttributeUpdate

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


class Published:
    """How a run upserts its search attributes.

    A run begun under gpuheal 0.2.0 or later (`batched`, gpuheal.workflows.patches) gathers what it
    sets and upserts only the attributes whose values changed, in one command once the activation's
    code has run (the handlers of its signals and Updates, the run until it waits again), and before
    the run's last command (`flush`). A run begun before upserts all it is given at every call, as its
    recorded history has it.

    A run begun under 0.3.0 or later (`across_local_steps`) also holds that upsert while one of its
    local steps runs (`local_step`): a local activity's result starts another activation within the
    same workflow task, and all the commands of a task become visible together, so an upsert before
    the step would show nobody anything the one after it does not. What a workflow task changed goes
    out in one upsert, once the run waits on anything else (an activity, a timer, a signal or an
    Update, a person). A local step that outlives the workflow task's timeout is heartbeated by
    sdk-core (it completes the task and takes another): the attributes set before the step are then
    upserted only when it ends, as are those set before a step that retries on a timer. Acceptable:
    gpuheal's local steps are short calls, and the phase shown is the one before the step.
    """

    def __init__(self) -> None:
        self.batched = False
        self._across_local_steps = False
        self._local_steps = 0
        self._upserted: dict[str, object] = {}
        self._pending: dict[str, SearchAttributeUpdate[Any]] = {}
        self._flusher: asyncio.Task[None] | None = None

    def begin(self, *, batched: bool, across_local_steps: bool) -> None:
        """Called first in the run: a batched run counts the attributes its start set as upserted,
        so it upserts none of them again unchanged."""
        self.batched = batched
        self._across_local_steps = across_local_steps
        if batched:
            self._upserted = {pair.key.name: pair.value for pair in workflow.info().typed_search_attributes}

    @contextlib.contextmanager
    def local_step(self) -> Iterator[None]:
        """Around a local step of the run: the upsert waits until no such step runs."""
        self._local_steps += 1
        try:
            yield
        finally:
            self._local_steps -= 1

    def set(self, updates: Sequence[SearchAttributeUpdate[Any]]) -> None:
        if not self.batched:
            workflow.upsert_search_attributes(updates)
            return
        for update in updates:
            name = update.key.name
            if name in self._upserted and self._upserted[name] == update.value:
                self._pending.pop(name, None)  # back to the value upserted: nothing to tell
            else:
                self._pending[name] = update
        if self._pending and self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_when_run())

    def flush(self) -> None:
        """Upsert what changed since the last upsert, in one command."""
        if not self._pending:
            return
        workflow.upsert_search_attributes(list(self._pending.values()))
        self._upserted.update((name, update.value) for name, update in self._pending.items())
        self._pending.clear()

    async def _flush_when_run(self) -> None:
        # The SDK checks the conditions of waits once no task of the activation is ready to run: by
        # then the code that this activation woke has made its changes. (The SDK runs the jobs of an
        # activation in groups, signals and Updates first: a handler's change that comes with a
        # step's result is upserted before the run's own, in two commands.)
        await workflow.wait_condition(lambda: not (self._across_local_steps and self._local_steps))
        self._flusher = None
        self.flush()
