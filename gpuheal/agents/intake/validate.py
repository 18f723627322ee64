"""The intake rules a PlatformConnector request must pass before any of its events is accepted.

A request is checked as a whole: one bad event rejects the batch, so a sender never has to work
out which half of its request went through. Problems name the offending field by its wire name
and the event's index (`events[2].nodeName is required`), as a sender's logs need it.

The limits keep what one event costs bounded (each GPU it names is a Device API write, and its
fault must fit one Temporal payload). Names and lists are refused over their limit, because cutting
them would change what they mean; free text (the message, metadata values) is cut instead, by
`convert`, so an event with a long message still starts its remediation.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from gpuheal.domain.faults import MAX_MESSAGE_BYTES
from gpuheal.domain.truncate import truncate
from gpuheal.protos import health_event_pb2 as pb

# The range google.protobuf.Timestamp allows: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799
# Enough problems for a sender to see a pattern, few enough to keep the status message readable.
_MAX_REPORTED = 5
# Kubernetes node names are DNS-1123 subdomains: at most 253 characters.
NODE_NAME_MAX_BYTES = 253
# How much of a refused name an error message repeats.
_SHOWN_BYTES = 96


@dataclass(frozen=True, slots=True)
class IntakeLimits:
    """How much one request and one event may carry (the README's limits table lists them).

    `max_message_bytes` bounds the whole request and is enforced by gRPC itself (see the server).
    """

    max_events: int = 1_000
    max_message_bytes: int = 4 * 1024 * 1024
    # Per event, refused above: GPUs and other entities named, error codes, metadata entries.
    max_entities: int = 64
    max_error_codes: int = 64
    max_metadata_entries: int = 64
    # Per name (id, agent, componentClass, checkName, customRecommendedAction, entity types and
    # values, error codes, metadata keys), refused above. nodeName follows Kubernetes (253).
    max_name_bytes: int = 256
    # Free text, cut above with a marker: the message (as far as a fault carries it) and each metadata value.
    max_text_bytes: int = MAX_MESSAGE_BYTES
    max_metadata_value_bytes: int = 4 * 1024
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
        if found := event_problems(event, limits):
            problems.extend(f"events[{index}].{problem}" for problem in found)
            if len(problems) >= _MAX_REPORTED:
                break
    if problems:
        shown = problems[:_MAX_REPORTED]
        more = " (and more)" if len(problems) > _MAX_REPORTED else ""
        raise Rejected(grpc.StatusCode.INVALID_ARGUMENT, "; ".join(shown) + more)


def event_problems(event: pb.HealthEvent, limits: IntakeLimits) -> list[str]:
    """What is wrong with one event, each problem starting with the field's wire name."""
    problems = _size_problems(event, limits)
    if not event.nodeName.strip():
        problems.append("nodeName is required")
    elif limits.node is not None and event.nodeName != limits.node:
        problems.append(f"nodeName {truncate(event.nodeName, _SHOWN_BYTES)!r} is not this agent's node {limits.node!r}")
    if event.recommendedAction == pb.CUSTOM and not event.customRecommendedAction.strip():
        problems.append("customRecommendedAction is required when recommendedAction is CUSTOM")
    if event.HasField("generatedTimestamp"):
        stamp = event.generatedTimestamp
        if not _MIN_SECONDS <= stamp.seconds <= _MAX_SECONDS or not 0 <= stamp.nanos <= 999_999_999:
            problems.append("generatedTimestamp is out of range")
    return problems


def _size_problems(event: pb.HealthEvent, limits: IntakeLimits) -> list[str]:
    """The names and lists of the event that are over their limits.

    A list over its limit is reported by its length alone: its entries (there may be very many)
    are not looked at.
    """
    problems: list[str] = []
    entities, codes, entries = len(event.entitiesImpacted), len(event.errorCode), len(event.metadata)
    # Every name's UTF-8 bytes are part of the event's encoding, whose size protobuf computes in C;
    # the message is free text, and its length in characters is at most its size in bytes. So an
    # event whose encoding without its message is within the smallest name limit has no name over
    # its limit, and its names need not be looked at one by one (most events are a few hundred bytes).
    if (
        event.ByteSize() - len(event.message) <= min(NODE_NAME_MAX_BYTES, limits.max_name_bytes)
        and entities <= limits.max_entities
        and codes <= limits.max_error_codes
        and entries <= limits.max_metadata_entries
    ):
        return problems

    def name(field: str, value: str, most: int = limits.max_name_bytes) -> None:
        size = len(value.encode())
        if size > most:
            problems.append(f"{field} is {size} bytes; at most {most} are accepted")

    def within(field: str, count: int, most: int) -> bool:
        if count > most:
            problems.append(f"{field} has {count} entries; at most {most} are accepted")
        return count <= most

    name("nodeName", event.nodeName, NODE_NAME_MAX_BYTES)
    for field in ("id", "agent", "componentClass", "checkName", "customRecommendedAction"):
        name(field, getattr(event, field))
    if within("entitiesImpacted", entities, limits.max_entities):
        for index, entity in enumerate(event.entitiesImpacted):
            name(f"entitiesImpacted[{index}].entityType", entity.entityType)
            name(f"entitiesImpacted[{index}].entityValue", entity.entityValue)
    if within("errorCode", codes, limits.max_error_codes):
        for index, code in enumerate(event.errorCode):
            name(f"errorCode[{index}]", code)
    if within("metadata", entries, limits.max_metadata_entries):
        for key in event.metadata:
            name(f"metadata key {truncate(key, _SHOWN_BYTES)!r}", key)
    return problems
