"""The search attributes every remediation carries, so operators can find it in the UI and CLI.

Register them once per namespace (`gpuheal worker` does it when it may; the dev server gets them on
its command line): `temporal operator search-attribute create --name GpuhealNode --type Keyword` …
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

NODE = SearchAttributeKey.for_keyword("GpuhealNode")
PHASE = SearchAttributeKey.for_keyword("GpuhealPhase")
XID = SearchAttributeKey.for_int("GpuhealXid")
ACTION = SearchAttributeKey.for_keyword("GpuhealAction")
GPUS = SearchAttributeKey.for_keyword_list("GpuhealGpu")

ALL = (NODE, PHASE, XID, ACTION, GPUS)
