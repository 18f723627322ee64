"""`DiagnosticsHandler`: carries out the diagnostics orders written on the node
(gpuheal.domain.diagnostics): collect a bundle in a private temporary directory, store it as
`<node>/<time>-<order>-<file>`, and answer with where it is. Without a collector or a place to store
(`--diagnostics-to` unset) an order is answered with a failure at once; the worker reboots anyway."""

from __future__ import annotations

import logging
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from gpuheal.agents.diagnostics.collectors import CollectError, Collector
from gpuheal.agents.diagnostics.stores import Store, StoreError
from gpuheal.agents.orders.watcher import report
from gpuheal.domain.diagnostics import DIAGNOSTICS, DiagnosticsOrder, DiagnosticsReport
from gpuheal.domain.node_orders import OrderKind

log = logging.getLogger(__name__)

DISABLED = "diagnostics collection is off on this node's agent (start it with --diagnostics-to DIR or s3://BUCKET)"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class DiagnosticsHandler:
    """Collects with `collector` and keeps the bundle in `store`."""

    def __init__(self, node: str, collector: Collector | None, store: Store | None) -> None:
        self.node = node
        self._collector = collector
        self._store = store
        # How many bundles were collected.
        self.collected = 0

    @property
    def kind(self) -> OrderKind[DiagnosticsOrder, DiagnosticsReport]:
        return DIAGNOSTICS

    async def carry_out(self, order: DiagnosticsOrder) -> DiagnosticsReport:
        if self._collector is None or self._store is None:
            return report(DIAGNOSTICS, order.id, ok=False, detail=DISABLED)
        with tempfile.TemporaryDirectory(prefix="gpuheal-diagnostics-") as scratch:
            try:
                bundle = await self._collector.collect(Path(scratch), self.node, order.reason)
                self.collected += 1
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
                name = f"{_safe(self.node)}/{stamp}-{_safe(order.id)}-{bundle.path.name}"
                size = bundle.path.stat().st_size
                location = await self._store.put(bundle.path, name)
            except (CollectError, StoreError, OSError) as error:
                log.error("diagnostics order %s on %s failed: %s", order.id, self.node, error)
                return report(DIAGNOSTICS, order.id, ok=False, detail=str(error))
        log.info("diagnostics order %s on %s: %s (%d bytes)", order.id, self.node, location, size)
        return report(
            DIAGNOSTICS,
            order.id,
            ok=True,
            detail=f"{bundle.tool} bundle of {size} bytes stored",
            location=location,
            size=size,
            tool=bundle.tool,
        )

    async def answered(self, order: DiagnosticsOrder, answer: DiagnosticsReport) -> None:
        """Nothing follows: the worker reads where the bundle is from the condition."""


def _safe(text: str) -> str:
    """`text` as one path segment or key part: no slashes, no dot-dot, nothing a shell or S3 minds."""
    return _UNSAFE.sub("_", text).strip("._") or "_"
