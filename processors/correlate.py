"""Correlation: fold a deployment's events into one record (lifecycle, status, duration). Pure."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any, get_args

from shipledger.processors.trusted import plain, shaped
from shipledger.schemas.models import (
    AVRO_INT_RANGE,
    DeploymentEvent,
    DeploymentRecord,
    DeploymentStatus,
    utcnow,
)
from shipledger.schemas.taxonomy import Environment

#: An event type naming a final status finishes the deployment with that status.
_FINAL_STATUS: dict[str, DeploymentStatus] = {
    status: status for status in get_args(DeploymentStatus) if status != "in_progress"
}
#: What a deployment's first event finds of earlier ones: nothing (the carried fields).
_NOTHING_KNOWN: Mapping[str, Any] = MappingProxyType(
    {
        **dict.fromkeys(
            (
                "region",
                "repository",
                "version",
                "artifact_name",
                "artifact_digest",
                "pipeline_provider",
                "pipeline_run_url",
                "change_id",
                "team",
                "source",
                "rollback_of",
                "provenance_url",
            )
        ),
        "approvers": (),
        "pull_requests": (),
    }
)
_LARGEST_INT = AVRO_INT_RANGE["int"][1]


def correlate(
    previous: DeploymentRecord | None,
    event: DeploymentEvent,
    env: Environment,
    policy_version: str,
    alert_rules: list[str],
    now: datetime | None = None,
) -> dict[str, Any]:
    """The values of the deployment's record after `event`, one for each field (None for
    the enrichment's, `processors.step.enrich`; `record_of` makes the record). Events may
    arrive out of order: a late `started` never reopens a finished deployment, and the
    earliest time seen is the start."""
    now = now or utcnow()
    # The models' values are read from their __dict__, some 60 an event: pydantic's
    # attribute hook (`__getattr__`) keeps CPython from caching attribute reads (~80 ns
    # each, ~20 from the dict).
    given = event.__dict__
    known = _NOTHING_KNOWN if previous is None else previous.__dict__
    occurred: datetime = given["occurred_at"]
    final = _FINAL_STATUS.get(given["event_type"])
    if previous is None:
        started_at = occurred
        status: DeploymentStatus = final or "in_progress"
        finished_at = occurred if final else None
        seq, count, rules = 1, 1, list(alert_rules)
        reported = given["duration_ms"]
    else:
        started_at = min(known["started_at"], occurred)
        status = final or known["status"]
        finished_at = occurred if final else known["finished_at"]
        seq, count = known["seq"] + 1, known["event_count"] + 1
        held = known["alert_rules"]
        rules = held + [r for r in alert_rules if r not in held]
        reported = given["duration_ms"]
        if reported is None:
            reported = known["duration_ms"]
    # Start to finish when both are known apart; else what the pipeline reported (a
    # deployment seen only through its final event). Never a figure derived from a partial view.
    duration = reported
    if finished_at is not None and finished_at > started_at:
        duration = int((finished_at - started_at).total_seconds() * 1000)
    return {
        "record_id": given["event_id"],
        "deployment_id": given["deployment_id"],
        "seq": seq,
        "status": status,
        "kind": given["kind"],
        "service": given["service"],
        "environment": env.name,
        "environment_raw": given["environment"],
        "region": env.region or known["region"],
        "tenant": given["tenant"],
        "repository": given["repository"] or known["repository"],
        "commit_sha": given["commit_sha"],
        "version": given["version"] or known["version"],
        "artifact_name": given["artifact_name"] or known["artifact_name"],
        "artifact_digest": given["artifact_digest"] or known["artifact_digest"],
        "actor": given["actor"],
        "trigger": given["trigger"],
        "pipeline_provider": given["pipeline_provider"] or known["pipeline_provider"],
        "pipeline_run_url": given["pipeline_run_url"] or known["pipeline_run_url"],
        "change_id": given["change_id"] or known["change_id"],
        "started_at": started_at,
        "finished_at": finished_at,
        "duration_ms": duration,
        "event_count": count,
        "last_event_id": given["event_id"],
        "last_event_type": given["event_type"],
        "alert_rules": rules,
        "policy_version": policy_version,
        "updated_at": now,
        "team": given["team"] or known["team"],
        "source": given["source"] or known["source"],
        "rollback_of": given["rollback_of"] or known["rollback_of"],
        "approvers": list(given["approvers"] or known["approvers"]),
        "pull_requests": list(given["pull_requests"] or known["pull_requests"]),
        "provenance_url": given["provenance_url"] or known["provenance_url"],
        # Enrichment's (`processors.step.enrich`).
        "application": None,
        "tier": None,
        "change_state": None,
        "planned_start": None,
        "planned_end": None,
        "outside_window_s": None,
    }


def record_of(values: dict[str, Any]) -> DeploymentRecord:
    """The record of `values` (`correlate`'s, enriched), validated only when a value made
    outside the validated models they come from is not plain, or a count reaches Avro's int
    range (`processors.trusted`)."""
    if (
        values["event_count"] <= _LARGEST_INT
        and values["seq"] <= _LARGEST_INT
        and plain([values["environment"], values["policy_version"], *values["alert_rules"]])
        and (values["region"] is None or plain([values["region"]]))
    ):
        return shaped(DeploymentRecord, values)
    return DeploymentRecord(**values)
