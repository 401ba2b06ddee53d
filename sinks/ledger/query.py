"""Read-only SQL over the ledger, optionally scoped to one tenant: one function for the CLI and
the HTTP API (`run_read_query`), plus the result's formats (table, CSV, JSON).

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

import csv
import io
import json
import math
import re
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING, Any
from uuid import UUID

from shipledger.fields import copied
from shipledger.schemas.scopes import RowScope
from shipledger.settings import Settings
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
from shipledger.tables import render_table

if TYPE_CHECKING:
    from shipledger.sinks.ledger.store import LedgerStore

__all__ = ["QueryError", "QueryLimits", "QueryResult", "Refused", "policy_for", "run_read_query"]

#: Statement kinds (`EXPLAIN AST` root nodes) that are queries.
_SELECT_KINDS = frozenset({"SelectWithUnionQuery", "SelectIntersectExceptQuery"})
#: The ledger's parameterized view: a table function in the syntax tree.
_PARAMETERIZED_VIEWS = frozenset({"running_at"})
#: Longest cell of the table format before it is cut.
MAX_CELL = 40


@dataclass(frozen=True)
class QueryLimits:
    """What one query may use; `of(settings)` reads them from `Settings.query_*`."""

    timeout_s: float
    max_memory_bytes: int
    max_result_bytes: int
    max_sql_bytes: int
    max_ast_elements: int
    max_ast_depth: int
    max_threads: int

    @classmethod
    def of(cls, settings: Settings) -> QueryLimits:
        """The limits configured in `settings`."""
        return copied(cls, settings, prefix="query_")

    def engine_settings(self) -> dict[str, Any]:
        """ClickHouse settings enforcing these limits (set before `readonly`, which locks them)."""
        return {
            "max_execution_time": self.timeout_s,
            "timeout_overflow_mode": "throw",
            "max_memory_usage": self.max_memory_bytes,
            "max_result_bytes": self.max_result_bytes,
            "result_overflow_mode": "throw",
            # The normalized, wrapped statement is longer than what was sent.
            "max_query_size": 4 * self.max_sql_bytes + 1024,
            "max_ast_elements": self.max_ast_elements,
            "max_expanded_ast_elements": self.max_ast_elements,
            "max_ast_depth": self.max_ast_depth,
            "max_threads": self.max_threads,
        }

    def describe(self) -> dict[str, str]:
        """Each limit with its setting, for the messages that name one."""
        return {
            "memory": f"{_size(self.max_memory_bytes)}, SHIPLEDGER_QUERY_MAX_MEMORY_BYTES",
            "result": f"{_size(self.max_result_bytes)}, SHIPLEDGER_QUERY_MAX_RESULT_BYTES",
            "time": f"{self.timeout_s:g} s, SHIPLEDGER_QUERY_TIMEOUT_S",
            "ast": f"{self.max_ast_elements} elements and depth {self.max_ast_depth}, "
            "SHIPLEDGER_QUERY_MAX_AST_ELEMENTS / _MAX_AST_DEPTH",
        }


def _size(count: int) -> str:
    """Bytes for people: `512 MiB`."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.4g} {unit}"
    return f"{count} B"


#: The defaults of `Settings`, for callers that pass no limits (tests, tools).
DEFAULT_LIMITS = QueryLimits.of(Settings.model_construct())


@dataclass(frozen=True)
class QueryResult:
    """Column names, ClickHouse type names and rows of a read query.

    `truncated` says more rows existed than `max_rows`.
    """

    columns: list[str]
    types: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool = False

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (timestamps ISO-8601, UUIDs and decimals as strings)."""
        return {
            "columns": self.columns,
            "types": self.types,
            "rows": [[jsonable(value) for value in row] for row in self.rows],
            "truncated": self.truncated,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QueryResult:
        """The result of `to_json` (as the API returns it); values stay JSON values."""
        try:
            return cls(
                columns=[str(c) for c in data["columns"]],
                types=[str(t) for t in data["types"]],
                rows=[tuple(row) for row in data["rows"]],
                truncated=bool(data.get("truncated", False)),
            )
        except (KeyError, TypeError) as exc:
            raise QueryError(f"malformed query result: missing or bad {exc}") from None


def jsonable(value: Any) -> Any:
    """A ClickHouse value as a JSON value (NaN and infinities as ClickHouse writes them
    quoted: `"nan"`, `"inf"`, `"-inf"`; JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal | UUID | IPv4Address | IPv6Address):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {str(jsonable(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v) for v in value]
    return str(value)


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


# --- formats -------------------------------------------------------------------------------
def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    plain = jsonable(value)
    if isinstance(plain, dict | list):
        return json.dumps(plain, ensure_ascii=False)
    return str(plain)


def format_table(result: QueryResult, max_cell: int = MAX_CELL) -> str:
    """Aligned columns for a terminal; long cells cut with `…`, numbers right-aligned."""
    table = render_table(
        result.columns,
        ([_cell(v) for v in row] for row in result.rows),
        right=[_is_numeric(t) for t in result.types],
        max_width=max_cell,
    )
    count = f"({len(result.rows)} row{'s' if len(result.rows) != 1 else ''}"
    count += ", truncated: raise --max-rows)" if result.truncated else ")"
    return f"{table}\n{count}"


def _is_numeric(type_name: str) -> bool:
    inner = re.sub(r"^(Nullable|LowCardinality)\((.*)\)$", r"\2", type_name)
    return inner.startswith(("Int", "UInt", "Float", "Decimal"))


def format_csv(result: QueryResult) -> str:
    """RFC 4180 CSV with a header row; NULL is an empty field, maps/arrays are JSON."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(result.columns)
    for row in result.rows:
        writer.writerow(["" if v is None else _cell(v) for v in row])
    return out.getvalue()


def format_json(result: QueryResult) -> str:
    """A JSON array with one object per row (column name -> JSON value)."""
    objects = [
        {c: jsonable(v) for c, v in zip(result.columns, row, strict=True)} for row in result.rows
    ]
    return json.dumps(objects, ensure_ascii=False, indent=1)


FORMATS = {"table": format_table, "csv": format_csv, "json": format_json}
