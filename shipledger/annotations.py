"""Deployments as annotations for observability tools, pure: the Grafana annotations API
payload (`POST /api/annotations`) and the Datadog Events API payload (`POST /api/v1/events`)
of one deployment, so dashboards there show when each service changed and the join of an
anomaly with a deployment can be made on their side too.

`shipledger annotations export` (`shipledger.annotations_cli`) reads the `deployments` view and
prints a JSON array of one of these per deployment; each element is one request body
(README, "Correlate anomalies").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

#: The `deployments` columns an annotation is made of, in this order.
COLUMNS = (
    "tenant",
    "deployment_id",
    "service",
    "environment",
    "status",
    "version",
    "commit_sha",
    "actor",
    "team",
    "started_at",
    "finished_at",
    "pipeline_run_url",
)
Format = Literal["grafana", "datadog"]
#: Datadog's `alert_type` of a deployment's status.
_DATADOG_TYPES = {
    "succeeded": "success",
    "failed": "error",
    "rolled_back": "error",
    "cancelled": "warning",
    "in_progress": "info",
}


@dataclass(frozen=True)
class Deployment:
    """One deployment as the `deployments` view has it (the columns of `COLUMNS`)."""

    tenant: str
    deployment_id: str
    service: str
    environment: str
    status: str
    version: str | None
    commit_sha: str
    actor: str
    team: str | None
    started_at: datetime
    finished_at: datetime | None
    pipeline_run_url: str | None

    @classmethod
    def of_row(cls, row: Mapping[str, Any]) -> Deployment:
        """From a query row by column name; timestamps as datetimes or ISO-8601 text (the
        API's JSON), naive ones in UTC (ClickHouse's DateTime64 columns are UTC)."""
        fields: dict[str, Any] = {name: row.get(name) for name in COLUMNS}
        for name in ("started_at", "finished_at"):
            fields[name] = _utc(fields[name])
        return cls(**fields)

    @property
    def title(self) -> str:
        """`Deployed payments 2.14.0 to prod` (`Deploying` while in progress, `Failed to
        deploy` ...)."""
        what = f"{self.service} {self.version}" if self.version else self.service
        verb = {
            "in_progress": "Deploying",
            "failed": "Failed to deploy",
            "rolled_back": "Rolled back",
            "cancelled": "Cancelled deploying",
        }.get(self.status, "Deployed")
        return f"{verb} {what} to {self.environment}"

    @property
    def tags(self) -> list[str]:
        """`key:value` tags both tools filter by (Grafana's tags are free text)."""
        pairs = {
            "service": self.service,
            "env": self.environment,
            "tenant": self.tenant,
            "deployment_id": self.deployment_id,
            "status": self.status,
            "version": self.version,
            "team": self.team,
        }
        return ["deployment", *(f"{k}:{v}" for k, v in pairs.items() if v)]

    def text(self) -> str:
        """The body: who deployed which commit, and the pipeline run."""
        lines = [
            self.title,
            f"deployment {self.deployment_id}, commit {self.commit_sha[:12]}, by {self.actor}",
        ]
        if self.pipeline_run_url:
            lines.append(self.pipeline_run_url)
        return "\n".join(lines)


def _utc(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        when = value
    else:
        when = datetime.fromisoformat(str(value))
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when


def _millis(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def grafana_annotation(d: Deployment, dashboard_uid: str | None = None) -> dict[str, Any]:
    """The body of Grafana's `POST /api/annotations` for `d`: a region from start to finish
    once finished, a point while in progress; an organization-wide annotation unless
    `dashboard_uid` names a dashboard."""
    body: dict[str, Any] = {"time": _millis(d.started_at), "tags": d.tags, "text": d.text()}
    if d.finished_at is not None and d.finished_at > d.started_at:
        body["timeEnd"] = _millis(d.finished_at)
    if dashboard_uid:
        body["dashboardUID"] = dashboard_uid
    return body


def datadog_event(d: Deployment) -> dict[str, Any]:
    """The body of Datadog's `POST /api/v1/events` for `d` (`date_happened` in epoch
    seconds; `aggregation_key` groups a deployment's events)."""
    return {
        "title": d.title,
        "text": d.text(),
        "tags": d.tags,
        "date_happened": int((d.finished_at or d.started_at).timestamp()),
        "alert_type": _DATADOG_TYPES.get(d.status, "info"),
        "aggregation_key": d.deployment_id[:100],
        "source_type_name": "shipledger",
    }


def export(
    deployments: list[Deployment], fmt: Format, dashboard_uid: str | None = None
) -> list[dict[str, Any]]:
    """One payload per deployment, in the tool's format."""
    build: Callable[[Deployment], dict[str, Any]] = (
        (lambda d: grafana_annotation(d, dashboard_uid)) if fmt == "grafana" else datadog_event
    )
    return [build(d) for d in deployments]
