"""Read-only SQL over the ledger, optionally scoped to one tenant: one function for the CLI and
the HTTP API (`run_read_query`); the result and its formats (table, CSV, JSON) are in
`shipledger.sinks.ledger.query_result`.

What is enforced, and by what (measured on chDB 4.4 / ClickHouse 26.9; the threat model is
docs/security.md):

1. **One SELECT, checked as the engine parses it.** The engine normalizes the statement
   (`formatQuerySingleLine`: one statement, no comments) and classifies it (`EXPLAIN AST`):
   anything but a SELECT is refused with a clear "read-only" error, except `DESCRIBE t` and
   `SHOW COLUMNS FROM t` of a table the caller may read (`query_guard.describe_target`),
   answered by a fixed query over `system.columns`: the statement itself never runs. The
   normalized SELECT runs as `SELECT * FROM (<query>) LIMIT n`, where `INTO OUTFILE`,
   `FORMAT` and a trailing `SETTINGS` are syntax errors (chDB allows `INTO OUTFILE` under
   `readonly = 1`).
2. **An allow-list on the raw syntax tree** of exactly the statement that runs
   (`shipledger.sinks.ledger.query_guard`): every function must be on the allow-list
   (`shipledger.sinks.ledger.query_functions`: no `file`, `url`, `s3`, dictionaries, settings or
   server state) and, for a tenant, every table one of the ledger's tables and views of the
   query database and the only table function the parameterized view `running_at`.
   Operators (`tenant=None`) may also read system tables and use generator table functions.
   Nothing reaches a file, the network or another tenant's table for anyone.
3. **Read-only, by ClickHouse.** The query runs on its own client whose session has
   `readonly = 1`, set last: the engine refuses writes, DDL, `SET`, and any setting change.
4. **Tenant, team and environment scoping, by ClickHouse, as a second layer.**
   `additional_table_filters` puts `tenant = '<t>'` (and, for a reader limited to teams or
   environments, `team IN (...)` / `environment IN (...)`) on every table of the ledger
   databases (hot MergeTree and cold Parquet alike, see `sinks.ledger.tiers`), applied
   wherever a table is read (views, subqueries, joins). A table without the column a scope
   needs shows such a reader no rows (`scope_condition`; the rule is
   `shipledger.schemas.scopes.RowScope`).
5. **Resource caps** (`QueryLimits`, from `Settings.query_*`): memory, result bytes, time,
   threads and syntax tree size per query, set in the same read-only session.
6. **Errors that cannot carry data** (`sinks.query_errors`): a refusal quotes the caller's
   own SQL; an error from running the query reaches a tenant as its code name and our own
   explanation only.

With a ClickHouse server the same settings ride on every request (untested here: no server);
there, give analysts the readonly users, profile and row policies `shipledger audit grants`
prints.

The HTTP contract the API serves with this module (`POST /v1/query`): request JSON
`{"sql": str, "tenant": str | null, "max_rows": int | null}`; response JSON
`QueryResult.to_json()`; a refused or failed query answers 400 with `{"error": message}`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from shipledger.schemas.models import MAX_TENANT
from shipledger.schemas.scopes import RowScope
from shipledger.sinks.ledger import ddl, tiers
from shipledger.sinks.ledger.query_errors import EngineError, QueryError, first_line
from shipledger.sinks.ledger.query_guard import (
    DESCRIBE_KINDS,
    GENERATOR_TABLE_FUNCTIONS,
    FunctionCatalog,
    Policy,
    Refused,
    check,
    describe_target,
)
from shipledger.sinks.ledger.query_result import (
    DEFAULT_LIMITS,
    FORMATS,
    QueryLimits,
    QueryResult,
    format_csv,
    format_json,
    format_table,
)

if TYPE_CHECKING:
    from shipledger.sinks.ledger.store import LedgerStore

__all__ = [
    "DEFAULT_LIMITS",
    "FORMATS",
    "QueryError",
    "QueryLimits",
    "QueryResult",
    "Refused",
    "format_csv",
    "format_json",
    "format_table",
    "policy_for",
    "run_read_query",
]

#: Statement kinds (`EXPLAIN AST` root nodes) that are queries.
_SELECT_KINDS = frozenset({"SelectWithUnionQuery", "SelectIntersectExceptQuery"})
#: The ledger's parameterized view: a table function in the syntax tree.
_PARAMETERIZED_VIEWS = frozenset({"running_at"})


# --- running -------------------------------------------------------------------------------
def run_read_query(
    store: LedgerStore,
    sql: str,
    *,
    tenant: str | None,
    max_rows: int,
    limits: QueryLimits = DEFAULT_LIMITS,
    teams: frozenset[str] = frozenset(),
    environments: frozenset[str] = frozenset(),
) -> QueryResult:
    """Run one read-only SELECT in the query database (hot and cold rows); see the module doc.

    `tenant` (None: every tenant, an operator) scopes every ledger table to that tenant's
    rows, `teams` and `environments` (if not empty) to those teams' and environments' rows;
    any of them restricts the query to the ledger's tables and views. At most `max_rows` rows
    come back (`truncated` says whether there were more). Raises QueryError (`Refused` for
    what the allow-list does not admit) with a message fit for the caller.
    """
    _check_request(sql, tenant, max_rows, limits)
    scope = RowScope(tenant, teams, environments)
    database = tiers.query_database(store)
    policy = policy_for(store, database, scope)
    filters = _scope_filters(store, scope) if scope.restricted else {}
    # Order matters: `readonly` last, so it locks the settings set before it.
    session = limits.engine_settings()
    if filters:
        session["additional_table_filters"] = filters
    session["readonly"] = 1
    with store.reader(database, session) as client:
        canonical, tree = _statement(client, sql, limits)
        if tree and tree[0].split(" ")[0] in DESCRIBE_KINDS:
            target = describe_target(tree, canonical, _describe_policy(store, policy))
            return _describe(client, store, target, max_rows)
        _require_select(tree)
        wrapped = f"SELECT * FROM ({canonical}) LIMIT {max_rows + 1}"  # noqa: S608
        # The statement checked is, byte for byte, the statement that runs.
        check(_explain(client, wrapped, limits, wrapped=True), canonical, policy)
        try:
            result = client.query(wrapped)
            rows = [tuple(row) for row in result.result_rows]
            columns, types = list(result.column_names), [t.name for t in result.column_types]
        except Exception as exc:
            error = EngineError.of(exc)
            message = (
                error.tenant_message(sql, limits.describe())
                if scope.restricted
                else error.operator_message(limits.describe())
            )
            raise QueryError(message) from None
    return QueryResult(
        columns=columns, types=types, rows=rows[:max_rows], truncated=len(rows) > max_rows
    )


def _check_request(sql: str, tenant: str | None, max_rows: int, limits: QueryLimits) -> None:
    if not sql.strip():
        raise QueryError("sql: empty query")
    try:
        size = len(sql.encode("utf-8"))
    except UnicodeEncodeError:
        raise QueryError("sql: not valid Unicode text (it holds a lone surrogate)") from None
    if size > limits.max_sql_bytes:
        raise QueryError(
            f"sql: {size} bytes, over the limit of {limits.max_sql_bytes} bytes "
            "(SHIPLEDGER_QUERY_MAX_SQL_BYTES)"
        )
    if max_rows < 1:
        raise QueryError(f"max_rows: must be at least 1 (got {max_rows})")
    if tenant is not None and not tenant:
        raise QueryError("tenant: must not be empty")
    if tenant is not None and len(tenant) > MAX_TENANT:
        # It goes into every table's row filter: a huge one is over what ClickHouse parses.
        raise QueryError(f"tenant: {len(tenant)} characters, at most {MAX_TENANT}")


def policy_for(store: LedgerStore, database: str, scope: RowScope) -> Policy:
    """What a query may name: a restricted reader's (a tenant's, a team's) only the ledger of
    the query database `database`, an operator's any table; nobody's a function off the
    allow-list."""
    functions = _function_catalog(store)
    if not scope.restricted:
        return Policy(
            functions=functions,
            table_functions=GENERATOR_TABLE_FUNCTIONS | _PARAMETERIZED_VIEWS,
            tables=None,
        )
    ledger = frozenset(ddl.tables()) | frozenset(ddl.VIEWS)
    return Policy(
        functions=functions,
        table_functions=_PARAMETERIZED_VIEWS,
        tables=ledger - _PARAMETERIZED_VIEWS,
        databases=frozenset({database}),
    )


#: The function catalog per ClickHouse URL: one engine per URL for the life of the process.
_CATALOGS: dict[str, FunctionCatalog] = {}


def _function_catalog(store: LedgerStore) -> FunctionCatalog:
    """The allow-list as this engine resolves names (its aliases and case folding)."""
    catalog = _CATALOGS.get(store.url)
    if catalog is None:
        _, rows = store.query(
            "SELECT name, is_aggregate, case_insensitive, alias_to FROM system.functions"
        )
        engine = [(str(n), bool(a), bool(c), str(t)) for n, a, c, t in rows]
        catalog = _CATALOGS[store.url] = FunctionCatalog.build(engine)
    return catalog


def _describe_policy(store: LedgerStore, policy: Policy) -> Policy:
    """What a DESCRIBE may name: what a query may read, plus the parameterized view and the
    ledger database's own tables (whose columns carry the field docs)."""
    if policy.tables is None:
        return policy
    return replace(
        policy,
        tables=policy.tables | _PARAMETERIZED_VIEWS,
        databases=policy.databases | {store.database},
    )


