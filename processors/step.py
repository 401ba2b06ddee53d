"""The processing chain for one raw message, pure: decode → validate → normalize → judge →
correlate → enrich. The Faust agent wraps it with Kafka I/O and state; tests drive it
directly.

A deployment's first event is judged by the policy rules (`processors.rules`), by the
artifact rules (`processors.artifact_rules`) against the builds the view holds, and by the
change rules (`processors.change_rules`) against the change request it names, as the view
(`processors.enrichment`) holds it and as it stood when the deployment started. Every record
carries what the view knows: owner team, application and tier from the service catalog, the
artifact's name, version and repository from its digest, and the change request's state and
planned window at the start with the actual-versus-scheduled difference.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, get_args

from shipledger.processors.artifact_rules import judge_artifact
from shipledger.processors.change_rules import ChangeContext, judge_change, schedule_difference
from shipledger.processors.changes import ChangeRequest
from shipledger.processors.correlate import correlate, record_of
from shipledger.processors.enrichment import Enrichment, Lookups
from shipledger.processors.rules import Finding, Subject, judge
from shipledger.processors.trusted import plain, shaped
from shipledger.schemas.models import (
    MAX_NAME,
    Alert,
    DeploymentEvent,
    DeploymentRecord,
    Severity,
    utcnow,
)
from shipledger.schemas.policy import Policy, Rules
from shipledger.schemas.taxonomy import normalize_environment
from shipledger.schemas.validation import Rejected

_ALERT_NS = uuid.UUID("5f1e9c1a-8d0b-4c7e-9a51-6a2b7c3d4e5f")
_NO_VIEW = Enrichment()
_SEVERITIES = frozenset(get_args(Severity))
#: The record's columns about its change request (`change_facts`).
CHANGE_FACTS = ("change_state", "planned_start", "planned_end", "outside_window_s")


@dataclass(frozen=True)
class StepResult:
    """What one event produces: the deployment's new record and any alerts."""

    event: DeploymentEvent
    record: DeploymentRecord
    alerts: list[Alert]


def alert_id(event_id: str, rule: str, generation: int = 1) -> str:
    """Deterministic alert id: one alert per (event, rule), so replays deduplicate. A rule
    raised again after its alert was resolved (re-judgement) is a new alert: generation 2,
    3, ... of the same event and rule."""
    name = f"{event_id}/{rule}" if generation == 1 else f"{event_id}/{rule}/{generation}"
    return str(uuid.uuid5(_ALERT_NS, name))


def resolution_id(resolved: str) -> str:
    """Deterministic id of the resolution of alert `resolved`: an alert is resolved once."""
    return str(uuid.uuid5(_ALERT_NS, f"{resolved}/resolved"))


def nobody_known(actor: str) -> bool:
    """The directory of a processor that has none: it knows nobody (only the policy's
    `service_accounts` are known identities then)."""
    return False


def judged_context(
    subject: Subject, request: ChangeRequest | None, known_actor: Callable[[str], bool]
) -> ChangeContext:
    """What the change rules read besides the deployment: its change request, and whether
    the directory knows the deployer, asked only of a manual deployment (the one kind
    `unattributed_manual_deploy` judges): `known_actor` is I/O, kept out of the rules."""
    return ChangeContext(request, subject.trigger == "manual" and known_actor(subject.actor))


def process(
    event: DeploymentEvent,
    previous: DeploymentRecord | None,
    policy: Policy,
    now: datetime | None = None,
    view: Lookups = _NO_VIEW,
    known_actor: Callable[[str], bool] = nobody_known,
) -> StepResult:
    """Normalize, judge (first event of a deployment only), correlate and enrich one event
    against `view` (default: an empty one, where no change request is known) and the
    directory `known_actor` asks (`shipledger.identities.actor_known`; default: none)."""
    now = now or utcnow()
    given = event.__dict__  # read as `processors.correlate` reads the models
    try:
        env = normalize_environment(given["environment"], given["region"])
    except ValueError as exc:
        raise Rejected(str(exc), "environment") from exc
    findings: list[Finding] = []
    rules: Rules | None = None
    if previous is None:
        tenant, change_id = given["tenant"], given["change_id"]
        rules = policy.rules_for(tenant, given["kind"])
        subject = Subject(
            environment=env.name,
            kind=given["kind"],
            change_id=change_id,
            occurred_at=given["occurred_at"],
            service=given["service"],
            tenant=tenant,
            environment_known=env.known,
            missing_metadata=tuple(given["missing_metadata"]),
            actor=given["actor"],
            trigger=given["trigger"],
            artifact_name=given["artifact_name"],
            version=given["version"],
            artifact_digest=given["artifact_digest"],
        )
        request = view.change(tenant, change_id) if change_id else None
        context = judged_context(subject, request, known_actor)
        findings = judge(subject, rules) + judge_change(subject, context, rules)
        builds = view.builds(
            tenant, subject.artifact_name, subject.version, subject.artifact_digest
        )
        findings += judge_artifact(subject, builds, rules)
    values = correlate(previous, event, env, policy.full_version, [f.rule for f in findings], now)
    enrich(values, previous, view)
    record = record_of(values)
    event_id = given["event_id"]
    alerts = (
        []
        if rules is None
        else [
            build_alert(f, rules, policy, record, event_id, alert_id(event_id, f.rule), now)
            for f in findings
        ]
    )
    return StepResult(event, record, alerts)


