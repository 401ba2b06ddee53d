"""The policy simulation's pure part (`processors.simulate`): which rules hold in the ledger,
and what a candidate policy would add and remove, per rule and team."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from shipledger.processors.enrichment import Enrichment
from shipledger.processors.simulate import holding, simulate
from shipledger.schemas.policy import parse_policy
from tests.kit import deployment_event

NOW = datetime(2026, 11, 30, tzinfo=UTC)
AT = datetime(2026, 11, 25, 10, tzinfo=UTC)


@dataclass(frozen=True)
class Stored:
    alert_id: str
    event_id: str
    rule: str
    resolution: bool = False
    resolves: str | None = None
    tenant: str = "default"
    team: str | None = "payments"


def test_holding_leaves_out_resolved_alerts_and_resolutions() -> None:
    held = holding(
        [
            Stored("a1", "e1", "change_not_approved"),
            Stored("r1", "e1", "change_not_approved", resolution=True, resolves="a1"),
            Stored("a2", "e1", "outside_change_window"),
            Stored("a3", "e2", "missing_change_ticket", team=None),
        ]
    )
    assert held == {
        ("default", "e1"): {"outside_change_window": "payments"},
        ("default", "e2"): {"missing_change_ticket": None},
    }


def test_simulate_reports_added_and_removed_rules_per_rule_and_team() -> None:
    stage = deployment_event(event_id="e-stage", environment="stage", occurred_at=AT, team="web")
    prod = deployment_event(event_id="e-prod", deployment_id="d-2", occurred_at=AT, team="web")
    # Stored before a stricter validation, say: the chain rejects it, as the stream would.
    broken = deployment_event(event_id="e-bad", deployment_id="d-3").model_copy(
        update={"environment": " "}
    )
    # prod has no ticket: missing_change_ticket holds and still would; a stored alert of a
    # rule the candidate no longer raises is removed.
    held = {
        ("default", "e-prod"): {"missing_change_ticket": "web", "freeze_violation": "web"},
    }
    candidate = parse_policy(
        "version: c-1\ndefaults:\n  require_change_ticket: [prod, stage]\n"
        "  require_artifact_digest: []\n"
    )
    result = simulate([stage, prod, broken], held, candidate, Enrichment(), NOW)
    assert result.policy_version.startswith("c-1+")
    assert (result.deployments, result.held, result.would_hold) == (2, 2, 2)
    assert [(c.change, c.rule, c.deployment_id) for c in result.changes] == [
        ("added", "missing_change_ticket", "d-1"),
        ("removed", "freeze_violation", "d-2"),
    ]
    assert result.by_rule_and_team() == [
        ("freeze_violation", "web", 0, 1),
        ("missing_change_ticket", "web", 1, 0),
    ]
    assert result.rejected == ["e-bad"]
