"""The intake rules a PlatformConnector request must pass before any of its events is accepted.

A request is checked as a whole: one bad event rejects the batch, so a sender never has to work
out which half of its request went through. Problems name the offending field by its wire name
and the event's index (`events[2].nodeName is required`), as a sender's logs need it.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.health import ProcessingStrategy
from gpuheal.protos import health_event_pb2 as pb

# The range google.protobuf.Timestamp allows: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799
# Enough problems for a sender to see a pattern, few enough to keep the status message readable.
_MAX_REPORTED = 5

_ACTIONS = frozenset(action.value for action in RecommendedAction)
_STRATEGIES = frozenset(strategy.value for strategy in ProcessingStrategy)


@dataclass(frozen=True, slots=True)
class IntakeLimits:
    """How much one request may carry. Message bytes are enforced by gRPC itself (see the server)."""

    max_events: int = 1_000
    max_message_bytes: int = 4 * 1024 * 1024
    # An agent speaks for its own node: when set, events naming another node are refused, so a
    # process on this node cannot cordon or reboot other nodes through it.
    node: str | None = None


class Rejected(Exception):
    """A request the intake refuses, with the gRPC status code to answer with."""

    def __init__(self, code: grpc.StatusCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def validate(request: pb.HealthEvents, limits: IntakeLimits) -> None:
    """Raise `Rejected` unless every event of the request may be accepted."""
    count = len(request.events)
    if count > limits.max_events:
        raise Rejected(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"request carries {count} events; at most {limits.max_events} are accepted per request",
        )
    problems: list[str] = []
    for index, event in enumerate(request.events):
        problems.extend(f"events[{index}].{problem}" for problem in event_problems(event, limits.node))
        if len(problems) >= _MAX_REPORTED:
            break
    if problems:
        shown = problems[:_MAX_REPORTED]
        more = " (and more)" if len(problems) > _MAX_REPORTED else ""
        raise Rejected(grpc.StatusCode.INVALID_ARGUMENT, "; ".join(shown) + more)


def event_problems(event: pb.HealthEvent, node: str | None = None) -> list[str]:
    """What is wrong with one event, each problem starting with the field's wire name."""
    problems: list[str] = []
    if not event.nodeName.strip():
        problems.append("nodeName is required")
    elif node is not None and event.nodeName != node:
        problems.append(f"nodeName {event.nodeName!r} is not this agent's node {node!r}")
    if event.recommendedAction not in _ACTIONS:
        problems.append(f"recommendedAction has unknown value {event.recommendedAction}")
    elif event.recommendedAction == pb.CUSTOM and not event.customRecommendedAction.strip():
        problems.append("customRecommendedAction is required when recommendedAction is CUSTOM")
    if event.processingStrategy not in _STRATEGIES:
        problems.append(f"processingStrategy has unknown value {event.processingStrategy}")
    if event.HasField("generatedTimestamp"):
        stamp = event.generatedTimestamp
        if not _MIN_SECONDS <= stamp.seconds <= _MAX_SECONDS or not 0 <= stamp.nanos <= 999_999_999:
            problems.append("generatedTimestamp is out of range")
    return problems
