"""The comparison of observed changes with ledger deployments (`shipledger.reconcile.compare`),
the period of a run and its identity: pure."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from shipledger.reconcile.compare import (
    Completeness,
    LedgerDeployment,
    Scope,
    Tolerances,
    compare,
    group_changes,
)
from shipledger.reconcile.evidence import Observation
from shipledger.reconcile.mapping import Target, load_mapping
from shipledger.reconcile.period import PeriodError, period, quarter_window
from shipledger.reconcile.run import run_id

DAY = datetime(2026, 11, 30, tzinfo=UTC)
SCOPE = Scope("k8s-audit", "acme", DAY, DAY + timedelta(days=1))
TOLERANCES = Tolerances(timedelta(minutes=10), timedelta(hours=1))
MAPPING = load_mapping(Path(__file__).parent.parent / "fixtures" / "reconcile" / "mapping.yaml")


def _at(hour: int, minute: int = 0, second: int = 0) -> datetime:
    return DAY.replace(hour=hour, minute=minute, second=second)


def _seen(service: str, at: datetime, line: int, env: str = "prod") -> tuple[Observation, Target]:
    observation = Observation(
        "k8s-audit", f"a.log:{line}", at, at, "patch deployments", service, ()
    )
    return observation, Target("acme", service, env)


def _deployment(
    dep: str, service: str, start: datetime, minutes: float = 5, **kw: str
) -> LedgerDeployment:
    return LedgerDeployment(
        dep,
        service,
        kw.get("environment", "prod"),
        kw.get("team", "payments"),
        kw.get("status", "succeeded"),
        start,
        start + timedelta(minutes=minutes),
    )


def _covered(service: str, environment: str) -> bool:
    return environment == "prod"


def test_observations_close_together_are_one_change() -> None:
    changes = group_changes(
        [
            _seen("cart", _at(13), 1),
            _seen("cart", _at(13, 0, 20), 2),
            _seen("cart", _at(13, 9, 59), 3),  # under 10 min after the previous: same change
            _seen("cart", _at(13, 30), 4),
            _seen("checkout", _at(13, 0, 10), 5),
        ],
        timedelta(minutes=10),
    )
    assert [(c.target.service, c.at, c.until, c.locations) for c in changes] == [
        ("cart", _at(13), _at(13, 9, 59), ("a.log:1", "a.log:2", "a.log:3")),
        ("checkout", _at(13, 0, 10), _at(13, 0, 10), ("a.log:5",)),
        ("cart", _at(13, 30), _at(13, 30), ("a.log:4",)),
    ]


def test_unreported_unobserved_and_timing_with_completeness_per_team() -> None:
    changes = group_changes(
        [
            _seen("checkout", _at(11, 2), 1),  # during d-co: matched
            _seen("payments", _at(9, 30), 5),  # 26 min after d-pay finished: timing
            _seen("cart", _at(13), 6),  # no deployment: unreported (team from the ledger)
            _seen("cart", _at(13, 0, 20), 7),
            _seen("search", _at(14), 8, env="staging"),  # d-st 2 h earlier: unreported
            _seen("checkout", DAY - timedelta(hours=1), 9),  # before the period: not counted
        ],
        TOLERANCES.tolerance,
    )
    deployments = [
        _deployment("d-pay", "payments", _at(9)),
        _deployment("d-co", "checkout", _at(11)),
        _deployment("d-st", "search", _at(12), environment="staging", team="search"),
        _deployment("d-search", "search", _at(10), team="search"),  # prod covered: unobserved
        _deployment("d-failed", "search", _at(15), team="search", status="failed"),
        _deployment("d-dev", "search", _at(15), environment="dev", team="search"),  # not covered
    ]
    result = compare(
        SCOPE, changes, deployments, _covered, {"cart": "payments", "search": "search"}, TOLERANCES
    )
    assert [(f.kind, f.service, f.environment, f.team, f.deployment_id, f.evidence)
            for f in result.findings] == [
        ("unreported", "cart", "prod", "payments", "", "a.log:6 (+1 more)"),
        ("unreported", "search", "staging", "search", "", "a.log:8"),
        ("unobserved", "search", "prod", "search", "d-search", ""),
        ("unobserved", "search", "staging", "search", "d-st", ""),
        ("timing", "payments", "prod", "payments", "d-pay", "a.log:5"),
    ]  # fmt: skip
    timing = result.findings[-1]
    assert timing.detail == (
        "observed 2026-11-30T09:30:00Z, 25.0 min outside the ledger's "
        "2026-11-30T09:00:00Z..09:05:00Z"
    )
    assert result.findings[0].observed_at == _at(13)
    assert (result.changes, result.matched) == (4, 2)
    assert result.completeness == [Completeness("payments", 3, 2), Completeness("search", 1, 0)]
    assert [c.ratio for c in result.completeness] == [0.6667, 0.0]


def test_each_deployment_matches_one_change_the_closest() -> None:
    changes = group_changes(
        [_seen("checkout", _at(11, 2), 1), _seen("checkout", _at(11, 40), 2)],
        TOLERANCES.tolerance,
    )
    result = compare(
        SCOPE, changes, [_deployment("d-co", "checkout", _at(11))], _covered, {}, TOLERANCES
    )
    assert [(f.kind, f.evidence) for f in result.findings] == [("unreported", "a.log:2")]


def test_another_tenants_changes_are_not_this_runs() -> None:
    observation, _ = _seen("cart", _at(13), 1)
    changes = group_changes([(observation, Target("globex", "cart", "prod"))], timedelta(1))
    assert compare(SCOPE, changes, [], _covered, {}, TOLERANCES).changes == 0


def test_the_period_is_a_quarter_days_or_the_evidence() -> None:
    assert quarter_window("2026Q4") == (datetime(2026, 10, 1, tzinfo=UTC),
                                        datetime(2027, 1, 1, tzinfo=UTC))  # fmt: skip
    assert quarter_window("2027q1")[1] == datetime(2027, 4, 1, tzinfo=UTC)
    assert period(None, date(2026, 11, 1), date(2026, 11, 30), []) == (
        datetime(2026, 11, 1, tzinfo=UTC),
        datetime(2026, 12, 1, tzinfo=UTC),
    )
    assert period(None, None, None, [_at(13), _at(9)]) == (DAY, DAY + timedelta(days=1))
    for quarter, since, until, option in (
        ("2026Q5", None, None, "--quarter"),
        ("2026Q4", date(2026, 10, 1), None, "--quarter"),
        (None, None, None, "--since"),
        (None, date(2026, 11, 2), date(2026, 11, 1), "--until"),
        # Outside the ledger's years: a quarter of year 0 or 9999, or a last day of 9999-12-31,
        # was a ValueError/OverflowError traceback (no date holds them or the day after).
        ("0000Q1", None, None, "--quarter"),
        ("9999Q4", None, None, "--quarter"),
        (None, date(1, 1, 1), date(2026, 1, 1), "--since"),
        (None, date(2026, 1, 1), date(9999, 12, 31), "--until"),
    ):
        with pytest.raises(PeriodError) as raised:
            period(quarter, since, until, [])
        assert raised.value.option == option


def test_the_run_id_is_the_same_for_the_same_inputs_only() -> None:
    deployments = [_deployment("d-co", "checkout", _at(11)), _deployment("d-pay", "pay", _at(9))]
    first = run_id(SCOPE, TOLERANCES, MAPPING, ["b", "a"], deployments)
    assert first == run_id(SCOPE, TOLERANCES, MAPPING, ["a", "b"], deployments[::-1])
    assert first != run_id(SCOPE, TOLERANCES, MAPPING, ["a"], deployments)
    assert first != run_id(SCOPE, TOLERANCES, MAPPING, ["a", "b"], deployments[:1])
    later = Tolerances(timedelta(minutes=5), TOLERANCES.match_window)
    assert first != run_id(SCOPE, later, MAPPING, ["a", "b"], deployments)
