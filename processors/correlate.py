"""Correlation: fold a deployment's events into one record (lifecycle, status, duration). Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import get_args

from shipledger.schemas.models import DeploymentEvent, DeploymentRecord, DeploymentStatus, utcnow
from shipledger.schemas.taxonomy import Environment

#: An event type naming a final status finishes the deployment with that status.
_FINAL_STATUS: dict[str, DeploymentStatus] = {
    status: status for status in get_args(DeploymentStatus) if status != "in_progress"
}


@dataclass(frozen=True)
class Correlated:
    """The record after an event, and whether this was the first event seen of it."""

    record: DeploymentRecord
    first_seen: bool


def correlate(
    previous: DeploymentRecord | None,
    event: DeploymentEvent,
    env: Environment,
    policy_version: str,
    alert_rules: list[str],
    now: datetime | None = None,
) -> Correlated:
    """The deployment's record after `event`. Events may arrive out of order: a late `started`
    never reopens a finished deployment, and the earliest time seen is the start."""
    now = now or utcnow()
    final = _FINAL_STATUS.get(event.event_type)
    if previous is None:
        started_at = event.occurred_at
        status: DeploymentStatus = final or "in_progress"
        finished_at = event.occurred_at if final else None
        seq, count, rules = 1, 1, list(alert_rules)
        reported = event.duration_ms
    else:
        started_at = min(previous.started_at, event.occurred_at)
        status = final or previous.status
        finished_at = event.occurred_at if final else previous.finished_at
        seq, count = previous.seq + 1, previous.event_count + 1
        rules = previous.alert_rules + [r for r in alert_rules if r not in previous.alert_rules]
        reported = event.duration_ms if event.duration_ms is not None else previous.duration_ms
    # Start to finish when both are known apart; else what the pipeline reported (a
    # deployment seen only through its final event). Never a figure derived from a partial view.
    duration = reported
    if finished_at is not None and finished_at > started_at:
        duration = int((finished_at - started_at).total_seconds() * 1000)
    base = previous
    record = DeploymentRecord(
        record_id=event.event_id,
        deployment_id=event.deployment_id,
        seq=seq,
        status=status,
        kind=event.kind,
        service=event.service,
        environment=env.name,
        environment_raw=event.environment,
        region=env.region or (base.region if base else None),
        tenant=event.tenant,
        repository=event.repository or (base.repository if base else None),
        commit_sha=event.commit_sha,
        version=event.version or (base.version if base else None),
        artifact_name=event.artifact_name or (base.artifact_name if base else None),
        artifact_digest=event.artifact_digest or (base.artifact_digest if base else None),
        actor=event.actor,
        trigger=event.trigger,
        pipeline_provider=event.pipeline_provider or (base.pipeline_provider if base else None),
        pipeline_run_url=event.pipeline_run_url or (base.pipeline_run_url if base else None),
        change_id=event.change_id or (base.change_id if base else None),
        started_at=started_at,
        finished_at=finished_at,
        duration_ms=duration,
        event_count=count,
        last_event_id=event.event_id,
        last_event_type=event.event_type,
        alert_rules=rules,
        policy_version=policy_version,
        updated_at=now,
        team=event.team or (base.team if base else None),
        source=event.source or (base.source if base else None),
        rollback_of=event.rollback_of or (base.rollback_of if base else None),
        approvers=event.approvers or (base.approvers if base else []),
        pull_requests=event.pull_requests or (base.pull_requests if base else []),
        provenance_url=event.provenance_url or (base.provenance_url if base else None),
    )
    return Correlated(record, previous is None)
