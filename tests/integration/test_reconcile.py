"""Reconciliation against independent evidence on the real stack (docs/reconcile.md):
deployments through the ingest API, Tansu and the sink into chDB; then, the stack stopped
(`shipledger reconcile` opens the embedded ledger itself), the Kubernetes audit log fixture
against them, twice, and the quarter in one command.

The ledger (2026-11-30, prod):
    d-co      checkout   11:00-11:05  the audit log patches checkout-web at 11:02: matched
    d-pay     payments   09:00-09:04  patched at 09:30: a timing disagreement
    d-search  search     10:00-10:03  never in the audit log: unobserved (prod is covered)
    d-db      ledger-db  15:58-16:01  created at 16:00: matched (team platform)
    d-cart    cart       2026-11-01   the team of cart; the audit log's cart update at 13:00
                                      has no deployment: unreported
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from shipledger.cli import cli
from shipledger.settings import Settings
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.up.stack import Stack
from tests.kit import api_deployment, api_token, own_settings, poll, post_events

pytestmark = pytest.mark.integration

TENANT = "acme"
FIXTURES = Path(__file__).parent.parent / "fixtures" / "reconcile"
DEPLOYMENTS = (
    ("d-co", "checkout", "payments", "2026-11-30T11:00:00", "2026-11-30T11:05:00"),
    ("d-pay", "payments", "payments", "2026-11-30T09:00:00", "2026-11-30T09:04:00"),
    ("d-search", "search", "search", "2026-11-30T10:00:00", "2026-11-30T10:03:00"),
    ("d-db", "ledger-db", "platform", "2026-11-30T15:58:00", "2026-11-30T16:01:00"),
    ("d-cart", "cart", "payments", "2026-11-01T08:00:00", "2026-11-01T08:05:00"),
)


def _events() -> list[dict[str, Any]]:
    events = []
    for dep, service, team, started, finished in DEPLOYMENTS:
        stages = [("started", f"{started}+00:00"), ("succeeded", f"{finished}+00:00")]
        events += api_deployment(dep, service, stages, team)
    return events


@pytest.fixture
def ledger(broker: str, tmp_path: Path) -> Iterator[Settings]:
    """A ledger holding DEPLOYMENTS, written by the stack, which is stopped again."""
    settings = own_settings(tmp_path, api_port=0, sink_batch_ms=100, tenant=TENANT)
    with Stack(settings, bootstrap=broker, log_dir=tmp_path / "logs", api=True) as stack:
        assert stack.api is not None and stack.store is not None
        token = api_token(settings, TENANT, name="reconcile-test")
        post_events(stack, token, TENANT, *_events())
        store = stack.store
        poll(
            stack,
            lambda: store.query(
                "SELECT uniqExact(deployment_id) FROM deployment_records WHERE status = 'succeeded'"
            )[1][0][0],
            lambda n: n == len(DEPLOYMENTS),
        )
    yield settings


def _reconcile(settings: Settings, *args: str) -> Any:
    env = {"SHIPLEDGER_DATA_DIR": str(settings.data_dir), "SHIPLEDGER_TENANT": TENANT}
    result = CliRunner().invoke(
        cli,
        ["reconcile", "--source", "k8s-audit", "--mapping", str(FIXTURES / "mapping.yaml"),
         str(FIXTURES / "k8s-audit.log"), *args],
        env=env,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return result.output


def test_unreported_unobserved_and_timing_are_found_and_stored_once(ledger: Settings) -> None:
    day = ("--since", "2026-11-30", "--until", "2026-11-30")
    first = json.loads(_reconcile(ledger, *day, "--format", "json"))
    again = json.loads(_reconcile(ledger, *day, "--format", "json"))
    table = _reconcile(ledger, *day)
    quarter = json.loads(_reconcile(ledger, "--quarter", "2026Q4", "--format", "json"))

    assert first["stored_now"] is True and again["stored_now"] is False
    assert again["run_id"] == first["run_id"] and again["findings"] == first["findings"]
    assert first["period"] == ["2026-11-30T00:00:00+00:00", "2026-12-01T00:00:00+00:00"]
    assert [(f["kind"], f["service"], f["environment"], f["team"], f["deployment_id"],
             f["evidence"]) for f in first["findings"]] == [
        ("unreported", "cart", "prod", "payments", "", "k8s-audit.log:6 (+1 more)"),
        ("unobserved", "search", "prod", "search", "d-search", ""),
        ("timing", "payments", "prod", "payments", "d-pay", "k8s-audit.log:5"),
    ]  # fmt: skip
    assert first["completeness"] == [
        {"team": "payments", "observed": 3, "matched": 2, "completeness": 0.6667},
        {"team": "platform", "observed": 1, "matched": 1, "completeness": 1.0},
    ]
    assert [m["location"] for m in first["malformed"]] == [
        "k8s-audit.log:9", "k8s-audit.log:10", "k8s-audit.log:13",
    ]  # fmt: skip
    assert [u["location"] for u in first["unmapped"]] == ["k8s-audit.log:11"]
    assert "3 findings already stored (the same run)" in table
    assert "k8s-audit.log:10: objectRef.namespace: required" in table
    # The quarter is another run: it also finds cart's November deployment unobserved.
    assert quarter["stored_now"] is True
    assert [(f["kind"], f["deployment_id"]) for f in quarter["findings"]] == [
        ("unreported", ""),
        ("unobserved", "d-cart"),
        ("unobserved", "d-search"),
        ("timing", "d-pay"),
    ]
    with LedgerStore.open(ledger, existing=True) as store:
        _, rows = store.query(
            "SELECT run_id, count(), any(period_start) FROM reconciliation_findings "
            "GROUP BY run_id ORDER BY count()"
        )
    assert [(run, n) for run, n, _ in rows] == [(first["run_id"], 3), (quarter["run_id"], 4)]
