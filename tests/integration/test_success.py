"""Success criteria on real chDB (docs/metrics.md): two weeks of deployments stored the way the
pipeline stores them, alerts beside them, and the mean time to detect, the rollback
durations, the trend and the teams missing their policy targets compared with the values
computed by hand below, traps included (a retried pipeline, a failure no alert caught, an
alert of a rule that detects nothing, a failed event before the alert, a rollback that itself
failed, a failure the ledger cannot date)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from shipledger.cli import cli
from shipledger.schemas.policy import SuccessCriteria, load_policy, parse_policy
from shipledger.schemas.scopes import RowScope
from shipledger.settings import Settings
from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.dora import DoraQuery
from shipledger.sinks.ledger.reader import LedgerReader, success_report
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.sinks.rows import alert_row
from shipledger.sinks.writer import LedgerWriter
from tests.integration.test_dora import _at, _deployment
from tests.kit import own_settings, printed, read_route, registered_api, sample_alert, wire

pytestmark = pytest.mark.integration

C = "a" * 40
POLICY = """\
version: success-test
success_criteria:
  defaults: {detect_within: 30m, rollback_within: 15m}
  teams:
    basket: {detect_within: 1h}
    payments: {rollback_within: 10m}
"""
WINDOW = DoraQuery(since=date(2026, 11, 23), until=date(2026, 12, 6), by=("team",))


def _alert(writer: LedgerWriter, dep: str, rule: str, at: datetime, team: str) -> None:
    # A high alert on checkout in prod by alice: the kit's sample, of this deployment.
    alert = sample_alert(
        alert_id=f"{dep}-{rule}",
        rule=rule,
        message=rule,
        policy_version="1",
        deployment_id=dep,
        event_id=f"{dep}-0-started",
        tenant="retail",
        occurred_at=at,
        team=team,
    )
    row = alert_row(wire("io.shipledger.v1.Alert", alert.to_avro()))
    writer.write_rows({ddl.ALERTS: [row]})


def _release(w: LedgerWriter, dep: str, stages: list[tuple[str, datetime]], **kw: Any) -> None:
    _deployment(w, dep, stages, commit=C, **kw)


def _rollback(
    w: LedgerWriter, dep: str, of: str, start: datetime, end: datetime, status: str = "succeeded"
) -> None:
    _deployment(
        w, dep, [("started", start), (status, end)], commit=C, kind="rollback", rollback_of=of
    )


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    tmp = tmp_path_factory.mktemp("success")
    policy = tmp / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    return own_settings(tmp, api_port=0, policy_file=policy)


@pytest.fixture(scope="module")
def store(settings: Settings) -> Iterator[LedgerStore]:
    """Tenant retail, prod; days from Monday 2026-11-23 (`_at(day, hh, mm)`).

    Week 1, team payments (checkout):
      a1 started Mon 09:00, succeeded 09:10; suspect_deployment alert 09:40; rollback ra1
         09:50 -> 10:00. Detected 09:40 (the alert; DORA's failed_at is ra1's start 09:50):
         40 min. Rollback 09:50 -> 10:00: 10 min.
      a2 a retried pipeline: started 11:00, failed 11:05, started 11:10, succeeded 11:20:
         not a failure.
      a3 started Tue 09:00, failed 09:12, no detection alert (a missing_change_ticket alert
         at 09:01 detects nothing): detected by its failed event, 12 min. No rollback.
      a4 started Tue 14:00, failed 14:06, suspect alert 14:30 (the failed event came first):
         6 min. Rollback ra4a 14:10 -> failed 14:15 (a rollback that itself failed), ra4b
         14:20 -> 14:35: service restored 14:35; rollback 14:10 -> 14:35 = 25 min.
      -> 3 failures, detect [40, 12, 6] mean 19.3 min, rollbacks [10, 25] mean 17.5 min,
         1 failed rollback; rollback target 10 min missed.
    Week 2 (Mon 2026-11-30 = day 7), payments:
      b1 started 09:00, succeeded 09:05, suspect alert 09:20; rollback rb1 09:25 -> 09:33.
         20 min; rollback 8 min.
      b2 started 10:00, succeeded 10:05, then its own rolled_back at 10:40, no alert, no
         failed report, no remediation: a failure the ledger cannot date (undetected).
      -> 2 failures, detected 1 (20.0), rollbacks [8] (8.0), change 8 / 17.5 - 1 = -0.5429.
    Over the window, payments: 5 failures, detect [40, 12, 6, 20] mean 19.5, rollbacks
      [10, 25, 8] mean 14.3 > 10: misses its rollback target; change -0.5429.
    Team basket (cart): c1 started Wed 09:00, failed 09:45: 45 min, within its 1h target.
    Team search (search): s1 started Thu 09:00, failed 10:00: 60 min > 30 min: misses.
    """
    with LedgerStore.open(settings) as s:
        s.ensure_schema()
        w = LedgerWriter(s, load_policy(None))
        _release(w, "a1", [("started", _at(0, 9)), ("succeeded", _at(0, 9, 10))])
        _alert(w, "a1", "suspect_deployment", _at(0, 9, 40), "payments")
        _rollback(w, "ra1", "a1", _at(0, 9, 50), _at(0, 10))
        _release(
            w,
            "a2",
            [
                ("started", _at(0, 11)),
                ("failed", _at(0, 11, 5)),
                ("started", _at(0, 11, 10)),
                ("succeeded", _at(0, 11, 20)),
            ],
        )
        _release(w, "a3", [("started", _at(1, 9)), ("failed", _at(1, 9, 12))])
        _alert(w, "a3", "missing_change_ticket", _at(1, 9, 1), "payments")
        _release(w, "a4", [("started", _at(1, 14)), ("failed", _at(1, 14, 6))])
        _alert(w, "a4", "suspect_deployment", _at(1, 14, 30), "payments")
        _rollback(w, "ra4a", "a4", _at(1, 14, 10), _at(1, 14, 15), status="failed")
        _rollback(w, "ra4b", "a4", _at(1, 14, 20), _at(1, 14, 35))
        _release(w, "b1", [("started", _at(7, 9)), ("succeeded", _at(7, 9, 5))])
        _alert(w, "b1", "suspect_deployment", _at(7, 9, 20), "payments")
        _rollback(w, "rb1", "b1", _at(7, 9, 25), _at(7, 9, 33))
        _release(
            w,
            "b2",
            [
                ("started", _at(7, 10)),
                ("succeeded", _at(7, 10, 5)),
                ("rolled_back", _at(7, 10, 40)),
            ],
        )
        _release(
            w,
            "c1",
            [("started", _at(2, 9)), ("failed", _at(2, 9, 45))],
            service="cart",
            team="basket",
        )
        _release(
            w,
            "s1",
            [("started", _at(3, 9)), ("failed", _at(3, 10))],
            service="search",
            team="search",
        )
        yield s


def _report(store: LedgerStore, query: DoraQuery = WINDOW, **kw: Any) -> dict[str, Any]:
    criteria = parse_policy(POLICY).success_criteria
    failures = LedgerReader(store).failures(query, tuple(criteria.detection_rules), **kw)
    return success_report(failures, criteria).as_dict()


def _pick(rows: list[dict[str, Any]], *names: str) -> list[tuple[Any, ...]]:
    return [tuple(r[n] for n in names) for r in rows]


COLUMNS = (
    "period",
    "team",
    "failures",
    "detected",
    "detect_min",
    "rollbacks",
    "rollback_min",
    "rollback_change",
    "failed_rollbacks",
    "on_target",
)


def test_the_trend_matches_the_hand_computed_values(store: LedgerStore) -> None:
    report = _report(store)
    assert _pick(report["rows"], *COLUMNS) == [
        ("2026-11-23", "basket", 1, 1, 45.0, 0, None, None, 0, True),
        ("2026-11-23", "payments", 3, 3, 19.3, 2, 17.5, None, 1, False),
        ("2026-11-23", "search", 1, 1, 60.0, 0, None, None, 0, False),
        ("2026-11-30", "payments", 2, 1, 20.0, 1, 8.0, -0.5429, 0, True),
    ]
    assert _pick(report["totals"], *COLUMNS) == [
        ("total", "basket", 1, 1, 45.0, 0, None, None, 0, True),
        ("total", "payments", 5, 4, 19.5, 3, 14.3, -0.5429, 1, False),
        ("total", "search", 1, 1, 60.0, 0, None, None, 0, False),
    ]
    assert _pick(report["totals"], "team", "detect_target_min", "rollback_target_min") == [
        ("basket", 60.0, 15.0),
        ("payments", 30.0, 10.0),
        ("search", 30.0, 15.0),
    ]
    assert report["missing"] == [
        {"tenant": "retail", "team": "payments", "missed": ["rollback"]},
        {"tenant": "retail", "team": "search", "missed": ["detect"]},
    ]


def test_the_failures_are_doras(store: LedgerStore) -> None:
    """The same deployments DORA counts as failed (a2, the retried pipeline, is not), each
    once however many records, remediations and alerts name it."""
    failures = LedgerReader(store).failures(WINDOW, ("suspect_deployment",))
    assert sorted(f.deployment_id for f in failures) == ["a1", "a3", "a4", "b1", "b2", "c1", "s1"]
    dora = LedgerReader(store).dora(WINDOW)
    assert sum(r.failures for r in dora) == len(failures)


def test_without_detection_rules_only_failed_events_detect(store: LedgerStore) -> None:
    """No alert counts: a1 and b1 are detected when their rollback starts (DORA's failed_at),
    a4 by its failed event as before."""
    criteria = SuccessCriteria(detection_rules=[])
    failures = LedgerReader(store).failures(WINDOW, ())
    rows = success_report(failures, criteria).as_dict()["rows"]
    assert _pick(rows, "period", "team", "detect_min") == [
        ("2026-11-23", "basket", 45.0),
        ("2026-11-23", "payments", 22.7),  # [50, 12, 6]
        ("2026-11-23", "search", 60.0),
        ("2026-11-30", "payments", 25.0),  # b1: rb1 started 09:25
    ]


def test_a_month_and_a_teams_scope(store: LedgerStore) -> None:
    month = DoraQuery(since=date(2026, 11, 1), until=date(2026, 11, 30), period="month")
    rows = _report(store, month, scope=RowScope(teams=frozenset({"payments"})))["rows"]
    # November: a1, a3, a4 and b1, b2 (Monday the 30th); only the team the scope admits.
    assert _pick(rows, "period", "team", "failures", "detected", "detect_min") == [
        ("2026-11-01", "payments", 5, 4, 19.5)
    ]


def test_the_api_and_the_command_serve_the_same_report(
    store: LedgerStore, settings: Settings, tmp_path: Path
) -> None:
    """`GET /v1/metrics/success` is scoped by the token and applies the policy's targets;
    `shipledger metrics success` goes through it while a stack owns the data dir."""
    params = {"since": "2026-11-23", "until": "2026-12-06"}
    with read_route(settings, store, "retail", "/v1/metrics/success", params) as route:
        mine, theirs = route.get(route.mine), route.get(route.other)
        foreign, bad = route.get(route.other, tenant="retail"), route.get(route.mine, period="day")
        # The earliest day there is (before any ClickHouse Date): the same answer.
        ancient = route.get(route.mine, since="0001-01-01")
        with registered_api(settings, route.server):
            env = {"SHIPLEDGER_DATA_DIR": str(settings.data_dir)}
            args = ["metrics", "success", "--since", "2026-11-23", "--until", "2026-12-06"]
            as_csv = CliRunner().invoke(
                cli, [*args, "--team", "search", "--format", "csv"], env=env
            )
            as_json = CliRunner().invoke(cli, [*args, "--format", "json"], env=env)
            table = CliRunner().invoke(cli, args, env=env)
    assert mine.status_code == 200, mine.text
    assert mine.json() == _report(store, replace(WINDOW, tenant="retail"))
    assert theirs.json()["rows"] == []
    assert (foreign.status_code, bad.status_code) == (403, 400)
    assert ancient.json()["totals"] == mine.json()["totals"]
    assert "period" in bad.text
    assert as_csv.exit_code == 0, as_csv.output
    assert printed(as_csv.output).splitlines()[-3:] == [
        "period,tenant,team,failures,detected,detect_min,detect_target_min,rollbacks,"
        "rollback_min,rollback_change,rollback_target_min,failed_rollbacks,on_target",
        "2026-11-23,retail,search,1,1,60.0,30.0,0,,,15.0,0,False",
        "total,retail,search,1,1,60.0,30.0,0,,,15.0,0,False",
    ]
    assert json.loads(printed(as_json.output)) == mine.json()
    assert "Missing their target: payments (rollback), search (detect)" in table.output
