"""Every ledger view on real chDB: rows of each table, built the way the pipeline builds them
(models -> Avro -> row builders -> LedgerStore.insert), then each view queried."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shipledger.processors.enrichment import Enrichment, fold
from shipledger.processors.late_changes import rejudge_stored
from shipledger.processors.step import process
from shipledger.schemas.families import family_of
from shipledger.schemas.family_models import APPROVAL_SOURCE, ChangeEvent
from shipledger.schemas.models import Alert, DeploymentEvent, DeploymentRecord
from shipledger.schemas.policy import load_policy
from shipledger.settings import Settings
from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.sinks.rows import KafkaMeta, Row, alert_row, avro_row, event_row, record_row
from shipledger.sinks.writer import LedgerWriter
from tests.kit import deployment_event, wire, without_digest_rules

pytestmark = pytest.mark.integration

SHA_A = "a" * 40
SHA_B = "b" * 40
DIGEST = "sha256:" + "d" * 64
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
META = KafkaMeta("raw", 0, 0, None)
RECORD = "io.shipledger.v1.DeploymentRecord"
ALERT = "io.shipledger.v1.Alert"


def _store(store: LedgerStore, table: str, row: Row) -> None:
    """Store one row the way the sink does (chain and retention columns stamped)."""
    LedgerWriter(store, load_policy(None)).write_rows({table: [row]})


def _deploy(
    store: LedgerStore, dep: str, service: str, env: str, version: str, at: datetime, **kw: Any
) -> None:
    """A started + succeeded deployment, processed and stored like the pipeline does."""
    policy = without_digest_rules(load_policy(None))
    previous: DeploymentRecord | None = None
    for i, stage in enumerate(("started", "succeeded")):
        event = DeploymentEvent.model_validate(
            {
                "event_id": f"{dep}-{stage}",
                "deployment_id": dep,
                "event_type": stage,
                "service": service,
                "environment": env,
                "commit_sha": SHA_B if version == "1.1" else SHA_A,
                "actor": "alice",
                "tenant": "retail",
                "version": version,
                "artifact_digest": DIGEST,
                "occurred_at": at + timedelta(minutes=i),
                **kw,
            }
        )
        previous = process(event, previous, policy, now=at).record
        wire_event = wire("io.shipledger.v1.DeploymentEvent", event.to_avro())
        _store(store, ddl.EVENTS, event_row(wire_event, META))
        wire_record = wire("io.shipledger.v1.DeploymentRecord", previous.to_avro())
        _store(store, ddl.RECORDS, record_row(wire_record))


def _family(store: LedgerStore, name: str, table: str, payload: dict[str, Any]) -> None:
    family = family_of(name)
    event = family.model.model_validate({"tenant": "retail", **payload})
    _store(store, table, avro_row(ddl.tables()[table], wire(family.schema, event.to_avro())))


@pytest.fixture
def store(settings: Settings) -> Iterator[LedgerStore]:
    with LedgerStore.open(settings) as s:
        s.ensure_schema()
        _deploy(s, "d1", "checkout", "production", "1.0", T0)
        _deploy(s, "d2", "checkout", "staging", "1.1", T0 + timedelta(days=1))
        _deploy(s, "d3", "checkout", "prod", "1.1", T0 + timedelta(days=2), change_id="CHG1")
        _deploy(s, "d4", "cart", "prod-eu-west-1", "7", T0, team="basket", approvers=["eve"])
        for state, approvals in (("opened", []), ("approved", [("bob", "approved")])):
            _family(
                s,
                "change",
                ddl.CHANGES,
                {
                    "event_id": f"chg-{state}",
                    "change_id": "CHG1",
                    "system": "servicenow",
                    "state": state,
                    "occurred_at": T0 + timedelta(hours=1 if state == "opened" else 2),
                    "approvals": [
                        {"approver": who, "decision": how, "decided_at": T0}
                        for who, how in approvals
                    ],
                },
            )
        # An approval recorded by POST /v1/approvals: it restates the state its approver
        # saw (opened), adds its approval, and is not the request's latest revision.
        _family(
            s,
            "change",
            ddl.CHANGES,
            {
                "event_id": "chg-approval",
                "change_id": "CHG1",
                "system": "servicenow",
                "state": "opened",
                "source": APPROVAL_SOURCE,
                "occurred_at": T0 + timedelta(hours=3),
                "approvals": [
                    {
                        "approver": "carol",
                        "decision": "approved",
                        "decided_at": T0 + timedelta(hours=3),
                        "groups": ["cab"],
                        "verified_by": "ldap:ldap://dir",
                    }
                ],
            },
        )
        _family(
            s,
            "source",
            ddl.SOURCE,
            {
                "kind": "push",
                "repository": "acme/checkout",
                "ref": "main",
                "commit_sha": SHA_B,
                "commit_shas": [SHA_A, SHA_B],
                "author": "alice",
                "occurred_at": T0 - timedelta(hours=2),
            },
        )
        _family(
            s,
            "source",
            ddl.SOURCE,
            {
                "kind": "pull_request_merged",
                "repository": "acme/checkout",
                "commit_sha": SHA_B,
                "pull_request_number": 42,
                "pull_request_title": "Faster checkout",
                "merged_by": "bob",
                "occurred_at": T0 - timedelta(hours=1),
            },
        )
        for i in range(2):  # published twice: the view keeps one per digest
            _family(
                s,
                "artifact",
                ddl.ARTIFACTS,
                {
                    "artifact_name": "ghcr.io/acme/checkout",
                    "version": "1.1",
                    "digest": DIGEST,
                    "commit_sha": SHA_B,
                    "occurred_at": T0 + timedelta(minutes=i),
                },
            )
        _family(s, "signal", ddl.SIGNALS, {"kind": "incident_opened", "service": "checkout"})
        _family(
            s,
            "catalog",
            ddl.CATALOG,
            {"entity": "service", "action": "created", "name": "checkout", "owner_team": "pay"},
        )
        _family(
            s,
            "catalog",
            ddl.CATALOG,
            {"entity": "environment", "action": "created", "name": "prod"},
        )
        yield s


def _rows(store: LedgerStore, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    return store.query(sql, params or None)[1]


def test_every_view_answers_on_real_rows(store: LedgerStore) -> None:
    assert _rows(
        store,
        "SELECT service, version, commit_sha, artifact_digest, environments, deployments "
        "FROM releases ORDER BY service, version",
    ) == [
        ("cart", "7", SHA_A, DIGEST, ["prod"], 1),
        ("checkout", "1.0", SHA_A, DIGEST, ["prod"], 1),
        ("checkout", "1.1", SHA_B, DIGEST, ["prod", "stage"], 2),
    ]
    assert _rows(
        store,
        "SELECT change_id, state, arrayMap(a -> (a.approver, a.decision), approvals) "
        "FROM change_requests",
    ) == [("CHG1", "approved", [("bob", "approved"), ("carol", "approved")])]
    assert _rows(
        store,
        "SELECT deployment_id, change_found, change_state, length(change_approvals), "
        "deployment_approvers FROM deployment_changes ORDER BY deployment_id",
    ) == [
        ("d1", False, "", 0, []),
        ("d2", False, "", 0, []),
        ("d3", True, "approved", 2, []),
        ("d4", False, "", 0, ["eve"]),
    ]
    assert _rows(
        store, "SELECT service, owner_team, in_catalog, deployments FROM services ORDER BY service"
    ) == [("cart", "basket", False, 1), ("checkout", "pay", True, 3)]
    assert _rows(
        store,
        "SELECT environment, in_catalog, regions, services FROM environments ORDER BY environment",
    ) == [("prod", True, ["eu-west-1"], 2), ("stage", False, [], 1)]
    assert _rows(store, "SELECT sha, author, refs, events FROM commits ORDER BY sha") == [
        (SHA_A, "alice", ["main"], 1),
        (SHA_B, "alice", ["main"], 2),
    ]
    assert _rows(store, "SELECT number, title, merged_by, merge_commit_sha FROM pull_requests") == [
        (42, "Faster checkout", "bob", SHA_B)
    ]
    assert _rows(store, "SELECT artifact_name, version, digest, published_at FROM artifacts") == [
        ("ghcr.io/acme/checkout", "1.1", DIGEST, T0 + timedelta(minutes=1))
    ]
    assert store.count(ddl.SIGNALS) == 1


def test_running_at_answers_what_ran_where_at_a_time(store: LedgerStore) -> None:
    sql = (
        "SELECT service, environment, region, deployment_id, version "
        "FROM running_at(at = {at:String}) ORDER BY service, environment"
    )
    before = _rows(store, sql, at="2026-11-23 08:00:00")
    assert before == []
    day_two = _rows(store, sql, at="2026-11-24 12:00:00")
    assert day_two == [
        ("cart", "prod", "eu-west-1", "d4", "7"),
        ("checkout", "prod", None, "d1", "1.0"),
        ("checkout", "stage", None, "d2", "1.1"),
    ]
    later = _rows(store, sql, at="2026-11-26 00:00:00")
    assert ("checkout", "prod", None, "d3", "1.1") in later


def test_open_alerts_and_change_window_discrepancies(store: LedgerStore) -> None:
    """A deployment an hour past its request's window (alerted), and one whose unknown-ticket
    alert a late change request resolved: only the first alert holds."""
    policy = without_digest_rules(load_policy(None))
    start = T0 + timedelta(days=2, hours=1)  # Wednesday 10:00 UTC: in the weekly window
    request = {"tenant": "retail", "system": "servicenow", "state": "approved", "occurred_at": T0}
    view = fold(
        [
            ChangeEvent.model_validate(
                {
                    **request,
                    "event_id": "w1",
                    "change_id": "CHG9",
                    "planned_start": start - timedelta(hours=3),
                    "planned_end": start - timedelta(hours=1),
                }
            ),
            ChangeEvent.model_validate({**request, "event_id": "k1", "change_id": "CHG8"}),
        ]
    )

    def deployed(
        dep: str, change_id: str, seen: Enrichment
    ) -> tuple[DeploymentRecord, list[Alert]]:
        event = deployment_event(
            event_id=f"{dep}-started",
            deployment_id=dep,
            service="cart",
            tenant="retail",
            commit_sha=SHA_A,
            change_id=change_id,
            occurred_at=start,
        )
        result = process(event, None, policy, now=start, view=seen)
        _store(store, ddl.RECORDS, record_row(wire(RECORD, result.record.to_avro())))
        for alert in result.alerts:
            _store(store, ddl.ALERTS, alert_row(wire(ALERT, alert.to_avro())))
        return result.record, result.alerts

    late, (unknown,) = deployed("d5", "CHG8", Enrichment())
    judged = rejudge_stored(
        late, "d5-started", {unknown.rule: unknown.alert_id}, {unknown.rule: 1}, view, policy, start
    )
    (resolution,) = judged.resolutions
    _store(store, ddl.ALERTS, alert_row(wire(ALERT, resolution.to_avro())))
    assert judged.record is not None
    _store(store, ddl.RECORDS, record_row(wire(RECORD, judged.record.to_avro())))
    deployed("d6", "CHG9", view)
    assert _rows(store, "SELECT deployment_id, rule, kind FROM open_alerts") == [
        ("d6", "outside_change_window", "alert")
    ]
    assert _rows(store, "SELECT resolves FROM alerts WHERE kind = 'resolution'") == [
        (unknown.alert_id,)
    ]
    assert _rows(
        store,
        "SELECT deployment_id, change_id, change_state, outside_window_s, direction, alerted "
        "FROM change_window_discrepancies",
    ) == [("d6", "CHG9", "approved", 3600, "late", True)]
    assert _rows(
        store, "SELECT change_state, alert_rules FROM deployments WHERE deployment_id = 'd5'"
    ) == [("approved", [])]


def test_reopening_keeps_the_schema(store: LedgerStore) -> None:
    """ensure_schema compares ClickHouse's column types with ours: the named tuples match."""
    store.ensure_schema()


def test_every_example_query_in_the_model_doc_runs(store: LedgerStore) -> None:
    """docs/model.md's analyst examples are real queries against these tables and views."""
    doc = Path(__file__).parents[2] / "docs" / "model.md"
    examples = re.findall(r"`(SELECT [^`]+)`", doc.read_text(encoding="utf-8"))
    assert len(examples) >= 20
    for sql in examples:
        store.query(sql.replace("sha256:…", DIGEST))
