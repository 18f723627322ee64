"""PlatformConnector events on the wire → the domain's `HealthEvent`.

Runs only on events that passed `validate`, so every enum number is known. What the domain event
has no field for (the per-event `version` and the quarantine/drain overrides) is not carried over:
gpuheal's remediation policy decides quarantine and drain, not the sender.
"""

from __future__ import annotations

import uuid
from datetime import UTC

from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.health import Entity, HealthEvent, ProcessingStrategy
from gpuheal.protos import health_event_pb2 as pb


def to_domain(event: pb.HealthEvent) -> HealthEvent:
    """The domain event; an empty `id` gets a fresh UUID and UNSPECIFIED becomes EXECUTE_REMEDIATION."""
    strategy = ProcessingStrategy(event.processingStrategy)
    if strategy is ProcessingStrategy.UNSPECIFIED:
        strategy = ProcessingStrategy.EXECUTE_REMEDIATION
    return HealthEvent(
        id=event.id or str(uuid.uuid4()),
        node=event.nodeName.strip(),
        agent=event.agent,
        component_class=event.componentClass,
        check_name=event.checkName,
        is_fatal=event.isFatal,
        is_healthy=event.isHealthy,
        message=event.message,
        action=RecommendedAction(event.recommendedAction),
        custom_action=event.customRecommendedAction,
        error_codes=tuple(event.errorCode),
        entities=tuple(Entity(type=e.entityType, value=e.entityValue) for e in event.entitiesImpacted),
        metadata=dict(event.metadata),
        generated_at=event.generatedTimestamp.ToDatetime(tzinfo=UTC) if event.HasField("generatedTimestamp") else None,
        strategy=strategy,
    )
