"""`gpuheal replay`: what a policy would have done with recorded logs, with no cluster.

Recorded kernel logs (one file per node, named after it) or health-event streams go through the
agent's own kernel-log monitor (parser, catalog and XID overrides, flood control), on a virtual clock
taken from the lines' own timestamps (`clock`); the faults it reports go through the remediation's
rules: the fleet governor's budget and breaker (`gpuheal.domain.fleet.choose`), repeat offences
(`gpuheal.domain.history.repeat_offence`) and approvals (`fleet`). Nothing is read from or written to
a cluster or Temporal.
"""

from gpuheal.replay.fleet import NodeReplay, RunReplay, replay
from gpuheal.replay.reading import TimedFault, read_log

__all__ = ["NodeReplay", "RunReplay", "TimedFault", "read_log", "replay"]
