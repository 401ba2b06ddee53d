"""`run_read_query` and `shipledger query` on real chDB: read-only and tenant scoping are
enforced by ClickHouse, whichever way a query reaches the rows.

While `up` runs, queries go through its API (`POST /v1/query`): the routing tests serve the
real API (uvicorn on loopback) over the test's ledger store.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from shipledger.cli import cli
from shipledger.producers.api.auth import AuthStore
from shipledger.producers.api.server import ApiServer
from shipledger.settings import Settings
from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.query import (
    DEFAULT_LIMITS,
    QueryError,
    QueryResult,
    Refused,
    format_csv,
    format_json,
    format_table,
    run_read_query,
)
from shipledger.sinks.ledger.reader import LedgerReader
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.stackfile import StackInfo, remove_stack, write_stack
from tests.kit import ledger_env, registered_api

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
#: Ways to reach ledger rows, each with what a tenant gets: its rows only, or a refusal (the
#: hot and cold databases are not the tenant's to name; the query database's views are).
SCOPED = {
    "query view": ("SELECT tenant FROM deployment_events", "rows"),
    "qualified query view": ("SELECT tenant FROM shipledger_query.deployment_events", "rows"),
    "hot table": ("SELECT tenant FROM shipledger.deployment_events", "refused"),
    "cold table": ("SELECT tenant FROM shipledger_cold.deployment_events", "refused"),
    "ledger view": ("SELECT tenant FROM deployments", "rows"),
    "hot ledger view": ("SELECT tenant FROM shipledger.deployments", "refused"),
    "subquery": ("SELECT tenant FROM (SELECT * FROM deployment_records)", "rows"),
    "cte": ("WITH x AS (SELECT tenant FROM alerts) SELECT tenant FROM x", "rows"),
    "join": (
        "SELECT r.tenant FROM deployment_events AS e "
        "FULL OUTER JOIN deployment_records AS r ON e.event_id = r.record_id",
        "rows",
    ),
    "join other side": (
        "SELECT e.tenant FROM deployment_events AS e "
        "FULL OUTER JOIN deployment_records AS r ON e.event_id = r.record_id",
        "rows",
    ),
    "in subquery": (
        "SELECT 'globex' AS tenant WHERE 'globex' IN (SELECT tenant FROM alerts)",
        "rows",
    ),
    "scalar subquery": (
        "SELECT arrayJoin((SELECT groupUniqArray(tenant) FROM alerts)) AS tenant",
        "rows",
    ),
    "scalar subquery of tuples": (
        "SELECT arrayJoin((SELECT groupArray(tuple(tenant, alert_id)) FROM alerts)).1 AS tenant",
        "rows",
    ),
    "lambda over a subquery": (
        "SELECT arrayJoin(arrayFlatten(arrayMap(x -> (SELECT groupUniqArray(tenant) "
        "FROM alerts), [1]))) AS tenant",
        "rows",
    ),
    "exists": (
        "SELECT 'globex' AS tenant WHERE EXISTS (SELECT 1 FROM alerts WHERE tenant = 'globex')",
        "rows",
    ),
    "union": ("SELECT tenant FROM alerts UNION ALL SELECT tenant FROM deployments", "rows"),
    "lifted filter in a subquery": (
        "SELECT tenant FROM (SELECT tenant FROM alerts SETTINGS additional_table_filters = {})",
        "refused",
    ),
}


@pytest.mark.parametrize("name", SCOPED)
def test_a_tenant_reads_only_its_rows(ledger: LedgerStore, name: str) -> None:
    """Every way to reach a table returns nothing of globex's, or is refused; the ways that
    run reach globex unscoped (the tenant filter is ClickHouse's, the second layer behind
    the allow-list)."""
    sql, expected = SCOPED[name]
    if expected == "refused":
        with pytest.raises(QueryError, match=r"refused|readonly"):
            q(ledger, sql, tenant="acme")
        return
    assert "globex" not in {row[0] for row in q(ledger, sql, tenant="acme").rows}
    assert "globex" in {row[0] for row in q(ledger, sql).rows}


REFUSED = {
    "merge()": "SELECT tenant FROM merge('shipledger', '^alerts$')",
    "merge() in a scalar subquery": (
        "SELECT arrayJoin((SELECT groupArray(tuple(tenant, event_id)) "
        "FROM merge('shipledger', '^deployment_events$') WHERE tenant = 'globex'))"
    ),
    "mergeTreeIndex()": "SELECT * FROM mergeTreeIndex('shipledger', 'alerts')",
    "file() table function": "SELECT * FROM file('/etc/hostname', 'LineAsString')",
    "cold file via file()": (
        "SELECT * FROM file('{cold}/deployment_events/tenant=globex/*.parquet', 'Parquet')"
    ),
    "file() scalar": "SELECT file('/etc/hostname')",
    "file() in a scalar subquery": "SELECT arrayJoin((SELECT groupArray(file('/etc/hostname'))))",
    "file() in a lambda": "SELECT arrayMap(x -> file(x), ['/etc/hostname'])",
    "sqlite()": "SELECT * FROM sqlite('{auth}', 'tokens')",
    "url()": "SELECT * FROM url('http://127.0.0.1:9/x', 'CSV', 'a String')",
    "remote()": "SELECT * FROM remote('127.0.0.1', shipledger.alerts)",
    "dictGet()": "SELECT dictGet('d', 'a', 1)",
    "getSetting()": "SELECT getSetting('max_memory_usage')",
    "view() function": "SELECT * FROM view(SELECT tenant FROM merge('shipledger', '^alerts$'))",
}


@pytest.mark.parametrize("name", REFUSED)
@pytest.mark.embedded_only("the reads aim at chDB's own files beside the ledger")
def test_what_reads_around_the_ledger_is_refused_for_everyone(
    ledger: LedgerStore, settings: Settings, name: str
) -> None:
    """Refused by the allow-list before anything runs, for tenants and operators alike."""
    sql = REFUSED[name].format(cold=ledger.cold_root, auth=settings.resolved_auth_db)
    for tenant in ("acme", None):
        with pytest.raises(Refused, match=r"is refused|is not on the allow-list"):
            q(ledger, sql, tenant=tenant)


TENANT_REFUSED = {
    "system table": "SELECT * FROM system.parts",
    "system table in IN": "SELECT 1 WHERE 0 IN system.one",
    "information schema": "SELECT * FROM INFORMATION_SCHEMA.TABLES",
    "generator": "SELECT * FROM numbers(10)",
    "hot database": "SELECT count() FROM shipledger.chain_heads",
}


@pytest.mark.parametrize("name", TENANT_REFUSED)
def test_a_tenant_reads_the_ledger_only_an_operator_more(ledger: LedgerStore, name: str) -> None:
    with pytest.raises(Refused, match="is refused"):
        q(ledger, TENANT_REFUSED[name], tenant="acme")
    q(ledger, TENANT_REFUSED[name])  # an operator (tenant None) may


@pytest.mark.parametrize(
    "sql",
    [
        "DESCRIBE TABLE shipledger.alerts",
        "DESC alerts",
        "describe table shipledger_query.alerts",
        "SHOW COLUMNS FROM alerts",
        "SHOW FULL COLUMNS FROM alerts FROM shipledger",
        "SHOW COLUMNS FROM `alerts`",
    ],
)
def test_a_reader_may_describe_a_ledger_table(ledger: LedgerStore, sql: str) -> None:
    for tenant in ("acme", None):
        result = q(ledger, sql, tenant=tenant)
        assert result.columns[:2] == ["name", "type"] and "comment" in result.columns
        columns = {row[0]: row for row in result.rows}
        assert {"tenant", "rule", "severity"} <= set(columns)


def test_describe_shows_the_field_docs_of_the_ledger_tables(ledger: LedgerStore) -> None:
    result = q(ledger, "DESCRIBE alerts", tenant="acme")
    comments = {row[0]: row[4] for row in result.rows}
    assert comments["rule"], "the Avro field doc is the column's comment"
    views = q(ledger, "SHOW COLUMNS FROM deployments", tenant="acme")
    assert "status" in {row[0] for row in views.rows}
    with pytest.raises(QueryError, match=r"parameterized view.*SELECT \* FROM running_at\("):
        q(ledger, "DESCRIBE running_at", tenant="acme")


DESCRIBE_REFUSED = [
    "DESCRIBE TABLE (SELECT file('/etc/hostname'))",
    "DESCRIBE file('/etc/hostname', 'LineAsString')",
    "DESCRIBE TABLE alerts SETTINGS describe_include_subcolumns = 1",
    "SHOW COLUMNS FROM alerts LIKE 't%'",
    "SHOW COLUMNS FROM alerts WHERE name = 'tenant'",
    "DESCRIBE running_at(at = '2026-01-01 00:00:00')",
]


@pytest.mark.parametrize("sql", DESCRIBE_REFUSED)
def test_describe_takes_a_table_name_only(ledger: LedgerStore, sql: str) -> None:
    for tenant in ("acme", None):
        with pytest.raises(QueryError, match=r"one table or view name|refused|read-only"):
            q(ledger, sql, tenant=tenant)


@pytest.mark.parametrize(
    "sql", ["DESCRIBE system.users", "SHOW COLUMNS FROM parts FROM system", "DESC chain_heads"]
)
def test_a_tenant_describes_only_the_ledger(ledger: LedgerStore, sql: str) -> None:
    with pytest.raises(Refused, match="is refused for a tenant"):
        q(ledger, sql, tenant="acme")
    assert q(ledger, sql).rows  # an operator may list any table's columns


def test_an_unknown_tenant_sees_nothing(ledger: LedgerStore) -> None:
    assert q(ledger, "SELECT count() FROM deployment_events", tenant="nobody").rows == [(0,)]
    assert q(ledger, "SELECT count() FROM deployment_events", tenant="x' OR 1=1 --").rows == [(0,)]


# --- limits ----------------------------------------------------------------------------------
#: The query that took `up` from 0.5 to 4.9 GB (issue #5, finding 4): it builds 4.7 GiB.
MEMORY_BOMB = "SELECT length(arrayMap(x -> repeat('x', 1000), range(5000000)))"


def test_the_memory_bomb_fails_fast_naming_the_limit(ledger: LedgerStore) -> None:
    """Before the cap it ran 18 s and peaked at 5.1 GB; now the default 1 GiB stops it."""
    started = time.monotonic()
    with pytest.raises(QueryError) as refused:
        q(ledger, MEMORY_BOMB, tenant="acme")
    assert "MEMORY_LIMIT_EXCEEDED" in str(refused.value)
    assert "1 GiB, SHIPLEDGER_QUERY_MAX_MEMORY_BYTES" in str(refused.value)
    assert time.monotonic() - started < 15  # generous for a loaded machine: it is sub-second


@pytest.mark.parametrize(
    ("limit", "sql", "named"),
    [
        (
            {"max_result_bytes": 4096},
            # Checked per block: many blocks, so more than one block over the cap.
            "SELECT arrayJoin(range(300000)) AS n, repeat(toString(n), 20)",
            "SHIPLEDGER_QUERY_MAX_RESULT_BYTES",
        ),
        (
            {"timeout_s": 0.5},
            "SELECT count() FROM (SELECT arrayJoin(range(100000)) AS a) AS x, "
            "(SELECT arrayJoin(range(100000)) AS b) AS y",
            "SHIPLEDGER_QUERY_TIMEOUT_S",
        ),
        ({"max_sql_bytes": 1024}, f"SELECT '{'x' * 1024}'", "SHIPLEDGER_QUERY_MAX_SQL_BYTES"),
        (
            {"max_ast_depth": 20},
            "SELECT " + "abs(" * 30 + "1" + ")" * 30,
            "SHIPLEDGER_QUERY_MAX_AST",
        ),
    ],
    ids=["result bytes", "time", "sql bytes", "ast depth"],
)
def test_each_limit_stops_a_query_and_names_its_setting(
    ledger: LedgerStore, limit: dict[str, Any], sql: str, named: str
) -> None:
    limits = replace(DEFAULT_LIMITS, **limit)
    for tenant in ("acme", None):
        with pytest.raises(QueryError, match=named):
            run_read_query(ledger, sql, tenant=tenant, max_rows=1000, limits=limits)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT sum(editDistance(repeat('a', 20000), repeat(toString(x), 20000))) "
        "FROM (SELECT arrayJoin(range(12)) AS x)",
        "SELECT levenshteinDistance(repeat('a', 20000), repeat('b', 20000))",
        "SELECT editDistanceUTF8(repeat('a', 20000), repeat('b', 20000))",
        "SELECT damerauLevenshteinDistance(repeat('a', 2000), repeat('b', 2000))",
        "SELECT sum(arrayLevenshteinDistance(range(20000), range(x, 20000 + x))) "
        "FROM (SELECT arrayJoin(range(12)) AS x)",
        "SELECT arrayLevenshteinDistanceWeighted([1], [2], [1.], [1.])",
        "SELECT arraySimilarity([1], [2], [1.], [1.])",
    ],
)
def test_functions_quadratic_in_one_row_are_refused(ledger: LedgerStore, sql: str) -> None:
    """The time limit is checked between blocks, not inside a function's work on one row:
    with a 1 s limit the first query above (12 rows of edit distance on 20,000 characters)
    took 12.6 s of CPU before its TIMEOUT_EXCEEDED, and the cost grows with the rows and the
    square of the length. Such functions are refused before anything runs."""
    limits = replace(DEFAULT_LIMITS, timeout_s=1.0)
    for tenant in ("acme", None):
        with pytest.raises(Refused, match="not on the allow-list"):
            run_read_query(ledger, sql, tenant=tenant, max_rows=10, limits=limits)


# --- errors -------------------------------------------------------------------------------------
def test_a_tenant_error_from_running_does_not_echo_values(ledger: LedgerStore) -> None:
    """A failing cast quotes the value in ClickHouse's message: not to a tenant."""
    sql = "SELECT toUInt8(concat('val-', service)) FROM deployments"
    with pytest.raises(QueryError) as tenant:
        q(ledger, sql, tenant="acme")
    assert "CANNOT_PARSE_TEXT" in str(tenant.value) and "OrNull" in str(tenant.value)
    assert "val-" not in str(tenant.value) and "acme-svc" not in str(tenant.value)
    with pytest.raises(QueryError, match="val-"):
        q(ledger, sql)  # an operator sees the engine's message


