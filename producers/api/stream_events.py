"""What the live stream (`GET /v1/stream`) sends: deployment records and alerts from Kafka as
Server-Sent Events, and who may receive each. Pure: no clients, no I/O.

One `StreamEvent` per consumed message, its SSE frame encoded once and written to every
client it is for; `StreamFilter` says which are (the principal's `sees`, then the client's
own team, environment and service filters).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

Kind = Literal["deployment", "alert", "status", "reset", "dropped"]

#: The fields of a deployment record the dashboard shows (the `deployments` view's columns).
RECORD_FIELDS = (
    "deployment_id",
    "tenant",
    "service",
    "environment",
    "region",
    "status",
    "version",
    "team",
    "application",
    "actor",
    "kind",
    "seq",
    "last_event_type",
    "alert_rules",
    "started_at",
    "finished_at",
    "updated_at",
)
#: The fields of an alert (or resolution) the dashboard's state reads from the `alerts` table
#: (the stream sends the whole alert: `StreamEvent.of`).
ALERT_FIELDS = (
    "alert_id",
    "kind",
    "resolves",
    "rule",
    "severity",
    "message",
    "deployment_id",
    "tenant",
    "service",
    "environment",
    "team",
    "occurred_at",
    "detected_at",
)


class Viewer(Protocol):
    """Who reads (`auth.Principal`): the one read check every read path makes."""

    def sees(self, tenant: str, team: str | None, environment: str | None) -> bool:
        """Whether a row of `tenant`, `team` and `environment` is this viewer's to read."""
        ...


def json_value(value: Any) -> Any:
    """`value` as JSON takes it: datetimes as ISO 8601 UTC with milliseconds and a `Z`
    (Avro's timestamp-millis and ClickHouse's DateTime64(3) alike), lists and maps inside."""
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    return value


def pick(row: Mapping[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """The `fields` of `row` (a decoded message or a ledger row), JSON-ready; absent ones null."""
    return {name: json_value(row.get(name)) for name in fields}


def frame(kind: str, data: Mapping[str, Any], event_id: str | None = None) -> bytes:
    """One SSE frame: `id:` (when given), `event:` and one `data:` line of compact JSON
    (ASCII-escaped: a hostile string cannot break the framing with a newline)."""
    body = json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {body}\n\n".encode("ascii")


#: A comment line: keeps proxies from closing an idle stream (clients ignore it).
HEARTBEAT = b": keep-alive\n\n"


@dataclass(frozen=True)
class StreamEvent:
    """One deployment record or alert on the stream: who may see it and its encoded frame."""

    seq: int
    kind: Kind
    tenant: str
    team: str | None
    environment: str | None
    service: str | None
    frame: bytes
    #: The Kafka message it came from: topic, partition, offset (what the sink has committed
    #: past is in the ledger).
    source: tuple[str, int, int] | None = None

    @classmethod
    def of(
        cls,
        seq: int,
        event_id: str,
        kind: Kind,
        decoded: Mapping[str, Any],
        source: tuple[str, int, int] | None = None,
    ) -> StreamEvent:
        """The stream event of a decoded record (`deployment`) or alert (`alert`). An alert
        goes whole (every field of the topic's schema), so `alerts tail` through the API
        prints what it prints from Kafka."""
        fields: tuple[str, ...]
        if kind == "deployment":
            fields = RECORD_FIELDS
        else:
            fields = (*ALERT_FIELDS, *(name for name in decoded if name not in ALERT_FIELDS))
        data = pick(decoded, fields)
        return cls(
            seq=seq,
            kind=kind,
            tenant=str(data["tenant"]),
            team=data["team"],
            environment=data["environment"],
            service=data["service"],
            frame=frame(kind, data, event_id),
            source=source,
        )


@dataclass(frozen=True)
class StreamFilter:
    """What one client asked for (None: any) on top of what its principal may see."""

    team: str | None = None
    environment: str | None = None
    service: str | None = None

    def admits(self, viewer: Viewer, tenant: str, row: Mapping[str, Any]) -> bool:
        """Whether a row of `tenant` (with `team`, `environment`, `service` keys) goes to a
        client of `viewer` with this filter: `viewer.sees` first, always."""
        team, environment = row.get("team"), row.get("environment")
        if not viewer.sees(tenant, team, environment):
            return False
        return (
            (self.team is None or team == self.team)
            and (self.environment is None or environment == self.environment)
            and (self.service is None or row.get("service") == self.service)
        )

    def admits_event(self, viewer: Viewer, event: StreamEvent) -> bool:
        """`admits` for a stream event."""
        row = {"team": event.team, "environment": event.environment, "service": event.service}
        return self.admits(viewer, event.tenant, row)
