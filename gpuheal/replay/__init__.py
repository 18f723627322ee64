"""`gpuheal replay`: what a policy would have done with recorded logs, with no cluster.

Recorded kernel logs (one file per node, named after it) go through the agent's own kernel-log
monitor, and health-event streams through the intake's checks, on a virtual clock taken from their
own stamps (`clock`, `reading`); the faults they report go through the remediation's rules (`fleet`):
the governor's budget and breaker, repeat offences, approvals. `play` runs it all in time order.
Nothing is read from or written to a cluster or Temporal.
"""

from gpuheal.replay.fleet import NodeReplay, RunReplay
from gpuheal.replay.play import replay_logs
from gpuheal.replay.reading import HEALTH_EVENTS_SUFFIX, KERNEL_LOG_SUFFIX, UnreadableLog

__all__ = ["HEALTH_EVENTS_SUFFIX", "KERNEL_LOG_SUFFIX", "NodeReplay", "RunReplay", "UnreadableLog", "replay_logs"]