def _describe(client: Any, store: LedgerStore, target: str, max_rows: int) -> QueryResult:
    """The columns of `target` (admitted by `describe_target`) as DESCRIBE lists them, read
    from `system.columns` by this fixed query. An unqualified name is the ledger database's
    table (whose columns carry the field docs as comments), else the query database's (the
    parameterized view lives there only)."""
    database, _, table = target.rpartition(".")
    for candidate in [database] if database else [store.database, tiers.query_database(store)]:
        result = client.query(
            "SELECT name, type, default_kind AS default_type, default_expression, comment "
            "FROM system.columns WHERE database = {db:String} AND table = {table:String} "
            "ORDER BY position",
            parameters={"db": candidate, "table": table},
        )
        rows = [tuple(row) for row in result.result_rows]
        if rows:
            break
    else:
        if table in _PARAMETERIZED_VIEWS:
            hint = f"SELECT * FROM {table}(at = '2026-01-01 00:00:00') LIMIT 1"  # noqa: S608
            raise QueryError(
                f"DESCRIBE: {table} is a parameterized view, whose columns ClickHouse lists "
                f"only for given parameters: {hint}"
            )
        raise QueryError(f"DESCRIBE: there is no table or view {target}")
    return QueryResult(
        columns=list(result.column_names),
        types=[t.name for t in result.column_types],
        rows=rows[:max_rows],
        truncated=len(rows) > max_rows,
    )