def enrich(values: dict[str, Any], previous: DeploymentRecord | None, view: Lookups) -> None:
    """Add to a record's `values` (`correlate`'s) what the view knows: a team they do not
    name, the catalog's application and tier, what the artifact digest says of a name,
    version or repository they lack, and the change request's facts at the start
    (`change_facts`). A later event of a deployment whose start and change id did not move
    keeps the facts of `previous`: a change to the request re-judged the deployment already
    (`processors.late_changes`), which refreshed them."""
    known = None if previous is None else previous.__dict__  # as `correlate` reads models
    tenant, started_at, change_id = values["tenant"], values["started_at"], values["change_id"]
    service = view.service(tenant, values["service"])
    digest = values["artifact_digest"]
    artifact = view.artifact(tenant, digest) if digest else None
    if known is not None and known["started_at"] == started_at and known["change_id"] == change_id:
        values.update({name: known[name] for name in CHANGE_FACTS})
    else:
        request = view.change(tenant, change_id) if change_id else None
        values.update(change_facts(started_at, request))
    values["team"] = values["team"] or (service.owner_team if service else None)
    values["application"] = (service.application if service else None) or (
        known["application"] if known else None
    )
    values["tier"] = (service.tier if service else None) or (known["tier"] if known else None)
    values["repository"] = (
        values["repository"]
        or (artifact.repository if artifact else None)
        or (service.repository if service else None)
    )
    values["version"] = values["version"] or (artifact.version if artifact else None)
    values["artifact_name"] = values["artifact_name"] or (artifact.name if artifact else None)


def change_facts(started_at: datetime, request: ChangeRequest | None) -> dict[str, Any]:
    """The record's change columns: the request's state and planned window as they stood at
    `started_at`, and the actual-versus-scheduled difference in seconds (None where unknown)."""
    facts: dict[str, Any] = dict.fromkeys(CHANGE_FACTS)
    if request is None or not request.reported:
        return facts
    known = request.as_of(started_at)
    facts["change_state"] = known.state
    diff = schedule_difference(started_at, known)
    if diff is not None:
        facts["planned_start"] = diff.planned_start
        facts["planned_end"] = diff.planned_end
        facts["outside_window_s"] = int(diff.outside_by.total_seconds())
    return facts


#: What an alert restates of the record of its deployment.
RESTATED = (
    "deployment_id",
    "tenant",
    "service",
    "environment",
    "region",
    "actor",
    "team",
    "application",
    "tier",
)


def build_alert(
    finding: Finding,
    rules: Rules,
    policy: Policy,
    record: DeploymentRecord,
    judged_event: str,
    identifier: str,
    now: datetime,
) -> Alert:
    """The alert of `finding` about the deployment of `record`, judged on its event
    `judged_event` at the deployment's start (`record.started_at` for a first event)."""
    restated = record.__dict__  # read as `processors.correlate` reads the models
    evidence = finding.evidence
    values: dict[str, Any] = {
        "alert_id": identifier,
        "rule": finding.rule,
        "severity": rules.severities.get(finding.rule, "medium"),
        "message": finding.message,
        "evidence": dict(evidence),
        "policy_version": policy.full_version,
        "event_id": judged_event,
        "occurred_at": restated["started_at"],
        "detected_at": now,
        **{name: restated[name] for name in RESTATED},
    }
    # The record's values are a record's; the others are validated only when not plain.
    if (
        values["severity"] in _SEVERITIES
        and plain(
            [
                identifier,
                finding.rule,
                finding.message,
                judged_event,
                values["policy_version"],
                *evidence.values(),
            ]
        )
        and plain(list(evidence), MAX_NAME)
    ):
        return shaped(Alert, values)
    return Alert(**values)