def test_a_tenant_error_names_what_the_tenant_wrote(ledger: LedgerStore) -> None:
    with pytest.raises(QueryError, match=r"UNKNOWN_IDENTIFIER.*\(about servce\)"):
        q(ledger, "SELECT servce FROM deployments", tenant="acme")


def test_refusals_quote_the_query_itself(ledger: LedgerStore) -> None:
    with pytest.raises(QueryError, match=r"function file\(\)"):
        q(ledger, "SELECT file('/etc/hostname')", tenant="acme")
    with pytest.raises(QueryError, match=r"Syntax error.*FROMM"):
        q(ledger, "SELECT 1 FROMM deployments", tenant="acme")


# --- names the engine prints raw ----------------------------------------------------------------
@pytest.mark.parametrize(
    "sql",
    [
        "SELECT `a\n Function file` FROM deployments",
        "SELECT 1 AS `x\n    TableIdentifier system.parts`",
        "SELECT * FROM deployments AS `d\n      Function merge`",
        "SELECT `a\u2028b`",
        "SELECT 1 AS `sys.tem`",
        'SELECT 1 AS "q\\nr"',
    ],
)
def test_names_that_would_forge_syntax_tree_rows_are_refused(ledger: LedgerStore, sql: str) -> None:
    with pytest.raises(Refused, match="names may not contain"):
        q(ledger, sql, tenant="acme")


