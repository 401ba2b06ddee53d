"""What `shipledger alerts` shows, and which alerts: pure functions, no Kafka or ClickHouse.

An alert here is the JSON form of one record of the alerts topic (`io.shipledger.v1.Alert`):
its Avro fields, timestamps as ISO-8601 strings. `alerts tail` builds it from the decoded
Avro record (`json_alert`); `alerts list`, and `tail` through an API, from JSON (a row of the
ledger's alerts table, the same columns `alert_fields()`, or an `alert` event of the API's
live stream: `alert_from_json`), so every path prints the same lines and the same JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cache
from typing import Any, get_args

from shipledger.schemas.durations import parse_duration
from shipledger.schemas.models import Severity
from shipledger.schemas.registry import catalog
from shipledger.schemas.scopes import RowScope
from shipledger.schemas.topics import ALERTS

#: Severities from the lowest to the highest (the schema's enum order).
SEVERITIES: tuple[str, ...] = get_args(Severity)


@cache
def alert_fields() -> tuple[str, ...]:
    """The alert's fields in schema order: the columns `alerts list` selects, the keys of
    its JSON."""
    schema = catalog().latest(catalog().topic(ALERTS).schema_name)
    return tuple(f["name"] for f in schema.raw["fields"])


def parse_since(text: str, now: datetime) -> datetime:
    """`--since`: a duration back from `now` (`90s`, `15m`, `2h`, `7d`, `2w`) or an ISO-8601
    time (`2026-11-30T09:00`, UTC unless it names an offset). ValueError saying which forms."""
    try:
        return now - parse_duration(text, units="smhdw", what="a duration")
    except ValueError as duration_error:
        try:
            at = datetime.fromisoformat(text.strip())
        except ValueError:
            raise ValueError(
                f"{duration_error}; or an ISO-8601 time such as 2026-11-30T09:00:00Z"
            ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def json_alert(record: Mapping[str, Any]) -> dict[str, Any]:
    """A decoded Avro alert as JSON values (timestamps ISO-8601 in UTC), fields in order."""
    return {name: _plain(record.get(name)) for name in alert_fields()}


@cache
def _timestamp_fields() -> frozenset[str]:
    schema = catalog().latest(catalog().topic(ALERTS).schema_name)
    return frozenset(
        f["name"]
        for f in schema.raw["fields"]
        if isinstance(f["type"], dict) and f["type"].get("logicalType") == "timestamp-millis"
    )


def alert_from_json(data: Mapping[str, Any]) -> dict[str, Any]:
    """An alert read as JSON (a ledger row, a stream event: timestamps ISO-8601 in any
    offset and precision) in the form `json_alert` gives, so it prints identically."""
    record = dict(data)
    for name in _timestamp_fields():
        at = _time(record.get(name)) if record.get(name) is not None else None
        if at is not None:
            record[name] = at
    return json_alert(record)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _time(value: Any) -> datetime | None:
    """An alert's ISO timestamp as an aware datetime (None if absent or unreadable)."""
    try:
        at = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def is_resolution(alert: Mapping[str, Any]) -> bool:
    """Whether the alert is a resolution (rows stored before resolutions existed: kind '')."""
    return alert.get("kind") == "resolution"


@dataclass(frozen=True)
class AlertFilter:
    """Which alerts to show: within `scope` (tenant, teams, environments: the rule of
    `RowScope`, so `--team` leaves out alerts without a team), of these `services` and
    `rules` (empty: any), at least `min_severity`, detected at or after `since`."""

    scope: RowScope = field(default_factory=RowScope)
    services: frozenset[str] = frozenset()
    rules: frozenset[str] = frozenset()
    min_severity: str | None = None
    since: datetime | None = None

    @property
    def severities(self) -> tuple[str, ...]:
        """The severities shown: `min_severity` and above (all without one)."""
        if self.min_severity is None:
            return SEVERITIES
        return SEVERITIES[SEVERITIES.index(self.min_severity) :]

    def matches(self, alert: Mapping[str, Any]) -> bool:
        """Whether `alert` (JSON form) passes every filter."""
        if not self.scope.admits(
            str(alert.get("tenant")), alert.get("team"), alert.get("environment")
        ):
            return False
        if self.services and alert.get("service") not in self.services:
            return False
        if self.rules and alert.get("rule") not in self.rules:
            return False
        if alert.get("severity") not in self.severities:
            return False
        if self.since is not None:
            detected = _time(alert.get("detected_at"))
            return detected is not None and detected >= self.since
        return True

    def where_sql(self, quote: Any) -> str:
        """The same filters as a SQL condition over the alerts table (`quote` makes a string
        literal); `1` when nothing is filtered."""
        parts: list[str] = []

        def among(column: str, values: frozenset[str] | tuple[str, ...]) -> None:
            parts.append(f"{column} IN ({', '.join(quote(v) for v in sorted(values))})")

        if self.scope.tenant is not None:
            among("tenant", (self.scope.tenant,))
        for column, values in (
            ("team", self.scope.teams),
            ("environment", self.scope.environments),
            ("service", self.services),
            ("rule", self.rules),
        ):
            if values:
                among(column, values)
        if self.min_severity is not None:
            among("severity", self.severities)
        if self.since is not None:
            millis = int(self.since.timestamp() * 1000)
            parts.append(f"detected_at >= fromUnixTimestamp64Milli({millis}, 'UTC')")
        return " AND ".join(parts) or "1"


def human_line(alert: Mapping[str, Any]) -> str:
    """One line: when detected, severity (or RESOLVED), rule, tenant/service/environment (and
    team), deployment, message; an alert ends with its id, a resolution names the one it
    resolves."""
    detected = _time(alert.get("detected_at"))
    when = detected.strftime("%Y-%m-%d %H:%M:%SZ") if detected else "?"
    where = f"{alert.get('tenant')}/{alert.get('service')}/{alert.get('environment')}"
    if alert.get("team"):
        where += f" ({alert['team']})"
    what = f"{alert.get('rule')}  {where}  deploy {alert.get('deployment_id')}"
    message = " ".join(str(alert.get("message", "")).split())  # one line, whatever it held
    if is_resolution(alert):
        return f"{when}  RESOLVED  {what}  resolves {alert.get('resolves')}: {message}"
    severity = str(alert.get("severity", "?")).upper()
    return f"{when}  {severity:<8}  {what}  {message}  [{alert.get('alert_id')}]"


def json_line(alert: Mapping[str, Any]) -> str:
    """One compact JSON object per line, for `jq`."""
    return json.dumps(dict(alert), ensure_ascii=False, separators=(",", ":"), default=str)
