"""The processing chain for one raw message, pure: decode → validate → normalize → judge →
correlate. The Faust agent wraps it with Kafka I/O and state; tests drive it directly."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from shipledger.processors.correlate import correlate
from shipledger.processors.rules import Subject, judge
from shipledger.schemas.models import Alert, DeploymentEvent, DeploymentRecord, utcnow
from shipledger.schemas.policy import Policy
from shipledger.schemas.taxonomy import normalize_environment
from shipledger.schemas.validation import Rejected

_ALERT_NS = uuid.UUID("5f1e9c1a-8d0b-4c7e-9a51-6a2b7c3d4e5f")


@dataclass(frozen=True)
class StepResult:
    """What one event produces: the deployment's new record and any alerts."""

    event: DeploymentEvent
    record: DeploymentRecord
    alerts: list[Alert]


def alert_id(event_id: str, rule: str) -> str:
    """Deterministic alert id: one alert per (event, rule), so replays deduplicate."""
    return str(uuid.uuid5(_ALERT_NS, f"{event_id}/{rule}"))


def process(
    event: DeploymentEvent,
    previous: DeploymentRecord | None,
    policy: Policy,
    now: datetime | None = None,
) -> StepResult:
    """Normalize, judge (first event of a deployment only) and correlate one event."""
    now = now or utcnow()
    try:
        env = normalize_environment(event.environment, event.region)
    except ValueError as exc:
        raise Rejected(str(exc), "environment") from exc
    alerts: list[Alert] = []
    if previous is None:
        rules = policy.rules_for(event.tenant, event.kind)
        subject = Subject(
            environment=env.name,
            kind=event.kind,
            change_id=event.change_id,
            occurred_at=event.occurred_at,
            service=event.service,
            tenant=event.tenant,
            environment_known=env.known,
            missing_metadata=tuple(event.missing_metadata),
        )
        alerts = [
            Alert(
                alert_id=alert_id(event.event_id, f.rule),
                rule=f.rule,
                severity=rules.severities.get(f.rule, "medium"),
                message=f.message,
                evidence=f.evidence,
                policy_version=policy.full_version,
                deployment_id=event.deployment_id,
                event_id=event.event_id,
                tenant=event.tenant,
                service=event.service,
                environment=env.name,
                region=env.region,
                actor=event.actor,
                occurred_at=event.occurred_at,
                detected_at=now,
            )
            for f in judge(subject, rules)
        ]
    correlated = correlate(previous, event, env, policy.full_version, [a.rule for a in alerts], now)
    return StepResult(event, correlated.record, alerts)
