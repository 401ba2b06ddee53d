"""Deployments as Grafana annotations and Datadog events (pure payloads)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shipledger.annotations import Deployment, datadog_event, export, grafana_annotation

ROW: dict[str, Any] = {
    "tenant": "acme",
    "deployment_id": "dep-7",
    "service": "payments",
    "environment": "prod",
    "status": "succeeded",
    "version": "2.14.0",
    "commit_sha": "0123456789abcdef0123456789abcdef01234567",
    "actor": "ci-bot",
    "team": "pay",
    "started_at": "2026-11-30T12:00:00",  # the API's JSON: naive, UTC
    "finished_at": datetime(2026, 11, 30, 12, 3, tzinfo=UTC),
    "pipeline_run_url": "https://ci.example.com/run/42",
}
START_MS = int(datetime(2026, 11, 30, 12, 0, tzinfo=UTC).timestamp() * 1000)


def test_grafana_region_tags_and_text() -> None:
    body = grafana_annotation(Deployment.of_row(ROW), dashboard_uid="shipledger-overview")
    assert body == {
        "time": START_MS,
        "timeEnd": START_MS + 180_000,
        "dashboardUID": "shipledger-overview",
        "tags": [
            "deployment",
            "service:payments",
            "env:prod",
            "tenant:acme",
            "deployment_id:dep-7",
            "status:succeeded",
            "version:2.14.0",
            "team:pay",
        ],
        "text": "Deployed payments 2.14.0 to prod\n"
        "deployment dep-7, commit 0123456789ab, by ci-bot\nhttps://ci.example.com/run/42",
    }


def test_grafana_point_while_in_progress_organization_wide() -> None:
    row = {**ROW, "status": "in_progress", "finished_at": None, "version": None, "team": None}
    body = grafana_annotation(Deployment.of_row(row))
    assert "timeEnd" not in body and "dashboardUID" not in body
    assert body["text"].startswith("Deploying payments to prod\n")
    assert "version:" not in " ".join(body["tags"])


def test_datadog_event() -> None:
    event = datadog_event(Deployment.of_row({**ROW, "status": "rolled_back"}))
    assert event == {
        "title": "Rolled back payments 2.14.0 to prod",
        "text": "Rolled back payments 2.14.0 to prod\n"
        "deployment dep-7, commit 0123456789ab, by ci-bot\nhttps://ci.example.com/run/42",
        "tags": event["tags"],
        "date_happened": START_MS // 1000 + 180,
        "alert_type": "error",
        "aggregation_key": "dep-7",
        "source_type_name": "shipledger",
    }
    assert "status:rolled_back" in event["tags"]


def test_export_picks_the_format() -> None:
    d = Deployment.of_row(ROW)
    assert export([d], "grafana", "uid-1") == [grafana_annotation(d, "uid-1")]
    assert export([d, d], "datadog") == [datadog_event(d)] * 2
