"""pydantic models of the event families beside deployments (change, source, artifact, signal,
catalog), mirroring their Avro schemas field for field (a test proves it).

Every family event starts with the same fields: `event_id`, `tenant`, `region`, `occurred_at`,
`source` (ingest channel) and `attributes`. Errors name the field and the reason: SHAs must be
full, digests `sha256:<64 hex>`, timestamps timezone-aware (and inside the edge's time window),
enums one of their symbols, integers within their Avro type. The string rules are the base
`Model`'s, shared with deployments: names and ids (`Name`) hold no control character, every
other string no control character but tab, LF and CR (see `shipledger.schemas.models`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from shipledger.schemas.models import (
    DIGEST_PATTERN,
    SHA_PATTERN,
    AvroInt,
    InputModel,
    Model,
    Name,
    aware,
    event_time,
    full_sha,
    new_id,
    sha256_digest,
    unchanged_on,
    utcnow,
)

ChangeState = Literal[
    "opened", "approved", "rejected", "scheduled", "implemented", "closed", "cancelled"
]
ApprovalDecision = Literal["approved", "rejected"]
SourceEventKind = Literal["push", "tag", "pull_request_merged", "release_published"]
ArtifactEventKind = Literal["published"]
ArtifactAction = Literal["published", "deleted", "retention_deleted"]
SignalKind = Literal[
    "incident_opened", "incident_resolved", "alert_fired", "alert_resolved", "pipeline_finished"
]
CatalogEntity = Literal["service", "environment"]
CatalogAction = Literal["created", "modified", "removed"]


class FamilyEvent(InputModel):
    """The fields every family event starts with."""

    event_id: Name = Field(default_factory=new_id, min_length=1, max_length=128)
    tenant: Name = Field(default="default", min_length=1, max_length=100)
    region: Name | None = None
    occurred_at: datetime = Field(default_factory=utcnow)
    source: Name | None = None
    attributes: dict[str, str] = Field(default_factory=dict)

    @field_validator("occurred_at")
    @classmethod
    def _occurred(cls, value: datetime, info: ValidationInfo) -> datetime:
        return event_time(value, info)


#: The `source` of a ChangeEvent that shipledger's approvals route recorded
#: (`POST /v1/approvals`): it carries one verified approval (`groups`, `verified_by`), and its
#: `state` is what the approver saw, not a new revision of the request. Only that route may
#: write such an event or an approval with `groups` or `verified_by`.
APPROVAL_SOURCE = "approval"


class Approval(Model):
    """One approval decision on a change request (Avro record Approval)."""

    approver: Name = Field(min_length=1)
    decision: ApprovalDecision
    decided_at: datetime
    # Version 2
    groups: list[Name] = Field(default_factory=list)
    verified_by: Name | None = None
    comment: str | None = None

    @property
    def verified(self) -> bool:
        """Whether shipledger verified the approver (as opposed to a change system's report)."""
        return bool(self.groups) or self.verified_by is not None

    @field_validator("decided_at")
    @classmethod
    def _decided(cls, value: datetime, info: ValidationInfo) -> datetime:
        return event_time(value, info)


class ChangeEvent(FamilyEvent):
    """A change request as the change-management system reported it (schema ChangeEvent)."""

    change_id: Name = Field(min_length=1, max_length=128)
    system: Name = Field(min_length=1, max_length=100)
    state: ChangeState
    title: str | None = None
    risk: Name | None = None
    services: list[Name] = Field(default_factory=list)
    environments: list[Name] = Field(default_factory=list)
    planned_start: datetime | None = None
    planned_end: datetime | None = None
    approvals: list[Approval] = Field(default_factory=list)
    url: str | None = None
    actor: Name | None = None
    # Version 2
    requested_by: Name | None = None

    @field_validator("planned_start", "planned_end")
    @classmethod
    def _planned(cls, value: datetime | None) -> datetime | None:
        return None if value is None else aware(value)

    @model_validator(mode="after")
    def _window(self) -> ChangeEvent:
        if self.planned_start and self.planned_end and self.planned_end < self.planned_start:
            raise ValueError("planned_end is before planned_start")
        return self


class SourceEvent(FamilyEvent):
    """A push, tag, merged pull request or published release (schema SourceEvent)."""

    kind: SourceEventKind
    repository: Name = Field(min_length=1)
    ref: Name | None = None
    commit_sha: str | None = None
    previous_sha: str | None = None
    commit_shas: list[str] = Field(default_factory=list)
    pull_request_number: AvroInt | None = Field(default=None, ge=1)
    pull_request_title: str | None = None
    pull_request_url: str | None = None
    author: Name | None = None
    merged_by: Name | None = None
    release_tag: Name | None = None
    url: str | None = None
    #: Pushed commit SHA -> the paths it touched (schema v2; monorepo service filter).
    changed_paths: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("commit_sha", "previous_sha")
    @classmethod
    @unchanged_on(SHA_PATTERN)
    def _sha(cls, value: str | None) -> str | None:
        return None if value is None else full_sha(value)

    @field_validator("commit_shas")
    @classmethod
    @unchanged_on(SHA_PATTERN)
    def _shas(cls, value: list[str]) -> list[str]:
        out = []
        for i, sha in enumerate(value):
            try:
                out.append(full_sha(sha))
            except ValueError as exc:
                raise ValueError(f"item {i} ({sha!r}) {exc}") from None
        return out


class ArtifactEvent(FamilyEvent):
    """A published build artifact, or its deletion from a registry (schema ArtifactEvent)."""

    kind: ArtifactEventKind = "published"
    artifact_name: Name = Field(min_length=1)
    version: Name | None = None
    digest: str | None = None
    repository: Name | None = None
    commit_sha: str | None = None
    builder: Name | None = None
    url: str | None = None
    # Version 2
    provenance_url: str | None = None
    action: ArtifactAction = "published"
    registry: Name | None = None

    @field_validator("digest")
    @classmethod
    @unchanged_on(DIGEST_PATTERN)
    def _digest(cls, value: str | None) -> str | None:
        return None if value is None else sha256_digest(value)

    @field_validator("commit_sha")
    @classmethod
    @unchanged_on(SHA_PATTERN)
    def _sha(cls, value: str | None) -> str | None:
        return None if value is None else full_sha(value)


#: Attributes of a signal that is a drift report (`processors.drift`, docs/verification.md):
#: the tool that found it (`terraform`, `argocd`), and the drifting resources as a JSON list
#: of `{"address", "kind", "actions"}` objects.
DRIFT_TOOL = "drift.tool"
DRIFT_RESOURCES = "drift.resources"
#: The name of the synthetic check a `pipeline_finished` signal reports (Checkly, ...).
CHECK_NAME = "check.name"


class SignalEvent(FamilyEvent):
    """An incident, alert or pipeline outcome (schema SignalEvent)."""

    kind: SignalKind
    service: Name | None = None
    environment: Name | None = None
    severity: Name | None = None
    title: str | None = None
    external_id: Name | None = None
    deployment_id: Name | None = None
    outcome: Name | None = None
    url: str | None = None


class CatalogEvent(FamilyEvent):
    """A service or environment catalog entry changed (schema CatalogEvent)."""

    entity: CatalogEntity
    action: CatalogAction
    name: Name = Field(min_length=1, max_length=200)
    owner_team: Name | None = None
    tier: Name | None = None
    repository: Name | None = None
    dependencies: list[Name] = Field(default_factory=list)
    url: str | None = None
    application: Name | None = None
