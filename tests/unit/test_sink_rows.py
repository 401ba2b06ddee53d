"""Decoded Avro messages become ledger rows (pure functions, no infrastructure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from shipledger.schemas.models import Alert, DeploymentEvent, DeploymentRecord
from shipledger.sinks import rows
from shipledger.sinks.ledger import ddl
from tests.kit import deployment_event, deployment_record, sample_alert, wire

SHA = "0123456789abcdef0123456789abcdef01234567"
T0 = datetime(2026, 11, 26, 10, 0, 0, 123000, tzinfo=UTC)


def event() -> DeploymentEvent:
    return deployment_event(
        deployment_id="dep-1",
        event_type="succeeded",
        region="eu-west-1",
        exit_code=0,
        duration_ms=1234,
        occurred_at=T0,
        attributes={"team": "payments"},
    )


def record() -> DeploymentRecord:
    return deployment_record(
        record_id="evt-2",
        deployment_id="dep-1",
        seq=2,
        environment_raw="production",
        tenant="acme",
        commit_sha=SHA,
        started_at=T0,
        finished_at=T0 + timedelta(minutes=3),
        event_count=2,
        last_event_id="evt-2",
        alert_rules=["missing_change_ticket"],
        policy_version="p-7",
        updated_at=T0 + timedelta(minutes=3),
    )


def alert() -> Alert:
    return sample_alert(
        alert_id="evt-2:missing_change_ticket",
        message="no change ticket for a prod deploy",
        evidence={"environment": "prod"},
        policy_version="p-7",
        deployment_id="dep-1",
        event_id="evt-2",
        tenant="acme",
        occurred_at=T0,
        detected_at=T0 + timedelta(seconds=1),
    )


def _unstamped(table: str) -> list[str]:
    """The table's columns but those the sink stamps when it stores the row."""
    spec = ddl.tables()[table]
    return [c for c in spec.column_names if c not in spec.stamped]


def test_event_row_keeps_every_field_and_adds_kafka_position() -> None:
    ev = event()
    decoded = wire("io.shipledger.v1.DeploymentEvent", ev.to_avro())
    ts = int((T0 + timedelta(seconds=5)).timestamp() * 1000)
    row = rows.event_row(decoded, rows.KafkaMeta("raw", 3, 42, ts))
    assert list(row) == _unstamped(ddl.EVENTS)
    assert row["event_id"] == ev.event_id
    assert row["occurred_at"] == T0
    assert row["occurred_at"].tzinfo is not None
    assert row["attributes"] == {"team": "payments"}
    assert row["region"] == "eu-west-1"
    assert row["repository"] is None
    assert row["received_at"] == T0 + timedelta(seconds=5)
    assert (row["kafka_partition"], row["kafka_offset"]) == (3, 42)


def test_received_at_falls_back_to_now_without_a_kafka_timestamp() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert rows.received_at(rows.KafkaMeta("raw", 0, 0, None), now) == now
    assert rows.received_at(rows.KafkaMeta("raw", 0, 0, -1), now) == now


def test_record_row() -> None:
    rec = record()
    row = rows.record_row(wire("io.shipledger.v1.DeploymentRecord", rec.to_avro()))
    assert list(row) == _unstamped(ddl.RECORDS)
    assert row["finished_at"] == T0 + timedelta(minutes=3)
    assert row["alert_rules"] == ["missing_change_ticket"]
    assert row["seq"] == 2


def test_alert_row() -> None:
    row = rows.alert_row(wire("io.shipledger.v1.Alert", alert().to_avro()))
    assert list(row) == _unstamped(ddl.ALERTS)
    assert row["evidence"] == {"environment": "prod"}
    assert row["severity"] == "high"


def test_naive_and_offset_timestamps_become_utc() -> None:
    decoded = alert().to_avro()
    decoded["occurred_at"] = datetime(2026, 11, 26, 12, 0)  # naive: taken as UTC
    decoded["detected_at"] = datetime(2026, 11, 26, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    row = rows.alert_row(decoded)
    assert row["occurred_at"] == datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    assert row["detected_at"].utcoffset() == timedelta(0)
    assert row["detected_at"] == datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_missing_field_or_empty_id_is_a_row_error() -> None:
    decoded = alert().to_avro()
    del decoded["message"]
    with pytest.raises(rows.RowError, match="message"):
        rows.alert_row(decoded)
    decoded = alert().to_avro() | {"alert_id": ""}
    with pytest.raises(rows.RowError, match="alert_id"):
        rows.alert_row(decoded)
    decoded = alert().to_avro() | {"occurred_at": "yesterday"}
    with pytest.raises(rows.RowError, match="occurred_at"):
        rows.alert_row(decoded)


def test_the_first_failing_column_is_named_whatever_else_fails() -> None:
    # Values are taken all at once: the error still names the first column, in column order,
    # that is missing or cannot be converted.
    decoded = alert().to_avro() | {"occurred_at": "yesterday"}
    del decoded["severity"]  # before occurred_at
    with pytest.raises(rows.RowError, match="'severity' missing"):
        rows.alert_row(decoded)
    decoded = alert().to_avro() | {"occurred_at": "yesterday"}
    del decoded["detected_at"]  # after it
    with pytest.raises(rows.RowError, match="occurred_at: expected a timestamp"):
        rows.alert_row(decoded)


def test_dedupe_drops_stored_and_repeated_ids_keeping_the_first() -> None:
    batch = [
        {"tenant": "t", "id": "a", "n": 1},
        {"tenant": "t", "id": "b", "n": 2},
        {"tenant": "t", "id": "a", "n": 3},
        {"tenant": "t", "id": "c", "n": 4},
    ]
    kept, dropped = rows.dedupe(batch, "id", {("t", "c")})
    assert [row["n"] for row in kept] == [1, 2]
    assert dropped == 2


def test_dedupe_keeps_another_tenants_row_with_the_same_id() -> None:
    batch = [{"tenant": "a", "id": "x"}, {"tenant": "b", "id": "x"}, {"tenant": "c", "id": "x"}]
    kept, dropped = rows.dedupe(batch, "id", {("c", "x")})
    assert [row["tenant"] for row in kept] == ["a", "b"]
    assert dropped == 1


def test_a_row_holds_the_tables_columns_in_their_order_whatever_the_message_holds() -> None:
    decoded = alert().to_avro()
    reordered = dict(reversed(decoded.items()))
    assert list(rows.alert_row(reordered)) == _unstamped(ddl.ALERTS)
    assert rows.alert_row(reordered) == rows.alert_row(decoded)
    extra = rows.alert_row(decoded | {"not_a_column": "x"})
    assert list(extra) == _unstamped(ddl.ALERTS)
    assert extra == rows.alert_row(decoded)
