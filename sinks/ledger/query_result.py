"""A read query's result, its limits and its formats (table, CSV, JSON): what a client of
`POST /v1/query` (`shipledger query` beside a running stack) needs, apart from running
queries (`shipledger.sinks.ledger.query`), so that such a client loads neither the engine's
guard nor the ledger's DDL."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from ipaddress import IPv4Address, IPv6Address
from typing import Any
from uuid import UUID

from shipledger.fields import copied
from shipledger.settings import Settings
from shipledger.sinks.ledger.query_errors import QueryError

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
    # rich draws it: loaded only for this format (a JSON or CSV answer does without it).
    from shipledger.tables import render_table

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
