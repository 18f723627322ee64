"""A monitor newer (or older, or broken) than gpuheal: what the intake makes of what it does not know."""

from __future__ import annotations

import logging

import grpc
import pytest

from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.health import ProcessingStrategy
from gpuheal.protos import health_event_pb2 as pb
from tests.agents.intake.conftest import Intake
from tests.agents.intake.test_intake import xid_event

# NVSentinel's current health_event.proto (data-models/protobufs/health_event.proto) numbers it so.
UPSTREAM_REMEDIATE = 28


async def test_upstreams_remediate_is_the_nodes_default_repair(intake: Intake) -> None:
    await intake.stub.HealthEventOccurredV1(pb.HealthEvents(events=[xid_event(recommendedAction=UPSTREAM_REMEDIATE)]))
    (event,) = intake.sink.events
    assert event.action is RecommendedAction.RESTART_VM
    assert event.needs_remediation
    assert pb.RecommendedAction.Value("REMEDIATE") == UPSTREAM_REMEDIATE


async def test_an_action_gpuheal_does_not_know_is_unknown_and_left_to_a_person(
    intake: Intake, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        await intake.stub.HealthEventOccurredV1(
            pb.HealthEvents(events=[xid_event(id="newer", recommendedAction=42), xid_event(recommendedAction=39)])
        )
    first, second = intake.sink.events
    assert first.action is second.action is RecommendedAction.UNKNOWN
    assert first.needs_remediation  # quarantined, and the repair waits for a person
    assert first.action.needs_person
    assert "event newer: recommendedAction 42 is not one gpuheal knows; taken as UNKNOWN" in caplog.text


async def test_a_strategy_gpuheal_does_not_know_is_acted_on_only_by_a_person(
    intake: Intake, caplog: pytest.LogCaptureFixture
) -> None:
    healthy = xid_event(isFatal=False, isHealthy=True, recommendedAction=pb.NONE, processingStrategy=9)
    with caplog.at_level(logging.WARNING):
        await intake.stub.HealthEventOccurredV1(
            pb.HealthEvents(events=[xid_event(id="odd", processingStrategy=9), healthy])
        )
    fatal, recovered = intake.sink.events
    assert fatal.strategy is ProcessingStrategy.EXECUTE_REMEDIATION
    assert fatal.action is RecommendedAction.UNKNOWN
    assert fatal.needs_remediation and fatal.action.needs_person
    assert (recovered.strategy, recovered.action) == (ProcessingStrategy.EXECUTE_REMEDIATION, RecommendedAction.NONE)
    assert "event odd: processingStrategy 9 is not one gpuheal knows" in caplog.text


async def test_bytes_that_do_not_decode_are_an_invalid_argument(intake: Intake) -> None:
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = intake.channel.unary_unary(
        "/datamodels.PlatformConnector/HealthEventOccurredV1"
    )
    for junk in (b"\xff\xff\xff\xff", b"\x12\x05\x6a\x03\xff\xfe\xfd"):  # corrupt; a nodeName that is not UTF-8
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(junk)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (caught.value.details() or "").startswith("the request is not a valid datamodels.HealthEvents: ")
    assert intake.sink.events == []
    # The server is none the worse for it.
    await intake.stub.HealthEventOccurredV1(pb.HealthEvents(events=[xid_event()]))
    assert len(intake.sink.events) == 1
