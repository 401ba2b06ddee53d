"""DORA metrics on real chDB: a fixed week of deployments, processed and stored the way the
pipeline does (processors -> Avro -> row builders -> LedgerWriter), the materialized views
fold them into `dora_deployments`/`dora_commits`, and every metric is compared with the value
computed by hand below, including the classic double-count traps (docs/metrics.md)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner

from shipledger.cli import cli
from shipledger.processors.step import process
from shipledger.schemas.families import family_of
from shipledger.schemas.models import DeploymentEvent, DeploymentRecord
from shipledger.schemas.policy import load_policy
from shipledger.schemas.scopes import RowScope
from shipledger.settings import Settings
from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.archive import archive
from shipledger.sinks.ledger.dora import DoraQuery, read_dora, rebuild_dora
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.sinks.rows import KafkaMeta, avro_row, event_row, record_row
from shipledger.sinks.writer import LedgerWriter
from tests.containers import CHDB_COLD_FILES
from tests.kit import ledger_env, own_settings, read_route, registered_api, wire

pytestmark = pytest.mark.integration

MON = datetime(2026, 11, 23, tzinfo=UTC)  # a Monday
C1, C2, C3, C4 = ("1" * 40, "2" * 40, "3" * 40, "4" * 40)
META = KafkaMeta("raw", 0, 0, None)


def _at(day: int, hh: int, mm: int = 0) -> datetime:
    return MON + timedelta(days=day, hours=hh, minutes=mm)


def _deployment(
    writer: LedgerWriter,
    dep: str,
    stages: list[tuple[str, datetime]],
    *,
    commit: str,
    service: str = "checkout",
    env: str = "prod",
    team: str = "payments",
    **kw: Any,
) -> None:
    """Every stage of one deployment through the processors, each event and record stored."""
    policy = load_policy(None)
    previous: DeploymentRecord | None = None
    for i, (stage, at) in enumerate(stages):
        event = DeploymentEvent.model_validate(
            {
                "event_id": f"{dep}-{i}-{stage}",
                "deployment_id": dep,
                "event_type": stage,
                "service": service,
                "environment": env,
                "commit_sha": commit,
                "actor": "alice",
                "tenant": "retail",
                "team": team,
                "occurred_at": at,
                **kw,
            }
        )
        previous = process(event, previous, policy, now=at).record
        writer.write_rows(
            {
                ddl.EVENTS: [
                    event_row(wire("io.shipledger.v1.DeploymentEvent", event.to_avro()), META)
                ],
                ddl.RECORDS: [
                    record_row(wire("io.shipledger.v1.DeploymentRecord", previous.to_avro()))
                ],
            }
        )


def _push(writer: LedgerWriter, sha: str, at: datetime, tenant: str = "retail") -> None:
    family = family_of("source")
    event = family.model.model_validate(
        {
            "tenant": tenant,
            "kind": "push",
            "repository": "acme/checkout",
            "ref": "main",
            "commit_sha": sha,
            "author": "alice",
            "occurred_at": at,
        }
    )
    row = avro_row(ddl.tables()[ddl.SOURCE], wire(family.schema, event.to_avro()))
    writer.write_rows({ddl.SOURCE: [row]})


@pytest.fixture(scope="module")
def dora_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return own_settings(tmp_path_factory.mktemp("dora"), api_port=0)


@pytest.fixture(scope="module")
def store(dora_settings: Settings) -> Iterator[LedgerStore]:
    """The scenario (week of Monday 2026-11-23; tenant retail):

    commits first seen: C1 Mon 05:00, C2 Mon 10:00, C3 Tue 08:00, C4 never.
    prod, checkout, team payments:
      d1 release C1: started Mon 09:00, succeeded 09:10.            lead 4h10m = 15000 s
      d2 release C2, a retried pipeline (one deployment_id): started 11:00, failed 11:05,
         started 11:10, succeeded 11:20: its latest outcome is success. lead 1h20m = 4800 s
      d3 release C3: started Tue 09:00, succeeded 09:10.            lead 1h10m = 4200 s
         r3 rollback of d3: started 10:00, succeeded 10:15: d3 failed; recovery 10:00 -> 10:15
         = 900 s; r3 is remediation, not a change.
      d4 release C4: started Wed 09:00, failed 09:05, rolled_back 09:35; and r4 rollback of
         d4 started 09:20, succeeded 09:30: ONE failure; failed 09:05, restored 09:30 = 1500 s;
         no lead time (C4 never seen, never succeeded).
      h5 hotfix: Wed 10:00 started, 10:05 succeeded: remediation, not a change.
    staging, checkout, payments: d6 release C3 Tue 08:30 -> 08:40.  lead 40m = 2400 s
    prod, cart, team basket: d7 release C1 Thu 09:00 -> 09:10.

    By hand, prod/payments for the week: 4 deployments (d1-d4, not the 12 events nor the
    3 remediations), failures 2 (d3, d4; d2 only failed an attempt), change failure rate 0.5,
    lead times [4200, 4800, 15000] -> median 4800 s = 1.333 h, recovery [900, 1500] ->
    median 1200 s = 0.333 h, 4/7 = 0.571 deployments per day, 3 remediations.
    """
    with LedgerStore.open(dora_settings) as s:
        s.ensure_schema()
        w = LedgerWriter(s, load_policy(None))
        _push(w, C1, _at(0, 5))
        _push(w, C2, _at(0, 10))
        _push(w, C3, _at(1, 8))
        _push(w, C1, _at(2, 8))  # seen again later: first sight stays Mon 05:00
        _deployment(w, "d1", [("started", _at(0, 9)), ("succeeded", _at(0, 9, 10))], commit=C1)
        _deployment(
            w,
            "d2",
            [
                ("started", _at(0, 11)),
                ("failed", _at(0, 11, 5)),
                ("started", _at(0, 11, 10)),
                ("succeeded", _at(0, 11, 20)),
            ],
            commit=C2,
        )
        _deployment(w, "d3", [("started", _at(1, 9)), ("succeeded", _at(1, 9, 10))], commit=C3)
        _deployment(
            w,
            "r3",
            [("started", _at(1, 10)), ("succeeded", _at(1, 10, 15))],
            commit=C2,
            kind="rollback",
            rollback_of="d3",
        )
        _deployment(
            w,
            "d4",
            [("started", _at(2, 9)), ("failed", _at(2, 9, 5)), ("rolled_back", _at(2, 9, 35))],
            commit=C4,
        )
        _deployment(
            w,
            "r4",
            [("started", _at(2, 9, 20)), ("succeeded", _at(2, 9, 30))],
            commit=C3,
            kind="rollback",
            rollback_of="d4",
        )
        _deployment(
            w,
            "h5",
            [("started", _at(2, 10)), ("succeeded", _at(2, 10, 5))],
            commit=C4,
            kind="hotfix",
        )
        _deployment(
            w,
            "d6",
            [("started", _at(1, 8, 30)), ("succeeded", _at(1, 8, 40))],
            commit=C3,
            env="staging",
        )
        _deployment(
            w,
            "d7",
            [("started", _at(3, 9)), ("succeeded", _at(3, 9, 10))],
            commit=C1,
            service="cart",
            team="basket",
        )
        yield s


WEEK = DoraQuery(since=date(2026, 11, 23), until=date(2026, 11, 29), period="week")


def _rows(store: LedgerStore, query: DoraQuery) -> list[dict[str, Any]]:
    return [r.as_dict() for r in read_dora(store, query)]


def test_a_teams_week_matches_the_hand_computed_values(store: LedgerStore) -> None:
    query = DoraQuery(since=WEEK.since, until=WEEK.until, teams=("payments",), tenant="retail")
    assert _rows(store, query) == [
        {
            "period": "2026-11-23",
            "tenant": "retail",
            "environment": "prod",
            "deployments": 4,
            "deploys_per_day": 0.571,
            "lead_time_h": 1.333,
            "lead_times": 3,
            "failures": 2,
            "change_failure_rate": 0.5,
            "recovery_h": 0.333,
            "recovered": 2,
            "remediations": 3,
        },
        {
            "period": "2026-11-23",
            "tenant": "retail",
            "environment": "stage",
            "deployments": 1,
            "deploys_per_day": 0.143,
            "lead_time_h": 0.667,
            "lead_times": 1,
            "failures": 0,
            "change_failure_rate": 0.0,
            "recovery_h": None,
            "recovered": 0,
            "remediations": 0,
        },
    ]


def test_lead_times_are_known_at_insert(store: LedgerStore) -> None:
    """The view looked each succeeded change's commit up as it was inserted (d1, d2, d3, d6,
    d7; not d4, which never succeeded): a report reads no commits unless a push came late."""
    _, rows = store.query(
        "SELECT arraySort(groupArrayIf(deployment_id, seen IS NOT NULL)) FROM (SELECT"
        " deployment_id, min(seen_at) AS seen FROM dora_deployments GROUP BY"
        " deployment_id)"
    )
    assert rows[0][0] == ["d1", "d2", "d3", "d6", "d7"]


def test_the_traps_a_naive_count_falls_into(store: LedgerStore) -> None:
    """What counting raw rows would say, against the metric: events are not deployments,
    `failed` alone misses the rolled-back d3 and counts the retried d2."""
    _, events = store.query(
        "SELECT count() FROM deployment_events WHERE environment = 'prod' AND team = 'payments'"
    )
    _, naive = store.query(
        "SELECT countIf(status = 'failed') / count() FROM deployments "
        "WHERE environment = 'prod' AND team = 'payments'"
    )
    assert events[0][0] == 17
    assert naive[0][0] != 0.5
    [prod] = [
        r
        for r in _rows(store, DoraQuery(since=WEEK.since, until=WEEK.until, teams=("payments",)))
        if r["environment"] == "prod"
    ]
    assert (prod["deployments"], prod["failures"]) == (4, 2)


def test_days_break_down_by_service(store: LedgerStore) -> None:
    query = DoraQuery(
        since=date(2026, 11, 24),
        until=date(2026, 11, 26),
        period="day",
        environments=("prod",),
        by=("team", "service"),
    )
    got = {
        (r["period"], r["service"]): (r["deployments"], r["failures"], r["recovery_h"])
        for r in _rows(store, query)
    }
    assert got == {
        ("2026-11-24", "checkout"): (1, 1, 0.25),  # d3, rolled back by r3 in 15 min
        ("2026-11-25", "checkout"): (1, 1, 0.417),  # d4: failed 09:05, r4 done 09:30
        ("2026-11-26", "cart"): (1, 0, None),  # d7
    }


def test_a_remediation_after_the_window_still_marks_its_deployment(store: LedgerStore) -> None:
    """d3 (Tuesday) asked alone: its rollback r3 is found within the lookahead."""
    [row] = _rows(
        store,
        DoraQuery(
            since=date(2026, 11, 24),
            until=date(2026, 11, 24),
            period="day",
            services=("checkout",),
            environments=("prod",),
        ),
    )
    assert (row["deployments"], row["failures"], row["change_failure_rate"]) == (1, 1, 1.0)


def test_month_and_visibility(store: LedgerStore) -> None:
    month = DoraQuery(
        since=date(2026, 11, 1), until=date(2026, 11, 30), period="month", by=("team",)
    )
    rows = {r["team"]: r for r in _rows(store, month)}
    assert rows["payments"]["deployments"] == 5  # d1-d4 and d6 (staging)
    assert rows["basket"]["deployments"] == 1
    assert rows["payments"]["deploys_per_day"] == round(5 / 30, 3)
    hidden = read_dora(store, month, RowScope(teams=frozenset({"payments"})))
    assert [r.key for r in hidden] == [{"team": "payments"}]


def test_a_push_stored_after_its_deployment_still_gives_a_lead_time(
    store: LedgerStore,
) -> None:
    """Topics race: the deployment's records reach the ledger before the push that named its
    commit. The report then looks the commit up itself (tenant `late`, its own rows)."""
    writer = LedgerWriter(store, load_policy(None))
    late = "5" * 40
    _deployment(
        writer,
        "late-1",
        [("started", _at(0, 9)), ("succeeded", _at(0, 9, 30))],
        commit=late,
        tenant="late",
    )
    _push(writer, late, _at(0, 7), tenant="late")
    [row] = _rows(store, DoraQuery(since=WEEK.since, until=WEEK.until, tenant="late"))
    assert (row["deployments"], row["lead_time_h"], row["lead_times"]) == (1, 2.5, 1)


@pytest.fixture(scope="module")
def cross(store: LedgerStore) -> LedgerStore:
    """`store` with tenant `cross`: payments' x1 (Mon 09:00, succeeded 09:10) rolled back by
    the platform team's deployer (kind rollback, rollback_of x1: started 09:30, succeeded
    09:45)."""
    writer = LedgerWriter(store, load_policy(None))
    _deployment(
        writer,
        "x1",
        [("started", _at(0, 9)), ("succeeded", _at(0, 9, 10))],
        commit=C1,
        tenant="cross",
    )
    _deployment(
        writer,
        "xr1",
        [("started", _at(0, 9, 30)), ("succeeded", _at(0, 9, 45))],
        commit=C2,
        service="deployer",
        team="platform",
        kind="rollback",
        rollback_of="x1",
        tenant="cross",
    )
    return store


def test_a_remediation_by_another_team_counts_for_the_deployment_it_names(
    cross: LedgerStore,
) -> None:
    """Tenant `cross` (the fixture): filed under x1's key, the rollback's facts are read with
    payments' rows: by hand, one deployment, one failure, recovered in 15 min (0.25 h); the
    rollback is platform's remediation. Filed under the rollback's own team, payments' report
    missed the failure."""
    store = cross
    week = DoraQuery(since=WEEK.since, until=WEEK.until, tenant="cross", by=("team",))
    teams = {
        team: [
            (r["deployments"], r["failures"], r["recovery_h"], r["remediations"])
            for r in _rows(store, replace(week, teams=(team,)))
        ]
        for team in ("payments", "platform")
    }
    assert teams == {"payments": [(1, 1, 0.25, 0)], "platform": [(0, 0, None, 1)]}


def test_a_remediation_stored_before_its_deployment_still_marks_it(store: LedgerStore) -> None:
    """Topics race: the rollback er1 (naming e1) reaches the ledger before e1's records, so
    its facts about e1 are filed under its own key; the report merges them by deployment id:
    e1 failed (rollback started 09:30) and was restored at 09:40, 10 min."""
    writer = LedgerWriter(store, load_policy(None))
    _deployment(
        writer,
        "er1",
        [("started", _at(0, 9, 30)), ("succeeded", _at(0, 9, 40))],
        commit=C2,
        kind="rollback",
        rollback_of="e1",
        tenant="early",
    )
    _deployment(
        writer,
        "e1",
        [("started", _at(0, 9)), ("succeeded", _at(0, 9, 10))],
        commit=C1,
        tenant="early",
    )
    [row] = _rows(store, DoraQuery(since=WEEK.since, until=WEEK.until, tenant="early"))
    assert (row["deployments"], row["failures"], row["recovery_h"]) == (1, 1, 0.167)


def test_the_api_and_the_command_serve_the_same_report(
    store: LedgerStore, dora_settings: Settings
) -> None:
    """`GET /v1/metrics/dora` is tenant-scoped by the token; `shipledger metrics dora` goes
    through it while a stack owns the data dir (this test process holds it, as `up` would)."""
    params = {"since": "2026-11-23", "until": "2026-11-29", "team": "payments"}
    with read_route(dora_settings, store, "retail", "/v1/metrics/dora", params) as route:
        mine, theirs = route.get(route.mine), route.get(route.other)
        foreign, bad = route.get(route.other, tenant="retail"), route.get(route.mine, period="year")
        with registered_api(dora_settings, route.server):
            result = CliRunner().invoke(
                cli,
                [
                    "metrics",
                    "dora",
                    "--tenant",
                    "retail",
                    "--team",
                    "payments",
                    "--since",
                    "2026-11-23",
                    "--until",
                    "2026-11-29",
                    "--environment",
                    "prod",
                    "--format",
                    "csv",
                ],
                env=ledger_env(dora_settings.data_dir),
            )
    assert mine.status_code == 200, mine.text
    assert [(r["environment"], r["deployments"], r["failures"]) for r in mine.json()["rows"]] == [
        ("prod", 4, 2),
        ("stage", 1, 0),
    ]
    assert theirs.json()["rows"] == []
    assert foreign.status_code == 403
    assert bad.status_code == 400
    assert "period" in bad.text
    assert result.exit_code == 0, result.output
    assert [
        line for line in result.output.splitlines() if line.startswith(("period,", "2026-11-23,"))
    ] == [
        "period,tenant,environment,deployments,deploys_per_day,lead_time_h,lead_times,failures,"
        "change_failure_rate,recovery_h,recovered,remediations",
        "2026-11-23,retail,prod,4,0.571,1.333,3,2,0.5,0.333,2,3",
    ]


def test_the_aggregates_are_idempotent(store: LedgerStore, tmp_path: Any) -> None:
    """Records inserted again (a replay past the writer's dedup, a restore from cold files)
    change no metric: every state is keyed by deployment id."""
    before = _rows(store, WEEK)
    store.command(
        "INSERT INTO deployment_records SELECT * FROM deployment_records"
        " WHERE deployment_id IN ('d3', 'r3')"
    )
    assert _rows(store, WEEK) == before


@pytest.mark.embedded_only(CHDB_COLD_FILES)
def test_archiving_the_rows_leaves_the_metrics_whole(store: LedgerStore) -> None:
    """`shipledger archive` moves the week's rows to cold files (deletes them from the hot
    tables, inserts nothing): the aggregates keep every metric. Runs last: it moves rows."""
    before = _rows(store, WEEK)
    report = archive(store, cold_after_days=1, now=datetime(2026, 12, 30, tzinfo=UTC))
    assert report.rows_moved
    _, hot = store.query("SELECT count() FROM deployment_records")
    assert hot[0][0] == 0
    assert _rows(store, WEEK) == before
    # A ledger that archived before its aggregates existed (`shipledger migrate
    # --rebuild-aggregates`): folded again from the cold files alone, the same metrics.
    store.command("TRUNCATE TABLE dora_deployments")
    assert _rows(store, WEEK) != before
    assert rebuild_dora(store) >= 21  # d1..d7's records, and the copies inserted above
    assert _rows(store, WEEK) == before