def _require_select(tree: list[str]) -> None:
    """QueryError unless the `EXPLAIN AST` rows `tree` are those of a SELECT."""
    kind = tree[0].split(" ")[0] if tree else ""
    if kind not in _SELECT_KINDS:
        statement = f"{kind.removesuffix('Query')} statements are" if kind else "this statement is"
        raise QueryError(
            f"read-only: {statement} refused, only SELECT queries run, and DESCRIBE / SHOW "
            "COLUMNS of a table (the ledger is append-only; writes come through the pipeline)"
        )


def _statement(client: Any, sql: str, limits: QueryLimits) -> tuple[str, list[str]]:
    """The engine's normalized text of `sql` (one statement, no comments) and its `EXPLAIN
    AST` rows (none when the engine cannot explain it: SYSTEM, KILL, ...)."""
    try:
        result = client.query(
            "SELECT formatQuerySingleLine({sql:String}) AS q, isValidUTF8(q)",
            parameters={"sql": sql},
        )
    except Exception as exc:
        raise _parse_failure(exc, limits) from None
    canonical, valid = result.result_rows[0]
    if not valid:
        # The formatter writes a literal's bytes raw: `'\xFF'` normalizes to invalid UTF-8.
        raise QueryError(
            "sql: a string literal holds bytes that are not UTF-8 (a \\x escape?): write "
            "such bytes as unhex('FF')"
        )
    try:
        tree = _explain(client, canonical, limits, wrapped=False)
    except QueryError as exc:
        if "Syntax error" not in str(exc):
            raise
        tree = []  # not explainable as a query (SYSTEM, KILL, ...): not a SELECT either
    return str(canonical), tree


