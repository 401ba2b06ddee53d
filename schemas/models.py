"""pydantic models that validate at the edge and mirror the Avro schemas (a test proves it)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shipledger.schemas.fields import apply_aliases

EventType = Literal["started", "succeeded", "failed", "rolled_back", "cancelled"]
DeploymentKind = Literal[
    "release", "hotfix", "config_change", "schema_migration", "rollback", "emergency_patch"
]
Trigger = Literal["automated", "manual"]
DeploymentStatus = Literal["in_progress", "succeeded", "failed", "rolled_back", "cancelled"]
Severity = Literal["info", "low", "medium", "high", "critical"]

EVENT_TYPES: tuple[str, ...] = get_args(EventType)
KINDS: tuple[str, ...] = get_args(DeploymentKind)

_SHA_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
#: Fields a deployment event cannot do without (besides the ids the emitter fills in).
MANDATORY_METADATA = ("service", "environment", "commit_sha", "actor")


def new_id() -> str:
    """A new random id (UUID4, hex with dashes)."""
    return str(uuid.uuid4())


def utcnow() -> datetime:
    """Now, timezone-aware UTC, at millisecond precision (what Avro timestamp-millis keeps)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class Model(BaseModel):
    """Base of every contract model: strict fields, immutable, strings stripped."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    def to_avro(self) -> dict[str, Any]:
        """The dict fastavro writes for this model's schema."""
        return self.model_dump(mode="python")


def aware(value: datetime) -> datetime:
    """A timezone-aware timestamp in UTC at millisecond precision; naive times are refused."""
    if value.tzinfo is None:
        raise ValueError("timestamp needs a time zone (e.g. 2026-11-26T10:00:00Z)")
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def full_sha(value: str) -> str:
    """A full commit SHA (40 hex, or 64 for SHA-256 repositories), lower-cased."""
    value = value.lower()
    if not _SHA_RE.match(value):
        raise ValueError("must be a full commit SHA (40 hex characters, or 64 for SHA-256)")
    return value


def sha256_digest(value: str) -> str:
    """`sha256:<64 hex>`, lower-cased; a bare 64-hex digest gets its `sha256:` prefix."""
    value = value.lower()
    if re.fullmatch(r"[0-9a-f]{64}", value):
        value = f"sha256:{value}"
    if not _DIGEST_RE.match(value):
        raise ValueError("must be a sha256 digest: sha256:<64 hex characters>")
    return value


def drop_blank(data: Any) -> Any:
    """Empty strings (unset CI variables, blank form fields) mean "absent", not a value."""
    if isinstance(data, dict):
        return {k: v for k, v in data.items() if not (isinstance(v, str) and not v.strip())}
    return data


class DeploymentEvent(Model):
    """One stage of one deployment, as reported by a CI/CD system (schema DeploymentEvent)."""

    event_id: str = Field(default_factory=new_id, min_length=1, max_length=128)
    deployment_id: str = Field(min_length=1, max_length=128)
    event_type: EventType
    kind: DeploymentKind = "release"
    service: str = Field(min_length=1, max_length=200)
    environment: str = Field(min_length=1, max_length=100)
    region: str | None = None
    tenant: str = Field(default="default", min_length=1, max_length=100)
    repository: str | None = None
    commit_sha: str
    version: str | None = None
    artifact_name: str | None = None
    artifact_digest: str | None = None
    actor: str = Field(min_length=1, max_length=200)
    trigger: Trigger = "automated"
    pipeline_provider: str | None = None
    pipeline_run_id: str | None = None
    pipeline_run_url: str | None = None
    pipeline_stage: str | None = None
    change_id: str | None = None
    exit_code: int | None = None
    duration_ms: int | None = Field(default=None, ge=0)
    occurred_at: datetime = Field(default_factory=utcnow)
    attributes: dict[str, str] = Field(default_factory=dict)
    # Version 2
    source: str | None = None
    team: str | None = None
    rollback_of: str | None = None
    approvers: list[str] = Field(default_factory=list)
    pull_requests: list[str] = Field(default_factory=list)
    provenance_url: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = apply_aliases(data, known=cls.model_fields)
        return drop_blank(data)

    @field_validator("commit_sha")
    @classmethod
    def _sha(cls, value: str) -> str:
        return full_sha(value)

    @field_validator("artifact_digest")
    @classmethod
    def _digest(cls, value: str | None) -> str | None:
        return None if value is None else sha256_digest(value)

    @field_validator("occurred_at")
    @classmethod
    def _occurred(cls, value: datetime) -> datetime:
        return aware(value)


class DeploymentRecord(Model):
    """Normalized, correlated state of one deployment after an event (schema DeploymentRecord)."""

    record_id: str
    deployment_id: str
    seq: int = Field(ge=1)
    status: DeploymentStatus
    kind: str
    service: str
    environment: str
    environment_raw: str
    region: str | None = None
    tenant: str
    repository: str | None = None
    commit_sha: str
    version: str | None = None
    artifact_name: str | None = None
    artifact_digest: str | None = None
    actor: str
    trigger: str
    pipeline_provider: str | None = None
    pipeline_run_url: str | None = None
    change_id: str | None = None
    started_at: datetime
    finished_at: datetime | None = None
    duration_ms: int | None = None
    event_count: int = Field(ge=1)
    last_event_id: str
    last_event_type: str
    alert_rules: list[str] = Field(default_factory=list)
    policy_version: str
    updated_at: datetime = Field(default_factory=utcnow)
    # Version 2
    team: str | None = None
    source: str | None = None
    rollback_of: str | None = None
    approvers: list[str] = Field(default_factory=list)
    pull_requests: list[str] = Field(default_factory=list)
    provenance_url: str | None = None


class Alert(Model):
    """A policy finding about one deployment (schema Alert)."""

    alert_id: str
    rule: str
    severity: Severity
    message: str
    evidence: dict[str, str] = Field(default_factory=dict)
    policy_version: str
    deployment_id: str
    event_id: str
    tenant: str
    service: str
    environment: str
    region: str | None = None
    actor: str
    occurred_at: datetime
    detected_at: datetime = Field(default_factory=utcnow)
