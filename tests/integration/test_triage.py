"""Incident triage and CMDB reconciliation on real chDB (docs/triage.md): deployments,
catalog entries and alerts as the ledger stores them; the suspects ranking through the
reader, `GET /v1/suspects` and `shipledger suspects`; the inputs other parts of the ledger
provide (change sets, verification verdicts) once their tables exist; `shipledger cmdb
reconcile` twice on the same export."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from shipledger.cli import cli
from shipledger.settings import Settings
from shipledger.sinks.ledger.reader import LedgerReader, SuspectsQuery
from shipledger.sinks.ledger.store import LedgerStore
from tests.kit import ledger_env, own_settings, read_route, registered_api

pytestmark = pytest.mark.integration

AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
TENANT = "acme"
FIXTURES = Path(__file__).parent.parent / "fixtures" / "cmdb"

_RECORD = (
    "INSERT INTO deployment_records (tenant, deployment_id, record_id, seq, status, kind,\n"
    "    service, environment, environment_raw, team, commit_sha, actor, `trigger`,\n"
    "    policy_version, started_at, updated_at, event_count, last_event_id, last_event_type,\n"
    "    rollback_of, retain_until)\n"
    "VALUES ({tenant:String}, {dep:String}, concat({dep:String}, '-', toString({seq:Int32})),\n"
    "    {seq:Int32}, {status:String}, {kind:String}, {service:String}, 'prod', 'production',\n"
    "    {team:String}, {sha:String}, 'alice', 'automated', 'p-1', {at:DateTime64(3, 'UTC')},\n"
    "    {at:DateTime64(3, 'UTC')}, {seq:Int32}, 'e', 'started', {rollback_of:Nullable(String)},\n"
    "    toDateTime64('2100-01-01', 3, 'UTC'))"
)
_CATALOG = (
    "INSERT INTO catalog_events (tenant, event_id, occurred_at, entity, action, name,\n"
    "    owner_team, dependencies, retain_until)\n"
    "VALUES ({tenant:String}, {id:String}, {at:DateTime64(3, 'UTC')}, 'service', 'created',\n"
    "    {name:String}, {owner:String}, {deps:Array(String)}, toDateTime64('2100-01-01', 3, 'UTC'))"
)
_DRIFT = (
    "INSERT INTO alerts (alert_id, rule, severity, message, evidence, policy_version,\n"
    "    deployment_id, event_id, tenant, service, environment, actor, occurred_at, detected_at,\n"
    "    retain_until)\n"
    "VALUES ('a-drift', 'config_drift', 'high', 'drift',\n"
    "    map('resources', 'aws_db_instance.main'),\n"
    "    'p-1', 'd-db', 'e', {tenant:String}, 'db', 'prod', 'alice', {at:DateTime64(3, 'UTC')},\n"
    "    {at:DateTime64(3, 'UTC')}, toDateTime64('2100-01-01', 3, 'UTC'))"
)


def _deploy(store: LedgerStore, dep: str, service: str, minutes: float, **kw: Any) -> None:
    """Deployment `dep` of `service` started `minutes` before AT (negative: after): its first
    record in progress, then its outcome."""
    at = AT - timedelta(minutes=minutes)
    for seq, status in enumerate(("in_progress", kw.get("status", "succeeded")), start=1):
        store.command(
            _RECORD,
            {
                "tenant": TENANT,
                "dep": dep,
                "seq": seq,
                "status": status,
                "kind": kw.get("kind", "release"),
                "service": service,
                "team": kw.get("team", "payments"),
                "sha": dep.ljust(40, "0"),
                "at": at,
                "rollback_of": kw.get("rollback_of"),
            },
        )


@pytest.fixture(scope="module")
def triage_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return own_settings(tmp_path_factory.mktemp("triage"), api_port=0, tenant=TENANT)


@pytest.fixture(scope="module")
def store(triage_settings: Settings) -> Iterator[LedgerStore]:
    """checkout depends on payments, payments on db; search is unrelated.

    d-old   checkout  20 h before      (only the service itself counts)
    d-db    db        60 min before    a config_drift alert
    d-pay   payments  30 min before    failed
    d-co    checkout  10 min before    rolled back by d-rb 5 min after the incident
    d-search search    5 min before    not a dependency: never a suspect
    d-after checkout  10 min after     after the incident: never a suspect"""
    with LedgerStore.open(triage_settings) as store:
        store.ensure_schema()
        for name, owner, deps in (
            ("checkout", "payments", ["payments"]),
            ("payments", "payments", ["db"]),
            ("db", "platform", []),
        ):
            store.command(
                _CATALOG,
                {"tenant": TENANT, "id": f"c-{name}", "at": AT - timedelta(days=3),
                 "name": name, "owner": owner, "deps": deps},
            )  # fmt: skip
        _deploy(store, "d-old", "checkout", 20 * 60)
        _deploy(store, "d-db", "db", 60, team="platform")
        _deploy(store, "d-pay", "payments", 30, status="failed")
        _deploy(store, "d-co", "checkout", 10)
        _deploy(store, "d-rb", "checkout", -5, kind="rollback", rollback_of="d-co")
        _deploy(store, "d-search", "search", 5, team="search")
        _deploy(store, "d-after", "checkout", -10)
        store.command(_DRIFT, {"tenant": TENANT, "at": AT - timedelta(minutes=50)})
        yield store


def _query(**kw: Any) -> SuspectsQuery:
    return SuspectsQuery(tenant=TENANT, service="checkout", at=AT, **kw)


def test_suspects_are_ranked_with_their_reasons(store: LedgerStore) -> None:
    ranked = LedgerReader(store).suspects(_query())
    assert [s.candidate.deployment_id for s in ranked] == ["d-co", "d-pay", "d-db", "d-old"]
    first, pay, db, old = ranked
    assert first.candidate.rolled_back_by == "d-rb"
    assert "rolled back afterwards by d-rb (+10)" in first.why
    assert "checkout itself (+20)" in first.why
    assert "deployment failed (+12)" in pay.why
    assert "a direct dependency of checkout (+10)" in pay.why
    assert db.candidate.drift == ("aws_db_instance.main",)
    assert "configuration drift: aws_db_instance.main (+10)" in db.why
    assert "a dependency of checkout, 2 hops away" in db.why
    assert old.score == pytest.approx(20.0, abs=0.1)
    # The score is the sum of its named parts, always.
    for suspect in ranked:
        assert suspect.score == pytest.approx(sum(p.points for p in suspect.parts), abs=0.05)
    # Depth 0: only the service itself; a narrower window drops the old one.
    assert [s.candidate.deployment_id for s in LedgerReader(store).suspects(
        _query(max_depth=0, lookback=timedelta(hours=2)))] == ["d-co"]  # fmt: skip
    # Another tenant sees nothing of acme's.
    other = SuspectsQuery(tenant="globex", service="checkout", at=AT)
    assert LedgerReader(store).suspects(other) == []


def test_change_sets_and_verdicts_count_in_the_score(store: LedgerStore) -> None:
    """The change sets and verdicts other parts of the ledger write: the latest change set
    of a deployment gives its size, its verdict counts, and a deployment without either
    reads as unknown."""
    # Each filed beside its deployment's record (started_at; triage reads them there).
    store.command(
        "INSERT INTO deployment_change_sets (tenant, deployment_id, service, environment,"
        " from_sha, to_sha, commit_count, pr_count, reverse, computed_at, started_at,"
        " retain_until) VALUES ('acme', 'd-co', 'checkout', 'prod', NULL, 'x', 2, 1, 0,"
        " now64(3), {co:DateTime64(3, 'UTC')}, {keep:DateTime64(3, 'UTC')}),"
        " ('acme', 'd-co', 'checkout', 'prod', NULL, 'x', 7, 1, 0, now64(3) + 1,"
        " {co:DateTime64(3, 'UTC')}, {keep:DateTime64(3, 'UTC')})",
        {"co": AT - timedelta(minutes=10), "keep": AT + timedelta(days=3650)},
    )
    store.command(
        "INSERT INTO deployment_verifications (tenant, deployment_id, service, environment,"
        " verdict, score, evidence, window_end, decided_at, started_at, retain_until) VALUES"
        " ('acme', 'd-pay', 'payments', 'prod', 'failed_verification', 0.1, '', now64(3),"
        " now64(3), {pay:DateTime64(3, 'UTC')}, {keep:DateTime64(3, 'UTC')})",
        {"pay": AT - timedelta(minutes=30), "keep": AT + timedelta(days=3650)},
    )
    try:
        ranked = {s.candidate.deployment_id: s for s in LedgerReader(store).suspects(_query())}
        assert "7 commits shipped" in ranked["d-co"].why  # the latest computation wins
        assert "verification: failed_verification (+15)" in ranked["d-pay"].why
        assert ranked["d-db"].parts[2].detail == "change size unknown"
    finally:
        for table in ("deployment_change_sets", "deployment_verifications", "suspect_inputs"):
            store.command(f"TRUNCATE TABLE {table}")


def test_the_api_and_the_command_serve_the_same_ranking(
    store: LedgerStore, triage_settings: Settings
) -> None:
    """`GET /v1/suspects` is tenant-scoped by the token; `shipledger suspects` goes through it
    while a stack owns the data dir (this test process holds it, as `up` would)."""
    params = {"service": "checkout", "at": AT.isoformat()}
    with read_route(triage_settings, store, TENANT, "/v1/suspects", params) as route:
        mine = route.get(route.mine)
        foreign = route.get(route.other, tenant=TENANT)
        bad = route.get(route.mine, at="2026-11-30T12:00:00")
        with registered_api(triage_settings, route.server):
            env = ledger_env(triage_settings.data_dir)
            args = ["suspects", "--service", "checkout", "--at", "2026-11-30T12:00:00Z",
                    "--tenant", TENANT]  # fmt: skip
            as_json = CliRunner().invoke(cli, [*args, "--format", "json"], env=env)
            as_csv = CliRunner().invoke(cli, [*args, "--format", "csv"], env=env)
            as_table = CliRunner().invoke(cli, args, env=env)
    assert mine.status_code == 200, mine.text
    suspects = mine.json()["suspects"]
    assert [s["deployment_id"] for s in suspects] == ["d-co", "d-pay", "d-db", "d-old"]
    assert [p["name"] for p in suspects[0]["parts"]] == [
        "time_proximity", "dependency_distance", "change_size", "verification",
        "config_drift", "rollback",
    ]  # fmt: skip
    assert foreign.status_code == 403
    assert bad.status_code == 400 and "at: needs a time zone" in bad.text
    assert as_json.exit_code == 0, as_json.output
    # The API server of this process logs into the same captured stdout: skip its lines.
    printed, _ = json.JSONDecoder().raw_decode(as_json.output[as_json.output.index("[\n") :])
    assert printed == suspects
    assert as_csv.exit_code == 0, as_csv.output
    lines = as_csv.output.splitlines()
    header, first = lines[lines.index(next(x for x in lines if x.startswith("rank,"))) :][:2]
    assert header == (
        "rank,score,deployment_id,service,environment,started_at,status,time_proximity,"
        "dependency_distance,change_size,verification,config_drift,rollback,why"
    )
    assert first.startswith(f"1,{suspects[0]['score']},d-co,checkout,prod,")
    assert as_table.exit_code == 0 and "d-pay" in as_table.output


def test_cmdb_reconcile_twice_stores_the_same_findings(
    store: LedgerStore, triage_settings: Settings, tmp_path: Path
) -> None:
    """The command opens the ledger itself (no stack runs), so the module's store steps aside;
    the same export (CSV, then JSON with the same CIs is another export) twice."""
    store.close()
    env = {**ledger_env(triage_settings.data_dir), "SHIPLEDGER_TENANT": TENANT}
    export = FIXTURES / "cmdb_ci_service.csv"
    args = ["cmdb", "reconcile", "--file", str(export), "--format", "json"]
    first = CliRunner().invoke(cli, args, env=env)
    again = CliRunner().invoke(cli, args, env=env)
    as_json = CliRunner().invoke(
        cli, ["cmdb", "reconcile", "--file", str(FIXTURES / "cmdb_ci_service.json")], env=env
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("sys_id,name\n1,checkout\n2,\n")
    refused = CliRunner().invoke(cli, ["cmdb", "reconcile", "--file", str(bad)], env=env)
    assert first.exit_code == 0, first.output
    report = json.loads(first.output)
    assert report["stored_now"] is True and report["configuration_items"] == 4
    assert [(f["finding"], f["service"], f["cmdb_value"], f["ledger_value"])
            for f in report["findings"]] == [
        ("deployed_not_in_cmdb", "search", "", "prod"),
        ("ci_never_deployed", "legacy-fax", "", ""),
        ("owner_mismatch", "payments", "billing", "payments"),
        ("environment_mismatch", "db", "dev", "prod"),
    ]  # fmt: skip
    assert again.exit_code == 0, again.output
    repeated = json.loads(again.output)
    assert repeated["stored_now"] is False
    assert repeated["findings"] == report["findings"]
    assert as_json.exit_code == 0, as_json.output
    assert "4 configuration items, 4 findings stored" in as_json.output
    assert refused.exit_code == 2
    assert "line 3: name: required, empty" in refused.output
    with LedgerStore.open(triage_settings, existing=True) as reopened:
        _, rows = reopened.query(
            "SELECT export_sha256, count() FROM cmdb_findings GROUP BY export_sha256"
        )
    assert sorted(n for _, n in rows) == [4, 4]  # once per export, not per run
