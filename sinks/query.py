"""Read-only SQL over the ledger, optionally scoped to one tenant: one function for the CLI and
the HTTP API (`run_read_query`), plus the result's formats (table, CSV, JSON).

What is enforced, and by what (measured on chDB 4.4 / ClickHouse 26.9):

- **Read-only, by ClickHouse.** The query runs on its own client whose session has
  `readonly = 1`, set last: the engine refuses every write, DDL, `SET`, `SYSTEM`, any
  `SETTINGS` clause that would change a setting (so the tenant filter cannot be lifted), and
  the table functions that reach outside (`file`, `url`, `remote`, `s3`, `loop`, ...). Before
  that, the engine's own parser classifies the statement (`formatQuerySingleLine`, then
  `EXPLAIN AST`): anything but a SELECT gets a clear "read-only" error without running.
- **No file writes.** `readonly = 1` still allows `SELECT ... INTO OUTFILE` in chDB. The
  engine-normalized statement therefore runs as a subquery, `SELECT * FROM (<query>) LIMIT n`,
  where `INTO OUTFILE`, `FORMAT` and non-SELECT statements are syntax errors.
- **Tenant scoping, by ClickHouse.** `additional_table_filters` puts `tenant = '<t>'` on
  every table of the ledger databases (hot MergeTree and cold Parquet alike, see
  `sinks.tiers`). The engine applies it wherever the table is read: directly, through a
  view, in a subquery, a join, `IN (...)`. Two sources escape it, both measured: the
  `merge()` and `mergeTreeIndex()` table functions (allowed under `readonly = 1`) read tables
  unfiltered, and the scalar `file()` function reads any file (e.g. another tenant's Parquet
  bytes). So every query is first resolved by the engine (`EXPLAIN QUERY TREE`, which
  resolves CTEs, aliases and unqualified names to real tables), and refused unless every
  table function is a pure generator (`numbers`, `values`, ...), no `file()` call appears and,
  for a tenant, every table is a filtered ledger table or a view over them.
  `system.one` is the only other table a tenant may read.

With a ClickHouse server the same settings ride on every request (untested here: no server);
give analysts a `SELECT`-only user with row policies there too.

The HTTP contract the API serves with this module (`POST /v1/query`): request JSON
`{"sql": str, "tenant": str | null, "max_rows": int | null}`; response JSON
`QueryResult.to_json()`; a refused or failed query answers 400 with `{"detail": message}`.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING, Any
from uuid import UUID

from shipledger.sinks import ddl, tiers

if TYPE_CHECKING:
    from shipledger.sinks.store import LedgerStore

#: Table functions that only generate values: nothing to filter, nothing outside reached.
SAFE_TABLE_FUNCTIONS = frozenset(
    {"numbers", "numbers_mt", "zeros", "zeros_mt", "values", "generate_series", "generateSeries"}
)
#: Scalar functions that read outside the ledger (`file(path)` returns a file's bytes).
REFUSED_FUNCTIONS = frozenset({"file"})
#: Statement kinds (`EXPLAIN AST` root nodes) that are queries.
_SELECT_KINDS = frozenset({"SelectWithUnionQuery", "SelectIntersectExceptQuery"})
#: Tables a tenant-scoped query may read outside the ledger databases.
_TENANT_SAFE_TABLES = frozenset({"system.one"})
#: Longest cell of the table format before it is cut.
MAX_CELL = 40

# Node lines of `EXPLAIN QUERY TREE`. Literals are escaped in it, so a user string cannot
# forge a line; a forged alias could only add a line, which makes the check refuse more.
_TABLE_NODE = re.compile(r"^\s*TABLE id: \d+,.*\btable_name: (\S+)$")
_TABLE_FUNCTION_NODE = re.compile(r"^\s*TABLE_FUNCTION id: \d+,.*\btable_function_name: (\w+)")
_FUNCTION_NODE = re.compile(r"^\s*FUNCTION id: \d+,.*\bfunction_name: (\w+)")


class QueryError(ValueError):
    """A query that was refused or that ClickHouse could not run; the message says why."""


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
    """A ClickHouse value as a JSON value."""
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
    timeout_s: float = 60.0,
) -> QueryResult:
    """Run one read-only SELECT in the query database (hot and cold rows); see the module doc.

    `tenant` (None: every tenant) scopes every ledger table to that tenant's rows. At most
    `max_rows` rows come back (`truncated` says whether there were more). Raises QueryError
    for a refused query or a ClickHouse error (its first line).
    """
    if not sql.strip():
        raise QueryError("sql: empty query")
    if max_rows < 1:
        raise QueryError(f"max_rows: must be at least 1 (got {max_rows})")
    if tenant is not None and not tenant:
        raise QueryError("tenant: must not be empty")
    filters = _tenant_filters(store, tenant) if tenant is not None else {}
    # Order matters: `readonly` last, so it locks the settings set before it.
    session: dict[str, Any] = {"max_execution_time": timeout_s}
    if filters:
        session["additional_table_filters"] = filters
    session["readonly"] = 1
    with store.reader(tiers.query_database(store), session) as client:
        canonical = _canonical_select(client, sql)
        wrapped = f"SELECT * FROM ({canonical}) LIMIT {max_rows + 1}"  # noqa: S608
        tree = _explain(client, f"EXPLAIN QUERY TREE {wrapped}", wrapped=True)
        _check_sources(tree, allowed_tables=_allowed_tables(store, filters, tenant))
        try:
            result = client.query(wrapped)
        except Exception as exc:
            raise QueryError(_first_line(exc)) from None
    rows = [tuple(row) for row in result.result_rows]
    return QueryResult(
        columns=list(result.column_names),
        types=[t.name for t in result.column_types],
        rows=rows[:max_rows],
        truncated=len(rows) > max_rows,
    )


def _canonical_select(client: Any, sql: str) -> str:
    """The engine's normalized text of `sql` (one statement, no comments), if a SELECT."""
    try:
        result = client.query("SELECT formatQuerySingleLine({sql:String})", parameters={"sql": sql})
    except Exception as exc:
        raise QueryError(_first_line(exc)) from None
    canonical = str(result.result_rows[0][0])
    try:
        kind = _explain(client, f"EXPLAIN AST {canonical}", wrapped=False)[0].split(" ")[0]
    except QueryError as exc:
        if "Syntax error" not in str(exc):
            raise
        kind = ""  # not explainable as a query (SYSTEM, KILL, ...): not a SELECT either
    if kind not in _SELECT_KINDS:
        statement = f"{kind.removesuffix('Query')} statements are" if kind else "this statement is"
        raise QueryError(
            f"read-only: {statement} refused, only SELECT queries run "
            "(the ledger is append-only; writes come through the pipeline)"
        )
    return canonical


