"""Validation and conversion on the intake's hot path: what they skip must not change what they decide."""

from __future__ import annotations

import uuid

import pytest

from gpuheal.agents.intake import IntakeLimits
from gpuheal.agents.intake.convert import to_domain
from gpuheal.agents.intake.validate import Rejected, validate
from gpuheal.domain.health import HealthEvent
from gpuheal.protos import health_event_pb2 as pb
from tests.agents.intake.test_intake import xid_event

LIMITS = IntakeLimits()


@pytest.mark.parametrize(
    "event",
    [
        xid_event(),
        xid_event(id="", recommendedAction=pb.CUSTOM, customRecommendedAction="drain-and-ticket"),
        xid_event(message="é" * 5_000, processingStrategy=pb.UNSPECIFIED, recommendedAction=77),
    ],
)
def test_a_converted_event_is_what_validating_it_would_give(event: pb.HealthEvent) -> None:
    converted = to_domain(event, LIMITS)
    assert HealthEvent.model_validate(converted.model_dump()) == converted
    assert HealthEvent.model_validate_json(converted.model_dump_json()) == converted


def test_fresh_ids_are_distinct_random_uuids() -> None:
    """Random, not a counter: an id that could be told in advance could be taken first by another
    local client, and the real event dropped as a repeat."""
    ids = [uuid.UUID(to_domain(xid_event(id=""), LIMITS).id) for _ in range(1_000)]
    assert len(set(ids)) == len(ids)
    assert {event_id.version for event_id in ids} == {4}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        # Few characters, many bytes: a name over its limit in a small event.
        ({"checkName": "é" * 129}, "events[0].checkName is 258 bytes; at most 256 are accepted"),
        ({"nodeName": "n" * 254, "message": "é" * 3_000}, "events[0].nodeName is 254 bytes; at most 253 are accepted"),
    ],
)
def test_a_name_over_its_limit_is_refused_however_long_the_message(fields: dict[str, object], expected: str) -> None:
    with pytest.raises(Rejected) as caught:
        validate(pb.HealthEvents(events=[xid_event(**fields)]), LIMITS)
    assert caught.value.detail == expected


def test_a_long_message_in_many_bytes_is_no_reason_to_refuse() -> None:
    validate(pb.HealthEvents(events=[xid_event(message="é" * 3_000, checkName="c" * 256)]), LIMITS)
