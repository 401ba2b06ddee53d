"""`run_read_query` and `shipledger query` on real chDB: read-only and tenant scoping are
enforced by ClickHouse, whichever way a query reaches the rows.

While `up` runs, queries go through its API (`POST /v1/query`): the routing tests serve the
real API (uvicorn on loopback) over the test's ledger store.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from shipledger.api.auth import AuthStore
from shipledger.api.server import ApiServer
from shipledger.cli import cli
from shipledger.settings import Settings
from shipledger.sinks import ddl
from shipledger.sinks.query import (
    QueryError,
    QueryResult,
    format_csv,
    format_json,
    format_table,
    run_read_query,
)
from shipledger.sinks.store import LedgerStore
from shipledger.stackfile import StackInfo, write_stack

pytestmark = pytest.mark.integration

#: The `ledger` fixture (tests/conftest.py): 5 events, records and alerts per tenant.
TENANTS = ("acme", "globex")
PER_TENANT = 5
ALL = PER_TENANT * len(TENANTS)


def q(store: LedgerStore, sql: str, tenant: str | None = None) -> QueryResult:
    return run_read_query(store, sql, tenant=tenant, max_rows=1000)


# --- read-only ------------------------------------------------------------------------------
WRITES = [
    "INSERT INTO shipledger.alerts (alert_id, tenant) VALUES ('x', 'acme')",
    "INSERT INTO deployment_events SELECT * FROM deployment_events",
    "ALTER TABLE shipledger.alerts DELETE WHERE 1",
    "DELETE FROM shipledger.alerts WHERE 1",
    "TRUNCATE TABLE shipledger.alerts",
    "DROP TABLE shipledger.alerts",
    "CREATE TABLE shipledger.x (a Int8) ENGINE = Memory",
    "RENAME TABLE shipledger.alerts TO shipledger.gone",
    "OPTIMIZE TABLE shipledger.alerts FINAL",
    "SET readonly = 0",
    "SYSTEM STOP MERGES",
    "SELECT 1 SETTINGS readonly = 0",
    "INSERT INTO FUNCTION file('out.csv', 'CSV') SELECT 1",
]


@pytest.mark.parametrize("sql", WRITES)
def test_writes_are_refused_by_clickhouse(ledger: LedgerStore, sql: str) -> None:
    with pytest.raises(QueryError, match=r"read-only|readonly|READONLY"):
        q(ledger, sql)
    assert ledger.count(ddl.ALERTS) == ALL


def test_into_outfile_writes_no_file(ledger: LedgerStore, tmp_path: Path) -> None:
    """chDB allows INTO OUTFILE under readonly=1: the subquery wrapping makes it a syntax error."""
    target = tmp_path / "leak.csv"
    with pytest.raises(QueryError, match="INTO OUTFILE"):
        q(ledger, f"SELECT * FROM deployment_events INTO OUTFILE '{target}'")
    assert not target.exists()


def test_statements_that_are_not_one_select_are_refused(ledger: LedgerStore) -> None:
    with pytest.raises(QueryError, match="Multi-statements"):
        q(ledger, "SELECT 1; SELECT 2")
    with pytest.raises(QueryError, match="only SELECT"):
        q(ledger, "SHOW TABLES")
    with pytest.raises(QueryError, match="sql: empty"):
        q(ledger, "  ")


def test_a_select_returns_names_types_rows_and_truncation(ledger: LedgerStore) -> None:
    result = q(ledger, "SELECT tenant, count() AS n FROM deployment_events GROUP BY tenant")
    assert result.columns == ["tenant", "n"]
    assert result.types == ["LowCardinality(String)", "UInt64"]
    assert sorted(result.rows) == [(t, PER_TENANT) for t in TENANTS]
    capped = run_read_query(ledger, "SELECT * FROM deployment_events", tenant=None, max_rows=2)
    assert len(capped.rows) == 2
    assert capped.truncated


# --- tenant scoping --------------------------------------------------------------------------
SCOPED = {
    "query view": "SELECT tenant FROM deployment_events",
    "hot table": "SELECT tenant FROM shipledger.deployment_events",
    "cold table": "SELECT tenant FROM shipledger_cold.deployment_events",
    "ledger view": "SELECT tenant FROM deployments",
    "hot ledger view": "SELECT tenant FROM shipledger.deployments",
    "subquery": "SELECT tenant FROM (SELECT * FROM shipledger.deployment_records)",
    "cte": "WITH x AS (SELECT tenant FROM alerts) SELECT tenant FROM x",
    "join": (
        "SELECT r.tenant FROM shipledger.deployment_events AS e "
        "FULL OUTER JOIN shipledger.deployment_records AS r ON e.event_id = r.record_id"
    ),
    "join other side": (
        "SELECT e.tenant FROM shipledger.deployment_events AS e "
        "FULL OUTER JOIN shipledger.deployment_records AS r ON e.event_id = r.record_id"
    ),
    "in subquery": (
        "SELECT 'globex' AS tenant FROM numbers(1) "
        "WHERE 'globex' IN (SELECT tenant FROM shipledger.alerts)"
    ),
    "scalar subquery": (
        "SELECT (SELECT groupUniqArray(tenant) FROM shipledger.alerts)[1] AS tenant "
        "FROM numbers(1) WHERE length((SELECT groupUniqArray(tenant) FROM shipledger.alerts)) > 1"
    ),
    "union": "SELECT tenant FROM alerts UNION ALL SELECT tenant FROM shipledger.alerts",
    "lifted filter in a subquery": (
        "SELECT tenant FROM (SELECT tenant FROM shipledger.alerts "
        "SETTINGS additional_table_filters = {})"
    ),
}


@pytest.mark.parametrize("name", SCOPED)
def test_a_tenant_reads_only_its_rows(ledger: LedgerStore, name: str) -> None:
    """Every way to reach a table returns acme's rows only (or nothing, or a refusal)."""
    try:
        result = q(ledger, SCOPED[name], tenant="acme")
    except QueryError as exc:
        assert "readonly" in str(exc)  # only the filter-lifting attempt may fail
        return
    assert {row[0] for row in result.rows} <= {"acme"}
    unscoped = q(ledger, SCOPED[name])
    assert len(result.rows) < len(unscoped.rows) or not unscoped.rows


