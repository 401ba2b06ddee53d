"""What the ingest API and the processors' governance logic exchange, and what the gate
records.

The API (`producers/api`: `POST /v1/gate`, `POST /v1/approvals`) does the I/O: it verifies who
asks, reads the change request's events through the ledger's door and publishes what comes
out. The judgement is the processors' (`processors/gate.py`: the stream's own rules, judged
against now), given to the API by whoever wires it (`shipledger up`) as a `Governance`. Both
sides meet here, one floor down: the question, the decision, and what recording an approval
needs to know of the change request.

`GateDecision` mirrors the Avro schema of topic `gate.decisions` (table `gate_decisions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from pydantic import Field, field_validator, model_validator

from shipledger.schemas.family_models import ArtifactEvent, ChangeEvent, ChangeState
from shipledger.schemas.models import (
    Alert,
    DeploymentKind,
    InputModel,
    Model,
    Name,
    Severity,
    Trigger,
    sha256_digest,
)

GateVerdict = Literal["allowed", "blocked", "break_glass"]
#: The rule of the critical alert a break-glass pass raises.
BREAK_GLASS = "break_glass"
#: The rule listing approval requirements the change request does not meet (four eyes).
MISSING_APPROVALS = "missing_approvals"


class GateQuestion(InputModel):
    """What a pipeline asks before deploying (`shipledger gate`, the body of POST /v1/gate)."""

    tenant: Name | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="Tenant; a tenant's token may only ask about its own (the default).",
    )
    service: Name = Field(min_length=1, max_length=200)
    environment: Name = Field(min_length=1, max_length=100)
    change_id: Name | None = Field(default=None, max_length=128)
    kind: DeploymentKind = "release"
    digest: str | None = Field(default=None, description="sha256 digest of the artifact.")
    artifact_name: Name | None = Field(
        default=None, max_length=200, description="Artifact (image, package) to deploy."
    )
    version: Name | None = Field(
        default=None, max_length=200, description="Its version or tag, as the build published it."
    )
    deployment_id: Name | None = Field(default=None, max_length=128)
    region: Name | None = None
    actor: Name = Field(min_length=1, max_length=200, description="Who is about to deploy.")
    trigger: Trigger = "automated"
    emergency: bool = Field(default=False, description="Break-glass: pass, and raise an alert.")
    reason: str | None = Field(default=None, description="Why break-glass (required with it).")
    source: Literal["api", "cli"] = "api"
    attributes: dict[str, str] = Field(default_factory=dict)

    @field_validator("digest")
    @classmethod
    def _digest(cls, value: str | None) -> str | None:
        return None if value is None else sha256_digest(value)

    @model_validator(mode="after")
    def _reason(self) -> GateQuestion:
        if self.emergency and not self.reason:
            raise ValueError("emergency (break-glass) needs a reason")
        if self.reason and not self.emergency:
            raise ValueError("reason is for emergency (break-glass) only")
        return self


class GateReason(Model):
    """One rule that blocks a deployment (Avro record GateReason)."""

    rule: str
    severity: Severity
    message: str
    evidence: dict[str, str] = Field(default_factory=dict)


class GateDecision(Model):
    """A gate's answer as the ledger keeps it (schema GateDecision)."""

    event_id: str
    tenant: str
    region: str | None = None
    occurred_at: datetime
    source: str | None = None
    attributes: dict[str, str] = Field(default_factory=dict)
    service: str
    environment: str
    kind: str
    change_id: str | None = None
    digest: str | None = None
    deployment_id: str | None = None
    actor: str
    trigger: str
    asked_by: str
    decision: GateVerdict
    reasons: list[GateReason] = Field(default_factory=list)
    emergency_reason: str | None = None
    alert_id: str | None = None
    policy_version: str

    @property
    def passes(self) -> bool:
        """Whether the deployment may go ahead (allowed, or break-glass)."""
        return self.decision != "blocked"


@dataclass(frozen=True)
class GateOutcome:
    """A decision and the alerts it raises (break-glass: one critical alert)."""

    decision: GateDecision
    alerts: tuple[Alert, ...] = ()


@dataclass(frozen=True)
class ApprovalTarget:
    """What recording an approval needs to know of the change request: who may approve it
    (the policy's groups for the environments it covers), who raised it (four eyes), and the
    system and state the approval event restates."""

    change_id: str
    system: str
    state: ChangeState
    environments: tuple[str, ...]
    requested_by: str | None
    approving_groups: frozenset[str]


@dataclass(frozen=True)
class ArtifactInUse:
    """A succeeded deployment among the latest of its service and environment (`position` 1:
    the one running; 2..N: the rollback targets), and the artifact it shipped
    (docs/artifacts.md: `GET /v1/artifacts/protected`, `running_artifact_deleted`)."""

    tenant: str
    service: str
    environment: str
    region: str | None
    team: str | None
    deployment_id: str
    artifact_name: str | None
    version: str | None
    digest: str | None
    started_at: datetime
    position: int

    @property
    def running(self) -> bool:
        """Whether it is the latest succeeded deployment of its service and environment."""
        return self.position == 1

    def ships(self, artifact: ArtifactEvent) -> bool:
        """Whether it shipped the artifact `artifact` is about: the same digest, or, for an
        event without one (a retention run reports tags), the same name and version."""
        if artifact.digest is not None:
            return self.digest == artifact.digest
        return (self.artifact_name, self.version) == (artifact.artifact_name, artifact.version)


class Governance(Protocol):
    """The judgement the API is given (`processors.gate.Gatekeeper` under one policy)."""

    @property
    def policy_version(self) -> str:
        """The policy (version+digest) judging."""
        ...

    def approval_target(self, tenant: str, events: Sequence[ChangeEvent]) -> ApprovalTarget | None:
        """The change request `events` (all of one request of `tenant`) are about, for an
        approval; None when there are none (no such request)."""
        ...

    def decide(
        self,
        question: GateQuestion,
        events: Sequence[ChangeEvent],
        asked_by: str,
        now: datetime,
        actor_known: bool = False,
        builds: Sequence[ArtifactEvent] = (),
    ) -> GateOutcome:
        """The gate's answer at `now` for `question`, given every event of the change request
        it names (empty: none reported), asked with the API token `asked_by`; `actor_known`:
        the directory knows the deployer (`shipledger.identities.actor_known`); `builds`: the
        published artifact events of its artifact name and digest."""
        ...

    def rollback_reach(self, tenant: str) -> int:
        """How many of the latest succeeded deployments per service and environment of
        `tenant` keep their artifacts protected (the policy's `artifact_rollback_reach`)."""
        ...

    def deletion_alerts(
        self, deleted: ArtifactEvent, in_use: Sequence[ArtifactInUse], now: datetime
    ) -> list[Alert]:
        """The `running_artifact_deleted` alerts of a registry deletion `deleted`: one per
        running deployment of `in_use` that ships the deleted artifact."""
        ...