def test_literals_and_unicode_names_run(ledger: LedgerStore) -> None:
    sql = (
        "SELECT 'a\n  Function file' AS s, 1 AS `déploiements`, 2 AS `deploy count`, "
        "0/0 AS nan, 1/0 AS inf"
    )
    result = q(ledger, sql, tenant="acme")
    assert result.columns == ["s", "déploiements", "deploy count", "nan", "inf"]
    assert result.to_json()["rows"] == [["a\n  Function file", 1, 2, "nan", "inf"]]


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
    assert [len(rule) for rule in table[1].split()] == [41, 4, 21]  # column widths, padded
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
    env = ledger_env(settings.data_dir)
    result = CliRunner().invoke(cli, ["query", *args], env=env)
    return result.exit_code, result.output


@pytest.mark.embedded_only("it is about chDB")
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


@pytest.fixture
def register(settings: Settings) -> Iterator[Callable[[StackInfo], None]]:
    """Registers a stack of this process for the test, withdrawn after it: left behind, it
    would be a second running stack to every later test of this pytest worker."""
    yield lambda info: write_stack(settings, info)
    remove_stack(settings)


def test_query_command_says_so_when_a_stack_without_api_owns_the_data_dir(
    settings: Settings, register: Callable[[StackInfo], None]
) -> None:
    register(StackInfo(bootstrap="127.0.0.1:1", pid=os.getpid(), clickhouse_url=""))
    code, out = invoke(settings, "SELECT 1")
    assert code == 1
    assert f"pid {os.getpid()}" in out
    assert "no query API" in out