REFUSED = {
    "merge()": "SELECT tenant FROM merge('shipledger', '^alerts$')",
    "mergeTreeIndex()": "SELECT * FROM mergeTreeIndex('shipledger', 'alerts')",
    "file() table function": "SELECT * FROM file('/etc/hostname', 'LineAsString')",
    "cold file via file()": (
        "SELECT * FROM file('{cold}/deployment_events/tenant=globex/*.parquet', 'Parquet')"
    ),
    "file() scalar": "SELECT file('/etc/hostname')",
    "url()": "SELECT * FROM url('http://127.0.0.1:9/x', 'CSV', 'a String')",
    "remote()": "SELECT * FROM remote('127.0.0.1', shipledger.alerts)",
    "system table": "SELECT * FROM system.parts",
    "view() function": "SELECT * FROM view(SELECT tenant FROM merge('shipledger', '^alerts$'))",
}


@pytest.mark.parametrize("name", REFUSED)
def test_sources_the_filter_cannot_cover_are_refused(ledger: LedgerStore, name: str) -> None:
    sql = REFUSED[name].format(cold=ledger.cold_root)
    with pytest.raises(QueryError, match=r"refused|readonly|READONLY"):
        q(ledger, sql, tenant="acme")


def test_merge_reads_around_the_filter_so_it_is_refused_even_unscoped(
    ledger: LedgerStore,
) -> None:
    """The measurement behind the refusal: merge() ignores additional_table_filters."""
    with pytest.raises(QueryError, match=r"merge\(\) is refused"):
        q(ledger, "SELECT tenant FROM merge('shipledger', '^alerts$')")


def test_an_unknown_tenant_sees_nothing(ledger: LedgerStore) -> None:
    assert q(ledger, "SELECT count() FROM deployment_events", tenant="nobody").rows == [(0,)]
    assert q(ledger, "SELECT count() FROM deployment_events", tenant="x' OR 1=1 --").rows == [(0,)]


# --- formats ---------------------------------------------------------------------------------
def test_formats() -> None:
    long = "x" * 100
    result = QueryResult(
        columns=["service", "n", "attrs"],
        types=["String", "UInt64", "Map(String, String)"],
        rows=[("checkout", 12, {"team": "payments"}), (long, 3, {})],
    )
    table = format_table(result).splitlines()
    assert table[0].split() == ["service", "n", "attrs"]
    assert table[2].startswith("checkout")
    assert "…" in table[3] and len(table[3]) < 80  # long cells are cut
    assert table[-1] == "(2 rows)"
    assert [len(rule) for rule in table[1].split("  ")] == [40, 2, 20]  # column widths
    assert format_csv(result).splitlines()[:2] == [
        "service,n,attrs",
        'checkout,12,"{""team"": ""payments""}"',
    ]
    assert json.loads(format_json(result))[0] == {
        "service": "checkout",
        "n": 12,
        "attrs": {"team": "payments"},
    }
    roundtrip = QueryResult.from_json(json.loads(json.dumps(result.to_json())))
    assert roundtrip.rows[0] == ("checkout", 12, {"team": "payments"})


