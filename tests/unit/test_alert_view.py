"""`shipledger alerts`' pure parts: filters (as a predicate and as SQL), lines, JSON, --since."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shipledger.alert_view import (
    AlertFilter,
    alert_fields,
    alert_from_json,
    human_line,
    json_alert,
    json_line,
    parse_since,
)
from shipledger.producers.api.stream_events import StreamEvent
from shipledger.schemas.scopes import RowScope
from shipledger.sinks.ledger.reader import sql_string
from tests.kit import sample_alert

AT = datetime(2026, 11, 30, 9, 15, 2, tzinfo=UTC)


def _alert(**fields: Any) -> dict[str, Any]:
    """The JSON form of a missing-ticket alert of acme's payments team (deploy dep-1 at AT),
    each of `fields` given instead."""
    base = sample_alert(
        alert_id="ev1:missing_change_ticket:1",
        message="no change ticket\nfor prod",
        deployment_id="dep-1",
        tenant="acme",
        team="payments",
        occurred_at=AT,
        detected_at=AT,
    )
    return json_alert({**base.to_avro(), **fields})


def test_json_alert_is_the_schema_fields_with_iso_times() -> None:
    alert = _alert()
    assert tuple(alert) == alert_fields()
    assert alert["detected_at"] == "2026-11-30T09:15:02+00:00"
    assert json.loads(json_line(alert)) == alert
    assert "\n" not in json_line(alert)


def test_an_alert_read_as_json_prints_as_the_one_from_kafka() -> None:
    kafka = _alert()
    stream = StreamEvent.of(1, "b0-1", "alert", {**kafka, "detected_at": AT, "occurred_at": AT})
    (data,) = [line for line in stream.frame.decode().splitlines() if line.startswith("data: ")]
    assert json.loads(data[6:])["detected_at"] == "2026-11-30T09:15:02.000Z"
    assert alert_from_json(json.loads(data[6:])) == kafka
    assert alert_from_json(kafka) == kafka  # a ledger row through the API: already this form


def test_human_lines_show_alerts_and_resolutions() -> None:
    assert human_line(_alert()) == (
        "2026-11-30 09:15:02Z  HIGH      missing_change_ticket  acme/checkout/prod (payments)  "
        "deploy dep-1  no change ticket for prod  [ev1:missing_change_ticket:1]"
    )
    resolution = _alert(
        kind="resolution", resolves="ev1:missing_change_ticket:1", message="ticket {x} linked"
    )
    assert human_line(resolution) == (
        "2026-11-30 09:15:02Z  RESOLVED  missing_change_ticket  acme/checkout/prod (payments)  "
        "deploy dep-1  resolves ev1:missing_change_ticket:1: ticket {x} linked"
    )
    assert "(payments)" not in human_line(_alert(team=None))


@pytest.mark.parametrize(
    ("wanted", "alert", "shown"),
    [
        (AlertFilter(), _alert(), True),
        (AlertFilter(RowScope("globex")), _alert(), False),
        (AlertFilter(RowScope(None, frozenset({"payments"}))), _alert(), True),
        (AlertFilter(RowScope(None, frozenset({"payments"}))), _alert(team=None), False),
        (AlertFilter(RowScope(None, environments=frozenset({"dev"}))), _alert(), False),
        (AlertFilter(services=frozenset({"cart", "checkout"})), _alert(), True),
        (AlertFilter(services=frozenset({"cart"})), _alert(), False),
        (AlertFilter(rules=frozenset({"freeze_violation"})), _alert(), False),
        (AlertFilter(min_severity="high"), _alert(), True),
        (AlertFilter(min_severity="critical"), _alert(), False),
        (AlertFilter(min_severity="low"), _alert(severity="medium"), True),
        (AlertFilter(since=AT), _alert(), True),
        (AlertFilter(since=AT + timedelta(seconds=1)), _alert(), False),
    ],
)
def test_filters(wanted: AlertFilter, alert: dict[str, Any], shown: bool) -> None:
    assert wanted.matches(alert) is shown


def test_the_filters_as_sql() -> None:
    assert AlertFilter().where_sql(sql_string) == "1"
    wanted = AlertFilter(
        RowScope("acme", frozenset({"pay'ments"}), frozenset({"prod"})),
        services=frozenset({"b", "a"}),
        rules=frozenset({"r"}),
        min_severity="high",
        since=AT,
    )
    assert wanted.where_sql(sql_string) == (
        "tenant IN ('acme') AND team IN ('pay\\'ments') AND environment IN ('prod') AND "
        "service IN ('a', 'b') AND rule IN ('r') AND severity IN ('critical', 'high') AND "
        f"detected_at >= fromUnixTimestamp64Milli({int(AT.timestamp() * 1000)}, 'UTC')"
    )


def test_since_takes_durations_and_iso_times() -> None:
    assert parse_since("2h", AT) == AT - timedelta(hours=2)
    assert parse_since("2026-11-30T09:00:00Z", AT) == datetime(2026, 11, 30, 9, tzinfo=UTC)
    assert parse_since("2026-11-30T09:00", AT) == datetime(2026, 11, 30, 9, tzinfo=UTC)
    assert parse_since("2026-11-30T10:00+01:00", AT) == datetime(2026, 11, 30, 9, tzinfo=UTC)
    for bad in ("yesterday", "0h", "2y", ""):
        with pytest.raises(ValueError, match="or an ISO-8601 time"):
            parse_since(bad, AT)
