"""deploy/grafana/shipledger.json: it parses, every ClickHouse panel's SQL (its Grafana macros
expanded) runs on chDB against the ledger's views and returns rows, every Prometheus panel
names metrics the components expose; and `shipledger annotations export` over the same
ledger."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shipledger import metrics as m
from shipledger.processors.anomaly_join import suspect_alerts, suspects
from shipledger.processors.enrichment import Enrichment
from shipledger.processors.recent import Deployed, RecentDeployments
from shipledger.processors.step import process
from shipledger.schemas.family_models import SignalEvent
from shipledger.schemas.models import DeploymentEvent
from shipledger.schemas.policy import Rules, load_policy
from shipledger.settings import Settings
from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.sinks.rows import alert_row, record_row
from shipledger.sinks.writer import LedgerWriter
from tests.kit import SHA, invoke, ledger_settings, wire

pytestmark = pytest.mark.integration

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "shipledger.json"
NOW = datetime.now(UTC).replace(microsecond=0)
FROM, TO = NOW - timedelta(days=1), NOW + timedelta(minutes=1)


def expand(sql: str) -> str:
    """The SQL the ClickHouse plugin sends for the range FROM-TO (its macros expanded)."""

    def at(when: datetime) -> str:
        return f"toDateTime64('{when:%Y-%m-%d %H:%M:%S}', 3, 'UTC')"

    sql = re.sub(
        r"\$__timeFilter\((\w+)\)", lambda g: f"{g[1]} >= {at(FROM)} AND {g[1]} <= {at(TO)}", sql
    )
    sql = re.sub(
        r"\$__timeInterval\((\w+)\)",
        lambda g: f"toStartOfInterval(toDateTime({g[1]}), INTERVAL 60 second)",
        sql,
    )
    assert "$" not in sql, f"unexpanded macro in {sql}"
    return sql


def targets(datasource: str) -> list[tuple[str, dict[str, Any]]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target)
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if target["datasource"]["type"] == datasource
    ]


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A ledger with two deployments, their policy alerts and a suspect_deployment alert."""
    settings = ledger_settings(tmp_path_factory.mktemp("dash") / "data")
    policy = load_policy(None)
    with LedgerStore.open(settings) as store:
        store.ensure_schema()
        writer = LedgerWriter(store, policy)
        recent = RecentDeployments()
        for dep, service, status in (("d-1", "payments", "succeeded"), ("d-2", "cart", "failed")):
            previous = None
            for i, stage in enumerate(("started", status)):
                event = DeploymentEvent(
                    event_id=f"{dep}-{stage}",
                    deployment_id=dep,
                    event_type=stage,
                    service=service,
                    environment="prod",
                    commit_sha=SHA,
                    actor="alice",
                    version="2.0",
                    occurred_at=NOW - timedelta(minutes=30 - i),
                )
                result = process(event, previous, policy, now=NOW)
                previous = result.record
                record = wire("io.shipledger.v1.DeploymentRecord", result.record.to_avro())
                writer.write_rows({ddl.RECORDS: [record_row(record)]})
                alerts = [
                    alert_row(wire("io.shipledger.v1.Alert", a.to_avro())) for a in result.alerts
                ]
                writer.write_rows({ddl.ALERTS: alerts})
            recent.apply(Deployed.of(result.record.model_dump()))
        anomaly = SignalEvent(
            event_id="sig-1", kind="alert_fired", service="payments", occurred_at=NOW
        )
        found = suspects(anomaly, recent, Enrichment(), Rules())
        raised = suspect_alerts(anomaly, found, Rules(), policy.full_version, NOW)
        rows = [alert_row(wire("io.shipledger.v1.Alert", a.to_avro())) for a in raised]
        writer.write_rows({ddl.ALERTS: rows})
    yield settings


def test_dashboard_parses_and_names_its_datasources() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "shipledger-overview"
    inputs = {i["pluginId"] for i in dashboard["__inputs"]}
    assert inputs == {"grafana-clickhouse-datasource", "prometheus"}
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert len(targets("grafana-clickhouse-datasource")) >= 7
    assert len(targets("prometheus")) >= 8


def test_every_clickhouse_panel_runs_on_the_views(ledger: Settings) -> None:
    with LedgerStore.open(ledger) as store:
        for title, target in targets("grafana-clickhouse-datasource"):
            assert target["editorType"] == "sql"
            columns, rows = store.query(expand(target["rawSql"]))
            assert columns, title
            assert rows, f"{title}: no rows"
            if target["format"] == 0:  # a time series: a time column first
                assert columns[0] == "time", title
        _, suspect = store.query(
            expand(
                next(
                    t["rawSql"]
                    for n, t in targets("grafana-clickhouse-datasource")
                    if "Suspect" in n
                )
            )
        )
    assert [row[3:5] for row in suspect] == [("payments", "d-1")]


def test_every_prometheus_panel_names_exposed_metrics() -> None:
    exposed = {m.exposed_name(name) for name in m.CATALOGUE} | {m.exposed_name(m.CONSUMER_LAG)}
    for title, target in targets("prometheus"):
        names = set(re.findall(r"shipledger_[a-z_]+", target["expr"]))
        assert names, title
        for name in names:
            base = re.sub(r"_(total|bucket|count|sum)$", "", name)
            assert base in exposed, f"{title}: {name} is not a metric shipledger exposes"


def test_annotations_export(ledger: Settings) -> None:
    data_dir = str(ledger.data_dir)
    grafana = json.loads(invoke("annotations", "export", "--data-dir", data_dir).output)
    assert [a["tags"][1] for a in grafana] == ["service:payments", "service:cart"]
    first = grafana[0]
    assert first["time"] == int((NOW - timedelta(minutes=30)).timestamp() * 1000)
    assert first["timeEnd"] == first["time"] + 60_000
    assert first["text"].startswith("Deployed payments 2.0 to prod\ndeployment d-1")
    datadog = json.loads(
        invoke(
            "annotations", "export", "--format", "datadog", "--service", "cart",
            "--dashboard-uid", "ignored", "--data-dir", data_dir,
        ).output
    )  # fmt: skip
    assert [(e["title"], e["alert_type"]) for e in datadog] == [
        ("Failed to deploy cart 2.0 to prod", "error")
    ]
    old = invoke("annotations", "export", "--since", "5m", "--data-dir", data_dir)
    assert json.loads(old.output) == []
    bad = invoke("annotations", "export", "--since", "soon", "--data-dir", data_dir)
    assert bad.exit_code == 2 and "--since must be a positive number" in bad.output
