"""Success criteria's pure parts: the policy block's checks (errors name the field), a team's
targets, what detects a failure and when, and the report's means, trend and missed targets
(the numbers on a real ledger: tests/integration/test_success.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from shipledger.schemas.policy import PolicyError, SuccessCriteria, SuccessTargets, parse_policy
from shipledger.sinks.ledger.adoption import AdoptionError, AdoptionQuery
from shipledger.sinks.ledger.success import Failure, success_report

T0 = datetime(2026, 11, 23, 9, tzinfo=UTC)


def _at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _failure(
    dep: str, period: date = date(2026, 11, 23), team: str = "payments", **kw: object
) -> Failure:
    times: dict[str, object] = {
        "started_at": T0,
        "failed_at": None,
        "alerted_at": None,
        "rollback_started_at": None,
        "restored_at": None,
        **kw,
    }
    return Failure(tenant="retail", team=team, period=period, deployment_id=dep, **times)  # type: ignore[arg-type]


def test_the_policy_block_names_each_bad_field() -> None:
    text = (
        "version: 1\nsuccess_criteria:\n  defaults: {detect_within: 30x}\n"
        "  teams:\n    payments: {rollback: 10m}\n"
    )
    with pytest.raises(PolicyError) as caught:
        parse_policy(text)
    message = str(caught.value)
    assert "success_criteria.defaults.detect_within: detect_within must be" in message
    assert "success_criteria.teams.payments.rollback: Extra inputs" in message


def test_a_teams_override_replaces_only_the_keys_it_gives() -> None:
    criteria = SuccessCriteria(
        defaults=SuccessTargets(detect_within="30m", rollback_within="15m"),
        teams={"payments": SuccessTargets(rollback_within="10m")},
    )
    assert criteria.targets_for("payments").seconds("detect_within") == 1800
    assert criteria.targets_for("payments").seconds("rollback_within") == 600
    assert criteria.targets_for("basket").seconds("rollback_within") == 900
    assert SuccessCriteria().targets_for("any").seconds("detect_within") is None
    assert SuccessCriteria().detection_rules == ["suspect_deployment"]


def test_detection_is_the_earliest_sign_and_a_failed_rollback_only_delays_restoring() -> None:
    alert_first = _failure("a", failed_at=_at(20), alerted_at=_at(5))
    failed_first = _failure("b", failed_at=_at(6), alerted_at=_at(30))
    undated = _failure("c", restored_at=_at(40))
    retried_rollback = _failure(
        "d", failed_at=_at(6), rollback_started_at=_at(10), restored_at=_at(35)
    )
    assert (alert_first.detect_s, failed_first.detect_s, undated.detect_s) == (300, 360, None)
    assert (undated.rollback_s, retried_rollback.rollback_s) == (None, 1500)


def test_the_trend_and_the_teams_missing_their_target() -> None:
    week2 = date(2026, 11, 30)
    failures = [
        _failure("a", failed_at=_at(40), rollback_started_at=_at(50), restored_at=_at(70)),
        _failure("b", failed_at=_at(20), rollback_started_at=_at(30), restored_at=_at(40)),
        _failure("c", week2, failed_at=_at(10), rollback_started_at=_at(20), restored_at=_at(25)),
        _failure("d", team="search", failed_at=_at(90)),
    ]
    criteria = SuccessCriteria(defaults=SuccessTargets(detect_within="30m", rollback_within="12m"))
    report = success_report(failures, criteria).as_dict()
    rows = [(r["period"], r["team"], r["detect_min"], r["rollback_min"], r["rollback_change"],
             r["on_target"]) for r in report["rows"]]  # fmt: skip
    assert rows == [
        ("2026-11-23", "payments", 30.0, 15.0, None, False),
        ("2026-11-23", "search", 90.0, None, None, False),
        ("2026-11-30", "payments", 10.0, 5.0, -0.6667, True),
    ]
    [payments, search] = report["totals"]
    assert (payments["detect_min"], payments["rollback_min"]) == (23.3, 11.7)
    assert payments["rollback_change"] == -0.6667
    assert report["missing"] == [{"tenant": "retail", "team": "search", "missed": ["detect"]}]
    assert search["on_target"] is False


def test_an_adoption_request_names_its_field() -> None:
    with pytest.raises(AdoptionError, match=r"^days:"):
        AdoptionQuery(days=0)


def test_the_example_policys_block_uncommented_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "policy.example.yaml"
    text = example.read_text(encoding="utf-8")
    block = text[text.index("# success_criteria:") : text.index("# Escalation (")]
    uncommented = "\n".join(line[2:] for line in block.splitlines() if line.startswith("# "))
    criteria = parse_policy(f"version: 1\n{uncommented}\n").success_criteria
    assert criteria.targets_for("payments").seconds("rollback_within") == 600
