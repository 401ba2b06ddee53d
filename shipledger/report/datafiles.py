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
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        at = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"
    if isinstance(value, list | tuple):
        return ";".join(cell(v) for v in value)
    return str(value)


def csv_bytes(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    """Header and rows as CSV bytes."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([cell(v) for v in row] for row in rows)
    return out.getvalue().encode("utf-8")


def records(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[dict[str, str]]:
    """Rows as dicts of their CSV cells (what the charts and the HTML show)."""
    return [dict(zip(columns, (cell(v) for v in row), strict=True)) for row in rows]
