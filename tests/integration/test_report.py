"""The monthly compliance pack on real chDB: deployments, change requests (with a verified
approval) and alerts (one resolved by a late change request) processed and stored the way
the pipeline does (processors -> Avro -> row builders -> LedgerWriter), then `shipledger
report monthly` and `report verify` run as a person would."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from shipledger.cli import cli
from shipledger.processors.enrichment import Enrichment, fold
from shipledger.processors.late_changes import rejudge_stored
from shipledger.processors.step import process
from shipledger.schemas.families import family_of
from shipledger.schemas.family_models import APPROVAL_SOURCE, ChangeEvent
from shipledger.schemas.models import DeploymentEvent, DeploymentRecord
from shipledger.schemas.policy import load_policy
from shipledger.settings import Settings
from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.reader import ChainHead, LedgerReader
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.sinks.rows import Row, alert_row, avro_row, record_row
from shipledger.sinks.writer import LedgerWriter
from tests.kit import build_event, built, wire

pytestmark = pytest.mark.integration

NOV = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)  # a Monday
RECORD = "io.shipledger.v1.DeploymentRecord"
ALERT = "io.shipledger.v1.Alert"
DATA_FILES = ("deployments.csv", "approvals.csv", "findings.csv")


def _store(store: LedgerStore, table: str, row: Row) -> None:
    LedgerWriter(store, load_policy(None)).write_rows({table: [row]})


def _change(store: LedgerStore, event: ChangeEvent) -> None:
    family = family_of("change")
    spec = ddl.tables()[ddl.CHANGES]
    _store(store, ddl.CHANGES, avro_row(spec, wire(family.schema, event.to_avro())))


def _deploy(
    store: LedgerStore,
    dep: str,
    at: datetime,
    view: Enrichment,
    *,
    env: str = "prod",
    tenant: str = "retail",
    change_id: str | None = None,
) -> tuple[DeploymentRecord, list[Any]]:
    """A started then succeeded deployment: its records and alerts stored; the first alerts."""
    policy = load_policy(None)
    previous: DeploymentRecord | None = None
    first: list[Any] = []
    for i, stage in enumerate(("started", "succeeded")):
        event = DeploymentEvent(
            event_id=f"{dep}-{stage}",
            deployment_id=dep,
            event_type=stage,
            service="checkout",
            environment=env,
            tenant=tenant,
            commit_sha="a" * 40,
            actor=f"{dep}-deployer",
            change_id=change_id,
            occurred_at=at + timedelta(minutes=i),
            **built("checkout"),
        )
        result = process(event, previous, policy, now=at, view=view)
        previous = result.record
        _store(store, ddl.RECORDS, record_row(wire(RECORD, previous.to_avro())))
        for alert in result.alerts:
            _store(store, ddl.ALERTS, alert_row(wire(ALERT, alert.to_avro())))
        first = first or result.alerts
    assert previous is not None
    return previous, first


@pytest.fixture
def ledger(settings: Settings) -> Settings:
    """November 2026 of tenant retail: d1 under an approved change (bob, and carol verified
    by LDAP), d2 whose unknown-ticket alert a late change request resolved, d3 outside its
    change window (open alert); around them what the pack must leave out: a staging
    deployment, one of October, one of another tenant."""
    with LedgerStore.open(settings) as store:
        store.ensure_schema()
        base = {"tenant": "retail", "system": "servicenow", "occurred_at": NOV - timedelta(days=1)}
        approved = ChangeEvent.model_validate(
            {
                **base,
                "event_id": "chg1",
                "change_id": "CHG1",
                "state": "approved",
                "approvals": [{"approver": "bob", "decision": "approved", "decided_at": NOV}],
            }
        )
        verified = ChangeEvent.model_validate(
            {
                **base,
                "event_id": "chg1-carol",
                "change_id": "CHG1",
                "state": "opened",
                "source": APPROVAL_SOURCE,
                "approvals": [
                    {
                        "approver": "carol",
                        "decision": "approved",
                        "decided_at": NOV - timedelta(hours=2),
                        "groups": ["cab"],
                        "verified_by": "ldap:ldap://dir",
                    }
                ],
            }
        )
        d3_start = NOV + timedelta(days=22)
        windowed = ChangeEvent.model_validate(
            {
                **base,
                "event_id": "chg9",
                "change_id": "CHG9",
                "state": "approved",
                "planned_start": d3_start - timedelta(hours=3),
                "planned_end": d3_start - timedelta(hours=1),
            }
        )
        late = ChangeEvent.model_validate(
            {**base, "event_id": "chg8", "change_id": "CHG8", "state": "approved"}
        )
        for event in (approved, verified, windowed, late):
            _change(store, event)
        # Every deployment ships checkout's build, which its tenant's CI published.
        builds = [build_event("checkout", t, NOV - timedelta(days=1)) for t in ("retail", "bank")]
        view = fold([approved, verified, windowed, *builds])
        _deploy(store, "d1", NOV + timedelta(days=8), view, change_id="CHG1")
        d2_start = NOV + timedelta(days=15)
        record, (unknown,) = _deploy(store, "d2", d2_start, fold([*builds]), change_id="CHG8")
        judged = rejudge_stored(
            record,
            "d2-succeeded",
            {unknown.rule: unknown.alert_id},
            {unknown.rule: 1},
            fold([late]),
            load_policy(None),
            d2_start,
        )
        (resolution,) = judged.resolutions
        _store(store, ddl.ALERTS, alert_row(wire(ALERT, resolution.to_avro())))
        _deploy(store, "d3", d3_start, view, change_id="CHG9")
        _deploy(store, "s1", NOV + timedelta(days=3), view, env="staging")
        _deploy(store, "o1", NOV - timedelta(days=3), view)
        _deploy(store, "b1", NOV + timedelta(days=4), view, tenant="bank")
    return settings


def _run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _pack(settings: Settings, key: Path, out: Path, *more: str) -> Result:
    result = _run(
        "report", "monthly", "--month", "2026-11", "--out", str(out), "--key", str(key),
        "--data-dir", str(settings.data_dir), *more,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return result


def _csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "report.pem"
    assert _run("report", "keygen", "--out", str(path)).exit_code == 0
    return path


def test_pack_lists_the_months_prod_deployments_with_approvers_and_findings(
    ledger: Settings, key: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pack"
    result = _pack(ledger, key, out, "--tenant", "retail")
    assert "3 production deployments, 2 findings" in result.output
    deployments = _csv(out / "deployments.csv")
    assert [(d["deployment_id"], d["status"], d["actor"]) for d in deployments] == [
        ("d1", "succeeded", "d1-deployer"),
        ("d2", "succeeded", "d2-deployer"),
        ("d3", "succeeded", "d3-deployer"),
    ]
    d1, d2, d3 = deployments
    assert (d1["change_id"], d1["change_state_now"], d1["approved_by"]) == (
        "CHG1",
        "approved",
        "carol;bob",
    )
    assert d1["started_at"] == "2026-11-10T10:00:00.000Z"
    assert (d2["findings"], d2["open_findings"]) == ("1", "0")
    assert (d3["findings"], d3["open_findings"]) == ("1", "1")
    assert d1["commits"] == ""  # no change sets in this ledger
    approvals = _csv(out / "approvals.csv")
    assert [(a["change_id"], a["approver"], a["verified_by"]) for a in approvals] == [
        ("CHG1", "carol", "ldap:ldap://dir"),
        ("CHG1", "bob", ""),
    ]
    findings = _csv(out / "findings.csv")
    assert [(f["deployment_id"], f["rule"], f["resolved"]) for f in findings] == [
        ("d2", "change_ticket_unknown", "true"),
        ("d3", "outside_change_window", "false"),
    ]
    assert findings[0]["resolution"] and findings[0]["resolved_at"]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count("<svg") == 3 and "Production deployments per week" in page
    everyone = _pack(ledger, key, tmp_path / "all")
    assert "4 production deployments" in everyone.output  # bank's b1 too


def test_the_same_month_gives_byte_identical_files(
    ledger: Settings, key: Path, tmp_path: Path
) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    _pack(ledger, key, first, "--tenant", "retail")
    _pack(ledger, key, second, "--tenant", "retail")
    for name in (*DATA_FILES, "report.html"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_verify_passes_then_fails_after_one_byte_changed(
    ledger: Settings, key: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pack"
    _pack(ledger, key, out, "--tenant", "retail")
    public = key.with_name(key.name + ".pub")
    ok = _run("report", "verify", str(out), "--public-key", str(public),
              "--data-dir", str(ledger.data_dir))  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert "chain heads" in ok.output and "still in the ledger" in ok.output
    data = bytearray((out / "findings.csv").read_bytes())
    data[-2] ^= 0x01
    (out / "findings.csv").write_bytes(bytes(data))
    failed = _run("report", "verify", str(out), "--data-dir", str(ledger.data_dir))
    assert failed.exit_code == 1
    assert "findings.csv: sha256" in failed.output


def test_a_chain_head_that_is_gone_is_named(ledger: Settings) -> None:
    with LedgerReader.open(ledger) as reader:
        heads = reader.chain_heads("retail")
        assert {h.table for h in heads} >= {ddl.RECORDS, ddl.ALERTS, ddl.CHANGES}
        assert reader.missing_heads(heads) == []
        forged = ChainHead(ddl.ALERTS, "retail", heads[0].retention_class, 1, "f" * 64)
        assert reader.missing_heads([*heads, forged]) == [forged]
