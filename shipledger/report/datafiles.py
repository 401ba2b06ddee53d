"""The pack's CSV data files: one cell format for every value, so the same rows always give
the same bytes (UTF-8, `\\n` line ends, UTC timestamps to the millisecond, no generation time)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any


def cell(value: Any) -> str:
    """One value as a CSV cell: empty for NULL, `2026-11-25T10:00:00.000Z` for a timestamp,
    `true`/`false`, a list joined by `;`."""
    if type(value) is str:  # most cells: checked first (a pack has millions of cells)
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        at = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        return at.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"
    if isinstance(value, list | tuple):
        return ";".join(cell(v) for v in value)
    return str(value)


def cells(rows: Sequence[Sequence[Any]]) -> list[list[str]]:
    """Every value of `rows` as its cell."""
    return [[cell(v) for v in row] for row in rows]


def csv_bytes(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> bytes:
    """Header and rows of cells (`cells`) as CSV bytes."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def records(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[dict[str, str]]:
    """Rows of cells as dicts (what the charts and the HTML show)."""
    return [dict(zip(columns, row, strict=True)) for row in rows]
