"""The pre-deploy gate's judgement (`processors.gate`), the approvals it counts and the fold
of recorded approvals: pure, no Kafka (the route and the CLI: tests/integration/test_gate.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from shipledger.processors.changes import fold
from shipledger.processors.gate import Gatekeeper
from shipledger.processors.step import alert_id
from shipledger.producers.api.auth import Principal
from shipledger.producers.api.events import FieldError, prepare
from shipledger.schemas.family_models import APPROVAL_SOURCE, ChangeEvent
from shipledger.schemas.governance import GateQuestion
from shipledger.schemas.policy import parse_policy
from shipledger.settings import Settings

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)  # a Wednesday
POLICY = parse_policy(
    """
version: gate-test
defaults:
  require_change_ticket: [prod]
  require_artifact_digest: []
  change_windows:
    prod: [{days: [mon, tue, wed, thu], start: "08:00", end: "18:00"}]
  freezes:
    - {name: thanksgiving, start: "2026-11-26T00:00:00Z", end: "2026-11-30T00:00:00Z"}
  service_accounts: [deploy-bot]
  approvals:
    - {name: prod-cab, group: cab, environments: [prod]}
"""
)
GATE = Gatekeeper(POLICY)


def at(minutes: float) -> datetime:
    return NOW + timedelta(minutes=minutes)


def change(state: str, minutes: float, **kw: Any) -> ChangeEvent:
    fields: dict[str, Any] = {
        "event_id": f"{state}-{minutes}",
        "tenant": "retail",
        "change_id": "CHG1",
        "system": "servicenow",
        "state": state,
        "occurred_at": at(minutes),
        "planned_start": at(-60),
        "planned_end": at(120),
        "services": ["checkout"],
        "environments": ["production"],
        "actor": "raj",
    }
    fields.update(kw)
    return ChangeEvent(**fields)


def approval(who: str, minutes: float, *groups: str, decision: str = "approved") -> ChangeEvent:
    """An approval as `POST /v1/approvals` records it."""
    return ChangeEvent(
        event_id=f"approval-{who}-{minutes}",
        tenant="retail",
        change_id="CHG1",
        system="servicenow",
        state="opened",  # what the approver saw: not a revision
        occurred_at=at(minutes),
        source=APPROVAL_SOURCE,
        approvals=[
            {
                "approver": who,
                "decision": decision,
                "decided_at": at(minutes),
                "groups": list(groups),
                "verified_by": "ldap:ldap://dir",
            }
        ],
    )


APPROVED = [change("opened", -120), change("approved", -90), approval("alice", -80, "cab")]


def ask(events: list[ChangeEvent], when: datetime = NOW, **kw: Any) -> Any:
    fields: dict[str, Any] = {
        "tenant": "retail",
        "service": "checkout",
        "environment": "production",
        "change_id": "CHG1",
        "actor": "deploy-bot",
    }
    fields.update(kw)
    return GATE.decide(GateQuestion(**fields), events, "tok123", when)


def rules_of(outcome: Any) -> list[str]:
    return [r.rule for r in outcome.decision.reasons]


def test_an_approved_request_in_its_window_and_scope_with_its_approvals_is_allowed() -> None:
    outcome = ask(APPROVED)
    decision = outcome.decision
    assert (decision.decision, decision.reasons, outcome.alerts) == ("allowed", [], ())
    assert decision.passes and decision.environment == "prod"
    assert (decision.asked_by, decision.policy_version) == ("tok123", POLICY.full_version)
    assert (decision.occurred_at, decision.actor, decision.change_id) == (NOW, "deploy-bot", "CHG1")


@pytest.mark.parametrize(
    ("case", "events", "kw", "expected"),
    [
        ("rejected", [*APPROVED, change("rejected", -10)], {}, ["change_not_approved"]),
        ("unknown", [], {}, ["change_ticket_unknown", "missing_approvals"]),
        ("no ticket", APPROVED, {"change_id": None}, ["missing_change_ticket"]),
        ("window passed", APPROVED, {"when": at(180)}, ["outside_change_window"]),
        ("out of scope", APPROVED, {"service": "payments"}, ["change_scope_mismatch"]),
        ("no approval", APPROVED[:2], {}, ["missing_approvals"]),
        ("four eyes", APPROVED, {"actor": "ALICE@corp.example"}, ["missing_approvals"]),
        (
            "manual, unknown identity",
            APPROVED,
            {"trigger": "manual", "actor": "root"},
            ["unattributed_manual_deploy"],
        ),
        (
            "weekly window",
            APPROVED,
            {"when": at(9 * 60)},
            ["out_of_window", "outside_change_window"],
        ),
        (
            "freeze",
            [c.model_copy(update={"planned_end": at(3 * 24 * 60)}) for c in APPROVED],
            {"when": NOW.replace(day=26)},  # a Thursday: in the weekly window
            ["freeze_violation"],
        ),
    ],
)
def test_each_blocking_reason_is_listed(
    case: str, events: list[ChangeEvent], kw: dict[str, Any], expected: list[str]
) -> None:
    when = kw.pop("when", NOW)
    outcome = ask(events, when, **kw)
    assert outcome.decision.decision == "blocked", case
    assert rules_of(outcome) == expected, case
    assert all(r.message and r.severity for r in outcome.decision.reasons)


def test_every_reason_at_once() -> None:
    """A rejected request, out of scope, during the freeze, nobody approving: all listed."""
    events = [change("opened", -120), change("rejected", -60, services=["payments"])]
    outcome = ask(events, NOW.replace(day=27))
    assert rules_of(outcome) == [
        "out_of_window",  # a Friday
        "freeze_violation",
        "change_not_approved",
        "change_scope_mismatch",
        "missing_approvals",
    ]
    (short,) = [r for r in outcome.decision.reasons if r.rule == "missing_approvals"]
    assert "prod-cab: needs 1 approval(s) from group 'cab', has 0" in short.message


def test_a_later_rejection_by_the_approver_withdraws_the_approval() -> None:
    events = [*APPROVED, approval("alice", -5, "cab", decision="rejected")]
    assert rules_of(ask(events)) == ["missing_approvals"]


def test_break_glass_passes_whatever_blocks_and_raises_one_critical_alert() -> None:
    outcome = ask([], emergency=True, reason="payments down, INC-981", deployment_id="d-1")
    decision = outcome.decision
    assert decision.decision == "break_glass" and decision.passes
    assert rules_of(outcome) == ["change_ticket_unknown", "missing_approvals"]
    (alert,) = outcome.alerts
    assert alert.alert_id == alert_id(decision.event_id, "break_glass") == decision.alert_id
    assert (alert.rule, alert.severity, alert.deployment_id) == ("break_glass", "critical", "d-1")
    assert alert.evidence["reason"] == "payments down, INC-981" == decision.emergency_reason
    assert alert.evidence["blocked_by"] == "change_ticket_unknown,missing_approvals"
    assert alert.policy_version == POLICY.full_version


def test_break_glass_needs_a_reason_and_a_reason_needs_break_glass() -> None:
    with pytest.raises(ValidationError, match="needs a reason"):
        GateQuestion(service="s", environment="prod", actor="a", emergency=True)
    with pytest.raises(ValidationError, match="for emergency"):
        GateQuestion(service="s", environment="prod", actor="a", reason="because")


def test_a_recorded_approval_is_not_a_revision() -> None:
    """An approval restates the state its approver saw (`opened` here). It must not mask the
    approval the change system reports later, which happened before it."""
    events = [change("opened", -120), approval("alice", -80, "cab"), change("approved", -90)]
    request = fold(events)
    assert request is not None
    assert request.state == "approved" and [r.state for r in request.revisions] == [
        "opened",
        "approved",
    ]
    assert [(a.approver, a.groups, a.verified_by) for a in request.approvals] == [
        ("alice", ("cab",), "ldap:ldap://dir")
    ]
    assert ask(events).decision.decision == "allowed"


def test_approval_target_names_the_groups_and_who_raised_the_request() -> None:
    target = GATE.approval_target("retail", APPROVED)
    assert target is not None
    assert (target.state, target.system, target.requested_by) == ("approved", "servicenow", "raj")
    assert target.approving_groups == {"cab"} and target.environments == ("prod",)
    named = [*APPROVED, change("scheduled", -1, requested_by="priya")]
    assert GATE.approval_target("retail", named).requested_by == "priya"  # type: ignore[union-attr]
    assert GATE.approval_target("retail", []) is None
    assert GATE.approval_target("retail", [approval("alice", -80, "cab")]) is None


@pytest.mark.parametrize(
    "forged",
    [
        {"source": APPROVAL_SOURCE},
        {
            "approvals": [
                {
                    "approver": "m",
                    "decision": "approved",
                    "decided_at": "2026-11-25T09:00:00Z",
                    "groups": ["cab"],
                }
            ]
        },
        {
            "approvals": [
                {
                    "approver": "m",
                    "decision": "approved",
                    "decided_at": "2026-11-25T09:00:00Z",
                    "verified_by": "oidc:x",
                }
            ]
        },
    ],
)
def test_only_the_approvals_route_records_verified_approvals(forged: dict[str, Any]) -> None:
    obj = {"family": "change", "change_id": "CHG1", "system": "snow", "state": "approved", **forged}
    principal = Principal("t1", "retail", frozenset({"ingest"}))
    for channel in ("api", "upload", "webhook:github"):
        (error,) = prepare(dict(obj), 3, principal, Settings(), channel)  # type: ignore[misc]
        assert isinstance(error, FieldError) and error.field == "approvals"
    assert not isinstance(prepare(dict(obj), 3, principal, Settings(), APPROVAL_SOURCE), list)