@pytest.fixture
def api(ledger: LedgerStore, settings: Settings) -> Iterator[ApiServer]:
    """The real API on a loopback port over the `ledger` store (no broker: reads only)."""
    with ApiServer(
        settings.model_copy(update={"api_port": 0}), "127.0.0.1:1", LedgerReader(ledger)
    ) as server:
        yield server


def test_query_command_goes_through_the_api_of_a_running_stack(
    api: ApiServer, settings: Settings
) -> None:
    """The test process holds the chDB dir (as `up` would): the command must use the API."""
    with registered_api(settings, api) as info:
        assert (settings.data_dir / "stack.json").stat().st_mode & 0o777 == 0o600
        sql = "SELECT tenant, count() AS n FROM alerts GROUP BY tenant"
        code, out = invoke(settings, "--tenant", "globex", sql)
        assert code == 0, out
        # Lines, not positions: the API thread's log lines can land in the captured output.
        assert ["globex", str(PER_TENANT)] in [line.split() for line in out.splitlines()]
        code, out = invoke(settings, "INSERT INTO shipledger.alerts (alert_id) VALUES ('x')")
        assert code == 1
        assert "read-only" in out
        write_stack(settings, info.model_copy(update={"api_token": "wrong"}))
        code, out = invoke(settings, "SELECT 1")
    assert code == 1
    assert "401" in out


