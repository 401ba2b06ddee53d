"""Anomaly correlation end to end on real components: catalog and deployments through
`POST /v1/events`, an Alertmanager webhook through `POST /v1/webhooks/alertmanager/<tenant>`
→ Tansu → Faust worker (recent deployments from the records topic, the catalog's
dependencies) → `suspect_deployment` alerts → sink → chDB."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shipledger.settings import Settings
from shipledger.up.stack import Stack
from tests.kit import SHA, api_client, own_settings, wait_until

pytestmark = pytest.mark.integration

TENANT = "shop"
WEBHOOK_SECRET = "am-secret-0123456789"


@pytest.fixture
def stack_settings(tmp_path: Path) -> Settings:
    return own_settings(tmp_path, sink_batch_ms=100, sink_metrics_port=0, worker_metrics_port=0)


@pytest.fixture
def api_stack(broker: str, tmp_path: Path, stack_settings: Settings) -> Iterator[Stack]:
    with Stack(stack_settings, bootstrap=broker, log_dir=tmp_path / "logs", api=True) as running:
        yield running


@pytest.fixture
def client(api_stack: Stack) -> Iterator[httpx.Client]:
    """An ingest client of tenant shop; the tenant's Alertmanager secret is set."""
    secrets = {"alertmanager": WEBHOOK_SECRET}
    with api_client(api_stack, TENANT, ("ingest",), "anomaly-test", secrets) as c:
        yield c


def scrape(url: str) -> dict[str, float]:
    """`/metrics` at `url`, every sample by name and labels (`name{k="v",...}`)."""
    out = {}
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def worker_metrics_url(stack: Stack, log_dir: Path) -> str | None:
    """The worker's `/metrics` (port 0: the one it logged)."""
    for line in (log_dir / "worker-0.log").read_text().splitlines():
        if '"metrics_endpoint"' in line:
            return str(json.loads(line)["url"])
    return None


def rows(stack: Stack, sql: str) -> list[Any]:
    assert stack.store is not None
    return list(stack.store.query(sql)[1])


def test_anomaly_after_a_dependency_deploy_raises_suspect_deployment(
    api_stack: Stack, client: httpx.Client, tmp_path: Path
) -> None:
    api_metrics = f"{client.base_url}/metrics"
    published = 'shipledger_api_events_published_total{{topic="{}"}}'
    raw, signals = api_stack.topics.raw, api_stack.topics.of("signals")
    assert published.format(raw) not in scrape(api_metrics)
    now = datetime.now(UTC).replace(microsecond=0)
    deployed_at = now - timedelta(minutes=12)
    events: list[dict[str, Any]] = [
        {
            "family": "catalog",
            "event_id": "cat-checkout",
            "entity": "service",
            "action": "created",
            "name": "checkout",
            "dependencies": ["payments"],
            "occurred_at": (now - timedelta(days=1)).isoformat(),
        },
        {
            "deployment_id": "dep-pay-7",
            "event_type": "started",
            "service": "payments",
            "environment": "production",
            "version": "2.14.0",
            "commit_sha": SHA,
            "actor": "ci-bot",
            "occurred_at": deployed_at.isoformat(),
        },
        {  # too old for the default 60 min window
            "deployment_id": "dep-pay-old",
            "event_type": "started",
            "service": "payments",
            "environment": "production",
            "commit_sha": SHA,
            "actor": "ci-bot",
            "occurred_at": (now - timedelta(hours=3)).isoformat(),
        },
    ]
    answer = client.post("/v1/events", json=[{"tenant": TENANT, **e} for e in events])
    assert answer.status_code == 202, answer.text
    wait_until(
        api_stack,
        lambda: len(rows(api_stack, "SELECT * FROM deployment_records")) == 2,
        "the deployments' records in the ledger",
    )

    firing: dict[str, Any] = {
        "version": "4",
        "status": "firing",
        "receiver": "shipledger",
        "groupKey": '{}:{alertname="HighErrorRate"}',
        "alerts": [
            {
                "status": "firing",
                "labels": {
                    "alertname": "HighErrorRate",
                    "service": "checkout",
                    "env": "prod",
                    "severity": "page",
                },
                "annotations": {"summary": "5xx above 5%"},
                "startsAt": now.isoformat(),
                "endsAt": "0001-01-01T00:00:00Z",
                "fingerprint": "c6a2cd6e1d0b5f2a",
            }
        ],
    }
    alertmanager(client, firing)

    sql = (
        "SELECT deployment_id, service, severity, message, evidence['path'], "
        "evidence['seconds_before'], evidence['anomaly_source'] FROM alerts "
        "WHERE rule = 'suspect_deployment'"
    )
    wait_until(api_stack, lambda: bool(rows(api_stack, sql)), "a suspect_deployment alert")
    [(dep, service, severity, message, path, seconds, source)] = rows(api_stack, sql)
    assert (dep, service, severity) == ("dep-pay-7", "payments", "high")
    assert path == "checkout → payments" and seconds == "720"
    assert source == "webhook:alertmanager"
    assert message == (
        "deployment dep-pay-7 of payments 2.14.0 to prod (a dependency of checkout "
        "(checkout → payments)) started 12 min before HighErrorRate on checkout"
    )

    # The counters moved: the API's, the sink's and the worker's /metrics.
    seen = scrape(api_metrics)
    assert seen[published.format(raw)] == 2 and seen[published.format(signals)] == 1
    assert api_stack.sink_metrics is not None
    sink_url = f"http://127.0.0.1:{api_stack.sink_metrics.port}/metrics"
    signal_rows = 'shipledger_sink_rows_inserted_total{table="signal_events"}'
    # The alert comes from the worker, the signal's row from the sink: it may store (and
    # count) that row after the alert's.
    wait_until(api_stack, lambda: scrape(sink_url).get(signal_rows, 0) >= 1, "the signal row")
    sink = scrape(sink_url)
    assert sink[signal_rows] == 1
    assert sink['shipledger_sink_messages_total{topic="' + signals + '"}'] == 1
    assert sink['shipledger_sink_insert_seconds_count{table="alerts"}'] >= 1
    assert any(k.startswith("shipledger_consumer_lag{") for k in sink)
    url = worker_metrics_url(api_stack, tmp_path / "logs")
    assert url is not None
    worker = scrape(url)
    assert worker['shipledger_processors_events_in_total{topic="' + signals + '"}'] == 1
    alerts = 'shipledger_processors_alerts_total{kind="alert",rule="suspect_deployment",'
    assert worker[alerts + 'severity="high"}'] == 1

    # A restarted worker finds the deployment again (the records since its horizon).
    api_stack.restart_workers()
    firing["alerts"][0]["labels"]["alertname"] = "HighLatency"
    firing["alerts"][0]["fingerprint"] = "9f1e0d3c2b4a5968"
    alertmanager(client, firing)
    latency = f"{sql} AND message LIKE '%HighLatency%'"
    wait_until(api_stack, lambda: bool(rows(api_stack, latency)), "the restarted worker's alert")
    assert [r[0] for r in rows(api_stack, latency)] == ["dep-pay-7"]
    # ... found through the broker's timestamp index, not by reading the topic whole.
    assert (
        "records_offsets_for_times_failed" not in (tmp_path / "logs" / "worker-0.log").read_text()
    )


def alertmanager(client: httpx.Client, body: dict[str, Any]) -> None:
    answer = client.post(
        f"/v1/webhooks/alertmanager/{TENANT}",
        content=json.dumps(body),
        headers={"Authorization": f"Bearer {WEBHOOK_SECRET}", "Content-Type": "application/json"},
    )
    assert answer.status_code == 202, answer.text
