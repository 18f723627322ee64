"""PlatformConnector events on the wire → the domain's `HealthEvent`.

Runs only on events that passed `validate`. An enum number gpuheal does not know comes from a
monitor newer than gpuheal, and its fault must not be lost: an unknown `recommendedAction` is taken
as UNKNOWN, which quarantines the node when fatal and leaves the repair to a person; an unknown
`processingStrategy` is acted on, with its action (unless NONE) taken as UNKNOWN for the same reason.
Both are logged. Upstream's REMEDIATE is the node's default repair (`action_from_wire`). What the
domain event has no field for (the per-event `version` and the quarantine/drain overrides) is not carried over:
gpuheal's remediation policy decides quarantine and drain, not the sender. Free text over its limit
(the message, metadata values) is cut with a marker (`gpuheal.domain.truncate`), and logged.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC

from gpuheal.agents.intake.validate import IntakeLimits
from gpuheal.domain.actions import RecommendedAction, action_from_wire
from gpuheal.domain.health import Entity, HealthEvent, ProcessingStrategy
from gpuheal.domain.truncate import truncate
from gpuheal.protos import health_event_pb2 as pb

log = logging.getLogger(__name__)


def to_domain(event: pb.HealthEvent, limits: IntakeLimits) -> HealthEvent:
    """The domain event; an empty `id` gets a fresh UUID and UNSPECIFIED becomes EXECUTE_REMEDIATION.

    Built without pydantic's validation: `validate` passed the event and every value below already
    has the field's type (protobuf's strings and bools, the enums, tuples), so validating again
    would only repeat per-field work on the intake's hot path (a test holds the result equal to a
    validated one).
    """
    # Random: an id no one can tell in advance, so no other local client can take a coming event's
    # id first and have the real event dropped as a repeat.
    event_id = event.id or str(uuid.uuid4())
    action, strategy = _action_and_strategy(event_id, event)
    message = _cut(event_id, "message", event.message, limits.max_text_bytes)
    metadata = {
        key: _cut(event_id, f"metadata[{key!r}]", value, limits.max_metadata_value_bytes)
        for key, value in event.metadata.items()
    }
    return HealthEvent.model_construct(
        id=event_id,
        node=event.nodeName.strip(),
        agent=event.agent,
        component_class=event.componentClass,
        check_name=event.checkName,
        is_fatal=event.isFatal,
        is_healthy=event.isHealthy,
        message=message,
        action=action,
        custom_action=event.customRecommendedAction,
        error_codes=tuple(event.errorCode),
        entities=tuple(Entity.model_construct(type=e.entityType, value=e.entityValue) for e in event.entitiesImpacted),
        metadata=metadata,
        generated_at=event.generatedTimestamp.ToDatetime(tzinfo=UTC) if event.HasField("generatedTimestamp") else None,
        strategy=strategy,
    )


def _action_and_strategy(event_id: str, event: pb.HealthEvent) -> tuple[RecommendedAction, ProcessingStrategy]:
    action = action_from_wire(event.recommendedAction)
    if action is None:
        log.warning(
            "event %s: recommendedAction %d is not one gpuheal knows; taken as UNKNOWN (a person decides)",
            event_id,
            event.recommendedAction,
        )
        action = RecommendedAction.UNKNOWN
    try:
        strategy = ProcessingStrategy(event.processingStrategy)
    except ValueError:
        log.warning(
            "event %s: processingStrategy %d is not one gpuheal knows; acted on, its action left to a person",
            event_id,
            event.processingStrategy,
        )
        strategy = ProcessingStrategy.EXECUTE_REMEDIATION
        if action.is_actionable:
            action = RecommendedAction.UNKNOWN
    if strategy is ProcessingStrategy.UNSPECIFIED:
        strategy = ProcessingStrategy.EXECUTE_REMEDIATION
    return action, strategy


def _cut(event_id: str, field: str, text: str, most: int) -> str:
    cut = truncate(text, most)
    if cut is not text:
        log.info("event %s: %s of %d bytes cut to %d", event_id, field, len(text.encode()), len(cut.encode()))
    return cut