def reader_headers(settings: Settings, tenant: str) -> dict[str, str]:
    """The Authorization header of a new read token of `tenant` (`*`: an operator's)."""
    auth = AuthStore(settings.resolved_auth_db)
    try:
        token, _ = auth.create_token(tenant, ("read",))
    finally:
        auth.close()
    return {"Authorization": f"Bearer {token}"}


def test_the_query_api_scopes_a_tenant_token_to_its_tenant(
    api: ApiServer, settings: Settings
) -> None:
    headers = reader_headers(settings, "acme")
    sql = "SELECT DISTINCT tenant FROM deployment_events"
    with httpx.Client(base_url=api.url, headers=headers) as client:
        own = client.post("/v1/query", json={"sql": sql})
        other = client.post("/v1/query", json={"sql": sql, "tenant": "globex"})
    assert own.status_code == 200, own.text
    assert own.json()["rows"] == [["acme"]]
    assert other.status_code == 403 and "tenant" in other.json()["error"]


def test_an_operator_naming_a_tenant_longer_than_any_gets_a_400(
    api: ApiServer, settings: Settings
) -> None:
    """An operator's `tenant` went into the row filter of every table as it was: 100,000
    characters made the query longer than ClickHouse parses (max_query_size), a 500."""
    headers = reader_headers(settings, "*")
    body = {"sql": "SELECT count() FROM deployment_events", "tenant": "a" * 100_000}
    with httpx.Client(base_url=api.url, headers=headers, timeout=60) as client:
        answer = client.post("/v1/query", json=body)
        longest = client.post("/v1/query", json={**body, "tenant": "a" * 100})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "tenant: 100000 characters, at most 100"
    assert longest.status_code == 200 and longest.json()["rows"] == [[0]]


