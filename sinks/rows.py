"""Pure functions: decoded Avro dicts (from `AvroCodec.decode`) to ledger table rows.

No I/O and no clients: the sink wraps them. A message that decodes but does not fit its table
raises `RowError`, which the sink treats like a decode failure (dead letter, not a crash).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shipledger.sinks.chain import to_ms_precision
from shipledger.sinks.ddl import (
    ALERTS,
    EVENTS,
    INGEST_COLUMNS,
    LEDGER_COLUMN_NAMES,
    RECORDS,
    TableSpec,
    tables,
)

Row = dict[str, Any]
_INGEST = frozenset(c.name for c in INGEST_COLUMNS)


class RowError(ValueError):
    """A decoded message that cannot become a row of its table."""


@dataclass(frozen=True)
class KafkaMeta:
    """Where a message was read from: the ingest columns of deployment_events."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None


def received_at(meta: KafkaMeta, now: datetime | None = None) -> datetime:
    """The message's Kafka timestamp, or `now` when the broker gave none."""
    if meta.timestamp_ms is None or meta.timestamp_ms <= 0:
        return now or datetime.now(UTC)
    return datetime.fromtimestamp(meta.timestamp_ms / 1000, tz=UTC)


def _utc(value: Any, column: str) -> datetime:
    if not isinstance(value, datetime):
        raise RowError(f"{column}: expected a timestamp, got {type(value).__name__}")
    # DateTime64(3) keeps milliseconds: the row hashed must be the row stored.
    if value.tzinfo is None:
        return to_ms_precision(value.replace(tzinfo=UTC))
    return to_ms_precision(value.astimezone(UTC))


def avro_row(spec: TableSpec, decoded: Mapping[str, Any]) -> Row:
    """The table's Avro-derived columns taken from `decoded`, timestamps in UTC (the sink
    stamps the ledger columns when it stores the row)."""
    row: Row = {}
    for column in spec.columns:
        if column.name in LEDGER_COLUMN_NAMES or (column.name in _INGEST and spec.name == EVENTS):
            continue
        if column.name not in decoded:
            raise RowError(f"{spec.name}: field {column.name!r} missing from the message")
        value = decoded[column.name]
        if value is not None and column.type.startswith(("DateTime64", "Nullable(DateTime64")):
            value = _utc(value, column.name)
        row[column.name] = value
    if not row[spec.id_column]:
        raise RowError(f"{spec.name}: empty {spec.id_column}")
    return row


def event_row(event: Mapping[str, Any], meta: KafkaMeta) -> Row:
    """A `deployment_events` row: the event as received plus its Kafka position."""
    row = avro_row(tables()[EVENTS], event)
    row["received_at"] = to_ms_precision(received_at(meta))
    row["kafka_partition"] = meta.partition
    row["kafka_offset"] = meta.offset
    return row


def record_row(record: Mapping[str, Any]) -> Row:
    """A `deployment_records` row."""
    return avro_row(tables()[RECORDS], record)


def alert_row(alert: Mapping[str, Any]) -> Row:
    """An `alerts` row (evidence stays a string map)."""
    return avro_row(tables()[ALERTS], alert)


def dedupe(rows: list[Row], id_column: str, stored: set[str]) -> tuple[list[Row], int]:
    """Rows whose id is neither in `stored` nor earlier in `rows`; and how many were dropped."""
    seen = set(stored)
    kept: list[Row] = []
    for row in rows:
        row_id = row[id_column]
        if row_id in seen:
            continue
        seen.add(row_id)
        kept.append(row)
    return kept, len(rows) - len(kept)
