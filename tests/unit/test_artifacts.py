"""Artifact continuity and lifecycle, pure parts (docs/artifacts.md): the artifact rules, the
builds the enrichment view folds, the stream's and the gate's judgement, the policy fields,
and the `running_artifact_deleted` alerts of a registry deletion."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from shipledger.dlq_limit import DlqLimit, DlqLimitState
from shipledger.processors.artifact_rules import Built, judge_artifact
from shipledger.processors.enrichment import Enrichment, fold
from shipledger.processors.gate import Gatekeeper
from shipledger.processors.handler import EventHandler
from shipledger.processors.rules import Finding, Subject
from shipledger.processors.state import DeploymentState
from shipledger.processors.step import process
from shipledger.schemas.family_models import ArtifactEvent
from shipledger.schemas.governance import ArtifactInUse, GateQuestion
from shipledger.schemas.models import DeploymentEvent
from shipledger.schemas.policy import PolicyError, Rules, parse_policy
from shipledger.schemas.registry import AvroCodec
from shipledger.schemas.validation import EVENT_SCHEMA
from shipledger.settings import Settings
from tests.unit.test_handler import FakeMessage, FakeOutputs, FakeTable

AT = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
BUILT = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64
RULES = Rules(require_artifact_digest=["production"], trusted_builders=["github-actions"])
POLICY = """
version: artifacts-1
defaults:
  require_change_ticket: []
  require_artifact_digest: [prod]
  trusted_builders: [github-actions]
  artifact_rollback_reach: 3
