"""Post-deploy verification, pure: windows, checks, scores, verdicts and when they are due;
the policy's `verification` settings; drift reports linked to their deployment."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shipledger.processors.drift import DRIFT_RULE, drift_alert, drifted
from shipledger.processors.recent import Deployed
from shipledger.processors.verification import (
    Succeeded,
    check_of,
    decide,
    due,
    lookback,
    score_of,
    verdict_of,
)
from shipledger.schemas.family_models import DRIFT_RESOURCES, DRIFT_TOOL, SignalEvent
from shipledger.schemas.policy import PolicyError, Rules, Verification, parse_policy

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
RULES = Verification()
PROD = Succeeded("acme", "d-1", "checkout", "prod", T0, "payments")


def signal(minutes: float, kind: str = "pipeline_finished", **kw: Any) -> dict[str, Any]:
    """A stored signal about checkout in production, `minutes` after the deployment."""
    return {
        "event_id": kw.pop("event_id", f"s-{kind}-{minutes}-{kw.get('outcome')}"),
        "tenant": "acme",
        "kind": kind,
        "service": "checkout",
        "environment": "production",
        "region": None,
        "deployment_id": None,
        "outcome": None,
        "title": "smoke",
        "url": None,
        "source": "api",
        "attributes": {},
        "occurred_at": T0 + timedelta(minutes=minutes),
        **kw,
    }


def test_window_per_environment() -> None:
    assert RULES.window_for("prod") == timedelta(minutes=15)
    assert RULES.window_for("stage") == timedelta(minutes=10)
    decision = decide(PROD, [], RULES)
    assert (decision.window_start, decision.window_end) == (T0, T0 + timedelta(minutes=15))


def test_no_check_is_unverified_never_fine() -> None:
    decision = decide(PROD, [signal(20, outcome="success")], RULES)  # after the window
    assert (decision.verdict, decision.score, decision.checks) == ("unverified", 0.0, ())
    assert json.loads(decision.evidence())["checks"] == []


@pytest.mark.parametrize(
    ("outcomes", "verdict", "score"),
    [
        (["success", "success"], "verified", 1.0),
        (["success", "degraded"], "suspect", 0.75),
        (["success", "failure"], "suspect", 0.5),
        (["failure", "degraded"], "failed_verification", 0.25),
        (["failure"], "failed_verification", 0.0),
    ],
)
def test_scores_and_verdicts(outcomes: list[str], verdict: str, score: float) -> None:
    signals = [signal(i + 1, outcome=o) for i, o in enumerate(outcomes)]
    decision = decide(PROD, signals, RULES)
    assert (decision.verdict, decision.score) == (verdict, score)


def test_health_signals_count() -> None:
    signals = [
        signal(2, outcome="success"),
        signal(3, "alert_fired"),
        signal(9, "alert_resolved"),
        signal(4, "incident_opened"),
    ]
    decision = decide(PROD, signals, RULES)
    assert [c.result for c in decision.checks] == ["pass", "fail", "fail", "pass"]
    assert decision.verdict == "suspect"


def test_evidence_names_each_check() -> None:
    stored = signal(5, outcome="failure", attributes={"check.name": "place order"})
    evidence = json.loads(decide(PROD, [stored, stored], RULES).evidence())
    assert (evidence["passed"], evidence["failed"], evidence["degraded"]) == (0, 1, 0)
    [check] = evidence["checks"]  # a signal stored twice is one check
    assert (check["name"], check["result"]) == ("place order", "fail")
    assert check["occurred_at"] == (T0 + timedelta(minutes=5)).isoformat()


@pytest.mark.parametrize(
    ("overrides", "counts"),
    [
        ({"environment": "staging"}, False),
        ({"environment": None}, True),
        ({"service": "payments"}, False),
        ({"service": "payments", "deployment_id": "d-1"}, True),
        ({"tenant": "globex"}, False),
        ({"environment": "no such env!"}, False),
    ],
)
def test_which_signals_concern_the_deployment(overrides: dict[str, Any], counts: bool) -> None:
    decision = decide(PROD, [signal(1, outcome="success", **overrides)], RULES)
    assert bool(decision.checks) is counts


def test_ignored_signals() -> None:
    drift = signal(1, "alert_fired", attributes={DRIFT_TOOL: "terraform"})
    unknown = signal(2, outcome="skipped")
    pipeline_without_outcome = signal(3)
    assert [check_of(s) for s in (drift, unknown, pipeline_without_outcome)] == [None] * 3


def test_due_from_close_until_late_for() -> None:
    close = T0 + timedelta(minutes=15)
    assert not due(PROD, RULES, close - timedelta(seconds=1))
    assert due(PROD, RULES, close)
    assert due(PROD, RULES, close + timedelta(hours=23))
    assert not due(PROD, RULES, close + timedelta(hours=24))
    assert lookback([RULES]) == timedelta(minutes=15, hours=24)


def test_late_check_revises() -> None:
    early = decide(PROD, [signal(3, outcome="success")], RULES)
    late = decide(PROD, [signal(3, outcome="success"), signal(14, outcome="failure")], RULES)
    assert early.verdict == "verified" and late.verdict == "suspect"
    assert late.changed((early.verdict, early.score, early.evidence()))
    assert not early.changed((early.verdict, early.score, early.evidence()))


def test_score_and_verdict_edges() -> None:
    assert score_of([]) is None
    assert verdict_of(None, RULES) == "unverified"
    assert verdict_of(0.9, RULES) == "verified"
    assert verdict_of(0.4999, RULES) == "failed_verification"


def test_policy_verification_settings() -> None:
    policy = parse_policy(
        "version: v\ndefaults:\n  verification:\n    windows: {production: 30m, staging: 5m}\n"
        "    window: 2m\n    verified_score: 1\n"
        "tenants:\n  globex:\n    verification: {window: 1h}\n"
    )
    rules = policy.rules_for("acme").verification
    assert rules.windows == {"prod": "30m", "stage": "5m"}
    assert rules.window_for("dev") == timedelta(minutes=2)
    assert policy.rules_for("globex").verification.window_for("prod") == timedelta(minutes=15)


@pytest.mark.parametrize(
    ("yaml", "named"),
    [
        ("windows: {prod: soon}", "windows.prod"),
        ("window: 0m", "window"),
        ("late_for: 3x", "late_for"),
        ("verified_score: 2", "verified_score"),
        ("verified_score: 0.4", "suspect_score is above verified_score"),
    ],
)
def test_policy_errors_name_the_field(yaml: str, named: str) -> None:
    with pytest.raises(PolicyError, match=named):
        parse_policy(f"version: v\ndefaults:\n  verification: {{{yaml}}}\n")


def deployed(dep: str, minutes_before: float, environment: str = "prod") -> Deployed:
    return Deployed(
        tenant="acme",
        deployment_id=dep,
        seq=2,
        service="checkout",
        environment=environment,
        region=None,
        status="succeeded",
        started_at=T0 - timedelta(minutes=minutes_before),
        finished_at=None,
        version="2.1.0",
        commit_sha="b" * 40,
        actor="ci",
        last_event_id=f"{dep}-e2",
    )


def report(**kw: Any) -> SignalEvent:
    resources = [
        {"address": f"aws_s3_bucket.b{i}", "kind": "aws_s3_bucket", "actions": "update"}
        for i in range(7)
    ]
    fields: dict[str, Any] = {
        "event_id": "drift-1",
        "tenant": "acme",
        "kind": "alert_fired",
        "service": "checkout",
        "environment": "production",
        "occurred_at": T0,
        "attributes": {DRIFT_TOOL: "terraform", DRIFT_RESOURCES: json.dumps(resources)},
        **kw,
    }
    return SignalEvent.model_validate(fields)


def test_drift_links_the_latest_deployment_before_it() -> None:
    candidates = [
        deployed("old", 300),
        deployed("latest", 60),
        deployed("after", -5),
        deployed("stage", 10, "stage"),
    ]
    assert drifted(report(), candidates) == candidates[1]
    assert drifted(report(environment=None), candidates) is None
    assert drifted(report(), candidates[2:]) is None


def test_drift_alert_names_the_resources() -> None:
    alert = drift_alert(report(), deployed("latest", 60), Rules(), "v1", T0)
    assert (alert.rule, alert.severity, alert.deployment_id) == (DRIFT_RULE, "high", "latest")
    assert "aws_s3_bucket.b0 (update)" in alert.message and "and 2 more" in alert.message
    assert alert.evidence["resource_count"] == "7"
    assert alert.evidence["addresses"].split(",")[-1] == "aws_s3_bucket.b6"
    again = drift_alert(report(), deployed("latest", 60), Rules(), "v1", T0)
    assert again.alert_id == alert.alert_id
