"""Builders for the event-contract families (HELPERS.md), so every mapper emits the same keys.

Each returns ``(family, fields)`` without the envelope (`event_id`, `tenant`, `source`), which
`dispatch` adds. Timestamps are ISO-8601 strings; the family models parse them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from shipledger.schemas.family_models import DRIFT_RESOURCES, DRIFT_TOOL

Event = tuple[str, dict[str, Any]]
EventType = Literal["started", "succeeded", "failed", "rolled_back", "cancelled"]
SourceKind = Literal["push", "tag", "pull_request_merged", "release_published"]
CatalogAction = Literal["created", "modified", "removed"]
ArtifactAction = Literal["published", "deleted", "retention_deleted"]
SignalKind = Literal[
    "incident_opened", "incident_resolved", "alert_fired", "alert_resolved", "pipeline_finished"
]


def deployment(
    *,
    deployment_id: str,
    event_type: EventType,
    service: str,
    environment: str,
    commit_sha: str | None,
    actor: str,
    occurred_at: str,
    kind: str = "release",
    trigger: Literal["automated", "manual"] = "automated",
    repository: str | None = None,
    version: str | None = None,
    artifact_name: str | None = None,
    artifact_digest: str | None = None,
    region: str | None = None,
    pipeline_provider: str | None = None,
    pipeline_run_id: str | None = None,
    pipeline_run_url: str | None = None,
    pipeline_stage: str | None = None,
    change_id: str | None = None,
    duration_ms: int | None = None,
    rollback_of: str | None = None,
    attributes: Mapping[str, str | None] | None = None,
) -> Event:
    """A DeploymentEvent (family `deployment`). `commit_sha` None: the provider cannot report
    it (a stock CDEvents service event); the event declares it in `missing_metadata`, and is
    recorded and flagged instead of refused."""
    return "deployment", {
        "deployment_id": deployment_id,
        "event_type": event_type,
        "kind": kind,
        "service": service,
        "environment": environment,
        "region": region,
        "repository": repository,
        "commit_sha": commit_sha,
        "version": version,
        "artifact_name": artifact_name,
        "artifact_digest": artifact_digest,
        "actor": actor,
        "trigger": trigger,
        "pipeline_provider": pipeline_provider,
        "pipeline_run_id": pipeline_run_id,
        "pipeline_run_url": pipeline_run_url,
        "pipeline_stage": pipeline_stage,
        "change_id": change_id,
        "duration_ms": duration_ms,
        "rollback_of": rollback_of,
        "occurred_at": occurred_at,
        "attributes": _attrs(attributes),
        "missing_metadata": ["commit_sha"] if commit_sha is None else [],
    }


def source(
    *,
    kind: SourceKind,
    repository: str,
    occurred_at: str,
    commit_sha: str | None,
    ref: str | None = None,
    previous_sha: str | None = None,
    commit_shas: list[str] | None = None,
    pull_request_number: int | None = None,
    pull_request_title: str | None = None,
    pull_request_url: str | None = None,
    author: str | None = None,
    merged_by: str | None = None,
    release_tag: str | None = None,
    url: str | None = None,
    attributes: Mapping[str, str | None] | None = None,
    changed_paths: Mapping[str, list[str]] | None = None,
) -> Event:
    """A SourceEvent (family `source`)."""
    return "source", {
        "kind": kind,
        "repository": repository,
        "ref": ref,
        "commit_sha": commit_sha,
        "previous_sha": previous_sha,
        "commit_shas": commit_shas or [],
        "pull_request_number": pull_request_number,
        "pull_request_title": pull_request_title,
        "pull_request_url": pull_request_url,
        "author": author,
        "merged_by": merged_by,
        "release_tag": release_tag,
        "url": url,
        "region": None,
        "occurred_at": occurred_at,
        "attributes": _attrs(attributes),
        "changed_paths": dict(changed_paths or {}),
    }


def artifact(
    *,
    artifact_name: str,
    occurred_at: str,
    action: ArtifactAction = "published",
    version: str | None = None,
    digest: str | None = None,
    repository: str | None = None,
    commit_sha: str | None = None,
    builder: str | None = None,
    url: str | None = None,
    registry: str | None = None,
    provenance_url: str | None = None,
    attributes: Mapping[str, str | None] | None = None,
) -> Event:
    """An ArtifactEvent (family `artifact`): a build published, or a registry's deletion."""
    return "artifact", {
        "kind": "published",
        "action": action,
        "artifact_name": artifact_name,
        "version": version,
        "digest": digest,
        "repository": repository,
        "commit_sha": commit_sha,
        "builder": builder,
        "url": url,
        "registry": registry,
        "provenance_url": provenance_url,
        "region": None,
        "occurred_at": occurred_at,
        "attributes": _attrs(attributes),
    }


def signal(
    *,
    kind: SignalKind,
    occurred_at: str,
    service: str | None = None,
    environment: str | None = None,
    severity: str | None = None,
    title: str | None = None,
    external_id: str | None = None,
    deployment_id: str | None = None,
    outcome: str | None = None,
    url: str | None = None,
    attributes: Mapping[str, str | None] | None = None,
) -> Event:
    """A SignalEvent (family `signal`)."""
    return "signal", {
        "kind": kind,
        "service": service,
        "environment": environment,
        "severity": severity,
        "title": title,
        "external_id": external_id,
        "deployment_id": deployment_id,
        "outcome": outcome,
        "url": url,
        "region": None,
        "occurred_at": occurred_at,
        "attributes": _attrs(attributes),
    }


def drift_report(
    *,
    tool: str,
    service: str,
    environment: str,
    occurred_at: str,
    resources: Sequence[Mapping[str, str]],
    url: str | None = None,
    attributes: Mapping[str, str | None] | None = None,
) -> Event:
    """A drift report (docs/verification.md): a SignalEvent `alert_fired` from `tool` with
    the drifting `resources` (`address`, `kind`, `actions`), which the processors link to
    the deployment that left them (`config_drift`)."""
    return signal(
        kind="alert_fired",
        occurred_at=occurred_at,
        service=service,
        environment=environment,
        severity="warning",
        title=f"configuration drift: {len(resources)} resource(s) differ from code",
        url=url,
        attributes={
            **(attributes or {}),
            DRIFT_TOOL: tool,
            DRIFT_RESOURCES: json.dumps([dict(r) for r in resources], sort_keys=True),
        },
    )


def catalog(
    *,
    entity: Literal["service", "environment"],
    action: CatalogAction,
    name: str,
    occurred_at: str,
    url: str | None = None,
    attributes: Mapping[str, str | None] | None = None,
) -> Event:
    """A CatalogEvent (family `catalog`)."""
    return "catalog", {
        "entity": entity,
        "action": action,
        "name": name,
        "owner_team": None,
        "tier": None,
        "repository": None,
        "dependencies": [],
        "url": url,
        "region": None,
        "occurred_at": occurred_at,
        "attributes": _attrs(attributes),
    }


def _attrs(attributes: Mapping[str, str | None] | None) -> dict[str, str]:
    # Absent values are dropped: attributes are map<string,string>, never null.
    return {k: v for k, v in (attributes or {}).items() if v is not None}