def test_the_parameterized_view_is_tenant_scoped_too(ledger: LedgerStore) -> None:
    sql = "SELECT DISTINCT tenant FROM running_at(at = now64(3))"
    assert len(run_read_query(ledger, sql, tenant=None, max_rows=10).rows) == 2
    scoped = run_read_query(ledger, sql, tenant="acme", max_rows=10)
    assert scoped.rows == [("acme",)]


# --- the API's limits ---------------------------------------------------------------------------
def read_token(settings: Settings, tenant: str) -> str:
    auth = AuthStore(settings.resolved_auth_db)
    try:
        return auth.create_token(tenant, ("read",))[0]
    finally:
        auth.close()


#: Runs until the query timeout (a 10^12-row cross join), with nothing a tenant may not use.
SLOW = (
    "SELECT count() FROM (SELECT arrayJoin(range(1000000)) AS a) AS x, "
    "(SELECT arrayJoin(range(1000000)) AS b) AS y"
)


def test_the_query_api_caps_queries_at_once_per_token_and_in_all(
    ledger: LedgerStore, settings: Settings
) -> None:
    """A token over its concurrent queries gets 429, everyone over the API's total 503, both
    with Retry-After; waiting on conditions, not on time."""
    limits = {
        "api_port": 0,
        "query_max_concurrent_per_token": 1,
        "query_max_concurrent": 2,
        "query_timeout_s": 8.0,
        "query_max_threads": 1,
    }
    tokens = {name: read_token(settings, "acme") for name in ("slow", "second", "quick")}

    def post(token: str, sql: str) -> httpx.Response:
        auth = {"Authorization": f"Bearer {tokens[token]}"}
        return httpx.post(f"{server.url}/v1/query", json={"sql": sql}, headers=auth, timeout=60)

    def first_refusal(token: str, running: Callable[[], bool]) -> httpx.Response | None:
        deadline = time.monotonic() + 60
        while running() and time.monotonic() < deadline:
            answer = post(token, "SELECT 1")
            if answer.status_code != 200:
                return answer
        return None

    answers: list[httpx.Response] = []

    def run_slow(token: str) -> None:
        # A probe may take the slot first: retry until the slow query runs (then 400).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            answer = post(token, SLOW)
            if answer.status_code not in (429, 503):
                answers.append(answer)
                return

    with ApiServer(
        settings.model_copy(update=limits), "127.0.0.1:1", LedgerReader(ledger)
    ) as server:
        slow, second = (threading.Thread(target=run_slow, args=(n,)) for n in ("slow", "second"))
        slow.start()
        second.start()
        everyone = first_refusal("quick", lambda: slow.is_alive() and second.is_alive())
        own = first_refusal("slow", slow.is_alive)
        slow.join()
        second.join()
    assert own is not None and own.status_code == 429, own
    assert "SHIPLEDGER_QUERY_MAX_CONCURRENT_PER_TOKEN" in own.json()["error"]
    assert own.headers["Retry-After"] == "1"
    assert everyone is not None and everyone.status_code == 503, everyone
    assert "SHIPLEDGER_QUERY_MAX_CONCURRENT" in everyone.json()["error"]
    assert [a.status_code for a in answers] == [400, 400]  # each stopped by its timeout
    assert all("TIMEOUT_EXCEEDED" in a.json()["error"] for a in answers)


def test_the_query_api_caps_the_size_of_its_answer(ledger: LedgerStore, settings: Settings) -> None:
    update = {"api_port": 0, "query_max_response_bytes": 2048}
    token = read_token(settings, "acme")
    with ApiServer(
        settings.model_copy(update=update), "127.0.0.1:1", LedgerReader(ledger)
    ) as server:
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.url, headers=auth) as client:
            big = client.post("/v1/query", json={"sql": "SELECT * FROM deployment_events"})
            small = client.post("/v1/query", json={"sql": "SELECT 0/0 AS nan, 1/0 AS inf"})
    assert big.status_code == 400
    assert "SHIPLEDGER_QUERY_MAX_RESPONSE_BYTES" in big.json()["error"]
    assert small.status_code == 200
    assert small.json()["rows"] == [["nan", "inf"]]