def _explain(client: Any, sql: str, limits: QueryLimits, *, wrapped: bool) -> list[str]:
    """The `EXPLAIN AST` rows of `sql`: parsing only, nothing runs."""
    try:
        result = client.query(f"EXPLAIN AST {sql}")
    except Exception as exc:
        if wrapped and "Syntax error" in first_line(exc):
            raise QueryError(
                "only a plain SELECT is accepted: no INTO OUTFILE, FORMAT or trailing "
                "SETTINGS (choose the output with --format)"
            ) from None
        raise _parse_failure(exc, limits) from None
    return [str(row[0]) for row in result.result_rows]


def _parse_failure(exc: BaseException, limits: QueryLimits) -> QueryError:
    """A failure to parse: nothing ran, so the engine's message quotes only the caller's SQL
    and is shown whole, after our explanation (which names a limit that was hit)."""
    error = EngineError.of(exc)
    return QueryError(error.operator_message(limits.describe(), "it could not be parsed"))


def _scope_filters(store: LedgerStore, scope: RowScope) -> dict[str, str]:
    """`additional_table_filters` for every table (not view) of the ledger databases."""
    databases = tiers.ledger_databases(store)
    _, rows = store.query(
        "SELECT t.database, t.name, groupArray(c.name) FROM system.tables AS t "
        "LEFT JOIN system.columns AS c ON c.database = t.database AND c.table = t.name "
        "WHERE t.database IN %(dbs)s AND t.engine NOT IN ('View', 'MaterializedView') "
        "GROUP BY t.database, t.name",
        {"dbs": databases},
    )
    filters = {}
    for db, name, columns in rows:
        condition = scope_condition(scope, frozenset(columns))
        if condition is not None:
            filters[f"{db}.{name}"] = condition
    return filters


#: The column naming a table's team: `team` (deployments, records, alerts), else the catalog's
#: `owner_team`.
_TEAM_COLUMNS = ("team", "owner_team")


def scope_condition(scope: RowScope, columns: frozenset[str]) -> str | None:
    """The filter of one table with `columns` for `scope` (None: nothing to filter).

    A table without a tenant column is left out of the tenant filter (the allow-list admits
    only ledger tables and views, all of which carry one). For team and environment scopes a
    missing column reads as no rows: the table's rows cannot be shown to be the reader's. A
    NULL team is in no team (`ifNull`: `NULL IN (...)` is NULL). A table listing several
    environments (change requests) is the reader's when every one of them is."""
    parts: list[str] = []
    if scope.tenant is not None and "tenant" in columns:
        parts.append(f"tenant = {ddl.quote_str(scope.tenant)}")
    if scope.teams:
        team = next((c for c in _TEAM_COLUMNS if c in columns), None)
        parts.append(f"ifNull({team} IN {_sql_list(scope.teams)}, 0)" if team else "0")
    if scope.environments:
        allowed = _sql_list(scope.environments)
        if "environment" in columns:
            parts.append(f"ifNull(environment IN {allowed}, 0)")
        elif "environments" in columns:
            parts.append(f"notEmpty(environments) AND hasAll([{allowed[1:-1]}], environments)")
        else:
            parts.append("0")
    return " AND ".join(parts) if parts else None


def _sql_list(names: frozenset[str]) -> str:
    """`('a', 'b')`: quoted names, sorted (the same scope gives the same filter text)."""
    return "(" + ", ".join(ddl.quote_str(n) for n in sorted(names)) + ")"