# --- the command and its routing -------------------------------------------------------------
def invoke(settings: Settings, *args: str) -> tuple[int, str]:
    env = {"SHIPLEDGER_DATA_DIR": str(settings.data_dir)}
    result = CliRunner().invoke(cli, ["query", *args], env=env)
    return result.exit_code, result.output


def test_query_command_opens_chdb_when_no_stack_runs(
    ledger: LedgerStore, settings: Settings
) -> None:
    ledger.close()  # one chDB data dir per process: the command opens its own
    code, out = invoke(settings, "--format", "csv", "SELECT count() FROM deployment_events")
    assert code == 0, out
    assert out.splitlines() == ["count()", str(ALL)]
    sql = "SELECT DISTINCT tenant FROM alerts"
    code, out = invoke(settings, "--tenant", "acme", "--format", "json", sql)
    assert code == 0, out
    assert json.loads(out) == [{"tenant": "acme"}]
    code, out = invoke(settings, "DROP TABLE shipledger.alerts")
    assert code == 1
    assert "read-only" in out


def test_query_command_says_so_when_a_stack_without_api_owns_the_data_dir(
    settings: Settings,
) -> None:
    write_stack(settings, StackInfo(bootstrap="127.0.0.1:1", pid=os.getpid(), clickhouse_url=""))
    code, out = invoke(settings, "SELECT 1")
    assert code == 1
    assert f"pid {os.getpid()}" in out
    assert "no query API" in out


@pytest.fixture
def api(ledger: LedgerStore, settings: Settings) -> Iterator[ApiServer]:
    """The real API on a loopback port over the `ledger` store (no broker: reads only)."""
    with ApiServer(settings.model_copy(update={"api_port": 0}), "127.0.0.1:1", ledger) as server:
        yield server


def test_query_command_goes_through_the_api_of_a_running_stack(
    api: ApiServer, settings: Settings
) -> None:
    """The test process holds the chDB dir (as `up` would): the command must use the API."""
    info = StackInfo(
        bootstrap="127.0.0.1:1",
        pid=os.getpid(),
        clickhouse_url=settings.resolved_clickhouse_url,
        api_url=api.url,
        api_token=api.operator_token(),
    )
    write_stack(settings, info)
    assert (settings.data_dir / "stack.json").stat().st_mode & 0o777 == 0o600
    sql = "SELECT tenant, count() AS n FROM alerts GROUP BY tenant"
    code, out = invoke(settings, "--tenant", "globex", sql)
    assert code == 0, out
    assert out.splitlines()[2].split() == ["globex", str(PER_TENANT)]
    code, out = invoke(settings, "INSERT INTO shipledger.alerts (alert_id) VALUES ('x')")
    assert code == 1
    assert "read-only" in out
    write_stack(settings, info.model_copy(update={"api_token": "wrong"}))
    code, out = invoke(settings, "SELECT 1")
    assert code == 1
    assert "401" in out


def test_the_query_api_scopes_a_tenant_token_to_its_tenant(
    api: ApiServer, settings: Settings
) -> None:
    auth = AuthStore(settings.resolved_auth_db)
    try:
        token, _ = auth.create_token("acme", ("read",))
    finally:
        auth.close()
    headers = {"Authorization": f"Bearer {token}"}
    sql = "SELECT DISTINCT tenant FROM deployment_events"
    with httpx.Client(base_url=api.url, headers=headers) as client:
        own = client.post("/v1/query", json={"sql": sql})
        other = client.post("/v1/query", json={"sql": sql, "tenant": "globex"})
    assert own.status_code == 200, own.text
    assert own.json()["rows"] == [["acme"]]
    assert other.status_code == 403 and "tenant" in other.json()["error"]


def test_the_parameterized_view_is_tenant_scoped_too(ledger: LedgerStore) -> None:
    sql = "SELECT DISTINCT tenant FROM running_at(at = now64(3))"
    assert len(run_read_query(ledger, sql, tenant=None, max_rows=10).rows) == 2
    scoped = run_read_query(ledger, sql, tenant="acme", max_rows=10)
    assert scoped.rows == [("acme",)]