"""


def subject(digest: str | None, environment: str = "prod", **extra: str) -> Subject:
    return Subject(
        environment=environment,
        kind="release",
        change_id=None,
        occurred_at=AT,
        service="checkout",
        tenant="retail",
        artifact_name=extra.get("artifact_name", "acme/checkout"),
        version=extra.get("version", "2.14.0"),
        artifact_digest=digest,
    )


def build(digest: str = BUILT, builder: str | None = "github-actions", **extra: str) -> Built:
    return Built(
        extra.get("artifact_name", "acme/checkout"), extra.get("version", "2.14.0"), digest, builder
    )


def rules_of(findings: list[Finding]) -> list[str]:
    return [f.rule for f in findings]


def test_the_deployed_digest_built_by_a_trusted_builder_passes() -> None:
    assert judge_artifact(subject(BUILT), {build()}, RULES) == []


def test_no_digest_where_required_is_missing() -> None:
    [finding] = judge_artifact(subject(None), {build()}, RULES)
    assert finding.rule == "artifact_digest_missing"
    assert finding.evidence["required_for"] == "prod"


def test_another_digest_than_the_build_of_that_version_is_a_mismatch() -> None:
    [finding] = judge_artifact(subject(OTHER), {build()}, RULES)
    assert finding.rule == "artifact_digest_mismatch"
    assert finding.evidence["built_digests"] == BUILT
    assert finding.evidence["digest"] == OTHER


def test_a_digest_nobody_built_is_unknown() -> None:
    [finding] = judge_artifact(subject(OTHER), set(), RULES)
    assert finding.rule == "artifact_unknown"
    # A build of another version is no evidence about this one: unknown, not a mismatch.
    assert rules_of(judge_artifact(subject(OTHER), {build(version="2.13.0")}, RULES)) == [
        "artifact_unknown"
    ]


def test_only_trusted_builders_count() -> None:
    [finding] = judge_artifact(subject(BUILT), {build(builder="laptop-of-mallory")}, RULES)
    assert finding.rule == "artifact_unknown"
    assert finding.evidence["untrusted_builders"] == "laptop-of-mallory"
    # Compared like identities; an empty list trusts every builder.
    assert judge_artifact(subject(BUILT), {build(builder="GitHub-Actions")}, RULES) == []
    anyone = Rules(require_artifact_digest=["prod"])
    assert judge_artifact(subject(BUILT), {build(builder=None)}, anyone) == []


def test_environments_not_requiring_a_digest_are_not_judged() -> None:
    assert judge_artifact(subject(None, environment="dev"), set(), RULES) == []
    assert judge_artifact(subject(OTHER, environment="stage"), {build()}, RULES) == []


def test_a_policy_that_does_not_say_requires_a_digest_in_prod() -> None:
    rules = parse_policy("version: t\ndefaults:\n  require_change_ticket: [prod]\n").defaults
    assert rules.require_artifact_digest == ["prod"]
    [missing] = judge_artifact(subject(None), set(), rules)
    assert missing.rule == "artifact_digest_missing"
    [unknown] = judge_artifact(subject(BUILT), set(), rules)
    assert unknown.rule == "artifact_unknown"
    assert judge_artifact(subject(None, environment="stage"), set(), rules) == []


def test_an_empty_list_turns_the_digest_rules_off() -> None:
    policy = parse_policy("version: t\ndefaults:\n  require_artifact_digest: []\n")
    assert policy.defaults.require_artifact_digest == []
    assert judge_artifact(subject(None), set(), policy.defaults) == []
    assert judge_artifact(subject(OTHER), {build()}, policy.defaults) == []


def test_policy_fields_are_validated_naming_the_field() -> None:
    policy = parse_policy(POLICY)
    rules = policy.rules_for("retail")
    assert rules.require_artifact_digest == ["prod"]
    assert rules.artifact_rollback_reach == 3
    with pytest.raises(PolicyError, match="artifact_rollback_reach"):
        parse_policy(POLICY.replace("artifact_rollback_reach: 3", "artifact_rollback_reach: 0"))
    with pytest.raises(PolicyError, match="trusted_builders"):
        parse_policy(POLICY.replace("[github-actions]", "github-actions"))


def artifact(event_id: str, action: str = "published", **extra: object) -> ArtifactEvent:
    fields: dict[str, object] = {
        "event_id": event_id,
        "tenant": "retail",
        "occurred_at": AT,
        "artifact_name": "acme/checkout",
        "version": "2.14.0",
        "digest": BUILT,
        "builder": "github-actions",
        "action": action,
        **extra,
    }
    return ArtifactEvent.model_validate(fields)


def test_the_view_folds_builds_not_deletions() -> None:
    view = fold(
        [
            artifact("b1", provenance_url="https://ci.example/attestations/1"),
            artifact("d1", action="deleted", digest=OTHER),
        ]
    )
    builds = view.builds("retail", "acme/checkout", "2.14.0", None)
    assert builds == {
        Built(
            "acme/checkout", "2.14.0", BUILT, "github-actions", "https://ci.example/attestations/1"
        )
    }
    assert view.builds("retail", None, None, BUILT) == builds
    assert view.builds("retail", None, None, OTHER) == set()
    assert view.builds("retail", "acme/checkout", "2.15.0", None) == set()
    assert view.builds("other-tenant", "acme/checkout", "2.14.0", BUILT) == set()


def deployment(digest: str | None) -> DeploymentEvent:
    return DeploymentEvent.model_validate(
        {
            "event_id": f"e-{digest}",
            "deployment_id": f"d-{digest}",
            "event_type": "started",
            "tenant": "retail",
            "service": "checkout",
            "environment": "production",
            "commit_sha": "0f" * 20,
            "actor": "ci-bot",
            "occurred_at": AT,
            "artifact_name": "acme/checkout",
            "version": "2.14.0",
            **({"artifact_digest": digest} if digest else {}),
        }
    )


def test_the_stream_judges_a_first_event_against_the_view() -> None:
    policy = parse_policy(POLICY)
    view = fold([artifact("b1")])
    judged = {
        digest: [a.rule for a in process(deployment(digest), None, policy, AT, view).alerts]
        for digest in (BUILT, OTHER, None)
    }
    assert judged == {
        BUILT: [],
        OTHER: ["artifact_digest_mismatch"],
        None: ["artifact_digest_missing"],
    }
    # Severity from the policy defaults: a substituted binary is critical.
    [alert] = process(deployment(OTHER), None, policy, AT, view).alerts
    assert alert.severity == "critical"


def question(digest: str | None) -> GateQuestion:
    return GateQuestion.model_validate(
        {
            "tenant": "retail",
            "service": "checkout",
            "environment": "prod",
            "actor": "ci-bot",
            "artifact_name": "acme/checkout",
            "version": "2.14.0",
            **({"digest": digest} if digest else {}),
        }
    )


def test_the_gate_refuses_the_same_cases() -> None:
    gate = Gatekeeper(parse_policy(POLICY))
    builds = [artifact("b1"), artifact("d1", action="deleted", digest=OTHER)]

    def reasons(digest: str | None) -> tuple[str, list[str]]:
        decision = gate.decide(question(digest), [], "tok", AT, builds=builds).decision
        return decision.decision, [r.rule for r in decision.reasons]

    assert reasons(BUILT) == ("allowed", [])
    assert reasons(OTHER) == ("blocked", ["artifact_digest_mismatch"])
    assert reasons(None) == ("blocked", ["artifact_digest_missing"])
    # A deletion is not a build: the deleted digest alone is unknown.
    decision = gate.decide(question(OTHER), [], "tok", AT, builds=builds[1:]).decision
    assert [r.rule for r in decision.reasons] == ["artifact_unknown"]


def in_use(position: int, digest: str | None = BUILT, **extra: str) -> ArtifactInUse:
    return ArtifactInUse(
        tenant="retail",
        service=extra.get("service", "checkout"),
        environment="prod",
        region=None,
        team="payments",
        deployment_id=f"dep-{extra.get('service', 'checkout')}-{position}",
        artifact_name="acme/checkout",
        version=extra.get("version", "2.14.0"),
        digest=digest,
        started_at=AT,
        position=position,
    )


def test_deleting_a_running_digest_alerts_once_per_running_deployment() -> None:
    gate = Gatekeeper(parse_policy(POLICY))
    deleted = artifact("del-1", action="deleted", registry="harbor.example")
    used = [in_use(1), in_use(2), in_use(1, digest=OTHER, service="search", version="1.0.0")]
    [alert] = gate.deletion_alerts(deleted, used, AT)
    assert (alert.rule, alert.deployment_id, alert.team) == (
        "running_artifact_deleted",
        "dep-checkout-1",
        "payments",
    )
    assert alert.evidence["digest"] == BUILT
    assert "harbor.example deleted" in alert.message
    # Deterministic: a redelivered deletion is the same alert.
    assert gate.deletion_alerts(deleted, used, AT)[0].alert_id == alert.alert_id
    # A rollback target only (position 2) is protected, not running: no alert.
    assert gate.deletion_alerts(deleted, [in_use(2)], AT) == []
    # A retention run reports tags: matched by name and version.
    retained = artifact("ret-1", action="retention_deleted", digest=None)
    assert [a.deployment_id for a in gate.deletion_alerts(retained, used, AT)] == ["dep-checkout-1"]
    assert gate.rollback_reach("retail") == 3


def test_a_build_published_just_before_the_deploy_is_seen() -> None:
    """Ordering (processors.handler): the view has not read the build yet when the deployment
    is judged; before flagging it, the handler catches up (here: the feed's build is folded
    in) and judges again. Without a catch-up the deployment is flagged."""
    view = Enrichment()
    caught_up: list[int] = []

    def catch_up() -> None:
        caught_up.append(1)
        view.apply(artifact("b1"))

    def judged(hook: Callable[[], object] | None, deployment_id: str) -> list[str]:
        outputs = FakeOutputs()
        limit = DlqLimitState(DlqLimit.from_settings(Settings()), "processors")
        policy = parse_policy(POLICY)
        handle = EventHandler(
            policy, DeploymentState(FakeTable()), outputs, limit, view, catch_up=hook
        )
        model = deployment(BUILT).model_copy(update={"deployment_id": deployment_id})
        handle.handle(FakeMessage(AvroCodec(EVENT_SCHEMA).encode(model.to_avro())))
        return [topic for topic, _ in outputs.sent if topic == "alerts"]

    assert judged(None, "dep-early") == ["alerts"]  # artifact_unknown: the view is behind
    assert judged(catch_up, "dep-caught-up") == []
    assert caught_up == [1]
    # A deployment the view already clears costs no catch-up.
    assert judged(catch_up, "dep-later") == []
    assert caught_up == [1]