def _explain(client: Any, sql: str, *, wrapped: bool) -> list[str]:
    try:
        result = client.query(sql)
    except Exception as exc:
        message = _first_line(exc)
        if wrapped and "Syntax error" in message:
            raise QueryError(
                "only a plain SELECT is accepted: no INTO OUTFILE, FORMAT or trailing "
                "SETTINGS (choose the output with --format)"
            ) from None
        raise QueryError(message) from None
    return [str(row[0]) for row in result.result_rows]


def _tenant_filters(store: LedgerStore, tenant: str) -> dict[str, str]:
    """`additional_table_filters` for every table (not view) of the ledger databases."""
    databases = tiers.ledger_databases(store)
    _, rows = store.query(
        "SELECT t.database, t.name, countIf(c.name = 'tenant') FROM system.tables AS t "
        "LEFT JOIN system.columns AS c ON c.database = t.database AND c.table = t.name "
        "WHERE t.database IN %(dbs)s AND t.engine NOT IN ('View', 'MaterializedView') "
        "GROUP BY t.database, t.name",
        {"dbs": databases},
    )
    condition = f"tenant = {ddl.quote_str(tenant)}"
    # A table without a tenant column cannot be filtered: it is left out, hence refused.
    return {f"{db}.{name}": condition for db, name, has_tenant in rows if has_tenant}


def _allowed_tables(store: LedgerStore, filters: dict[str, str], tenant: str | None) -> set[str]:
    if tenant is None:
        return set()  # every table: no tenant to protect
    databases = tiers.ledger_databases(store)
    _, rows = store.query(
        "SELECT database, name FROM system.tables WHERE database IN %(dbs)s AND engine = 'View'",
        {"dbs": databases},
    )
    return set(filters) | {f"{db}.{name}" for db, name in rows} | _TENANT_SAFE_TABLES


def _check_sources(tree: list[str], *, allowed_tables: set[str]) -> None:
    """Refuse what the tenant filter cannot cover (see the module doc); empty `allowed_tables`
    allows every table."""
    for line in tree:
        if match := _TABLE_FUNCTION_NODE.match(line):
            name = match.group(1)
            # A ledger parameterized view (`running_at(at = ...)`) appears as a table function;
            # the tables it reads are checked (and filtered) like any others.
            if name not in SAFE_TABLE_FUNCTIONS and name not in ddl.VIEWS:
                raise QueryError(
                    f"table function {name}() is refused: it reads outside the ledger or around "
                    "its tenant filter; query the ledger tables"
                )
        elif match := _FUNCTION_NODE.match(line):
            if match.group(1) in REFUSED_FUNCTIONS:
                raise QueryError(f"function {match.group(1)}() is refused: it reads files")
        elif (
            allowed_tables
            and (match := _TABLE_NODE.match(line))
            and match.group(1) not in allowed_tables
        ):
            raise QueryError(
                f"table {match.group(1)} is refused for a tenant-scoped query: only the "
                "ledger tables and views can be filtered by tenant"
            )


def _first_line(exc: BaseException) -> str:
    """ClickHouse's message without the stack trace and version trailer."""
    text = str(exc).strip()
    for line in text.splitlines():
        if "DB::Exception" in line or "Code:" in line:
            text = line
            break
    else:
        text = text.splitlines()[0] if text else type(exc).__name__
    text = re.sub(r"\s*\(version [\d.]+[^)]*\)", "", text)
    # A server-side error wrapped once more by the client repeats its code and name.
    text = re.sub(r"^(Code: \d+\. DB::Exception: )+", r"\1", text)
    text = re.sub(r"(\. \(\w+\))\1$", r"\1", text)
    return text.strip()


# --- formats -------------------------------------------------------------------------------
def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    plain = jsonable(value)
    if isinstance(plain, dict | list):
        return json.dumps(plain, ensure_ascii=False)
    return str(plain)


def _cut(text: str, width: int) -> str:
    text = text.replace("\n", "\\n").replace("\t", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def format_table(result: QueryResult, max_cell: int = MAX_CELL) -> str:
    """Aligned columns for a terminal; long cells cut with `…`, numbers right-aligned."""
    header = [_cut(c, max_cell) for c in result.columns]
    body = [[_cut(_cell(v), max_cell) for v in row] for row in result.rows]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(header)]
    numeric = [_is_numeric(t) for t in result.types]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(cells, widths, numeric, strict=True)
        ).rstrip()

    lines = [line(header), "  ".join("-" * w for w in widths)]
    lines += [line(r) for r in body]
    count = f"({len(result.rows)} row{'s' if len(result.rows) != 1 else ''}"
    count += ", truncated: raise --max-rows)" if result.truncated else ")"
    lines.append(count)
    return "\n".join(lines)


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
