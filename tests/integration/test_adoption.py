"""Adoption on the embedded stack (docs/reports.md, Adoption): catalog entries and deployments
of several teams through the ingest API, a CMDB export reconciled by `up`'s job, then
`GET /v1/reports/adoption` and `shipledger report adoption` (through that API) compared with
the values worked out by hand below: who emits, who is silent, who never deployed, and the
recent deployments' missing emitter metadata, digests and tickets per team."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from shipledger.cli import cli
from shipledger.producers.api.auth import AuthStore
from shipledger.up.stack import Stack
from tests.kit import own_settings, poll, printed

pytestmark = pytest.mark.integration

TENANT = "acme"
CMDB_EXPORT = Path(__file__).parent.parent / "fixtures" / "cmdb" / "cmdb_ci_service.csv"
NOW = datetime.now(UTC)
EMITTED = {
    "pipeline_provider": "github_actions",
    "pipeline_run_url": "https://ci.example.org/acme/runs/1",
    "artifact_digest": "sha256:" + "d" * 64,
    "change_id": "CHG0001",
}


@pytest.fixture
def stack(broker: str, tmp_path: Path) -> Iterator[Stack]:
    # The CMDB job runs at start, before any deployment: every CI of the export (checkout,
    # payments, db, legacy-fax; old-portal is retired) is stored as never deployed, for the
    # stack's own tenant.
    settings = own_settings(
        tmp_path,
        api_port=0,
        sink_batch_ms=100,
        tenant=TENANT,
        cmdb_export_file=CMDB_EXPORT,
        cmdb_interval_s=60,
    )
    with Stack(settings, bootstrap=broker, log_dir=tmp_path / "logs", api=True) as running:
        yield running


def _deployment(
    dep: str, service: str, team: str, days_ago: float, env: str = "production", **kw: Any
) -> list[dict[str, Any]]:
    start = NOW - timedelta(days=days_ago)
    return [
        {
            "event_id": f"{dep}-{stage}",
            "deployment_id": dep,
            "event_type": stage,
            "service": service,
            "environment": env,
            "commit_sha": dep.encode().hex().ljust(40, "0")[:40],
            "actor": "ci-bot",
            "team": team,
            "occurred_at": (start + timedelta(minutes=minutes)).isoformat(),
            **kw,
        }
        for stage, minutes in (("started", 0), ("succeeded", 5))
    ]


def _without(fields: dict[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in fields.items() if k != name}


def _catalog(name: str, team: str, action: str = "created") -> dict[str, Any]:
    return {
        "family": "catalog",
        "event_id": f"cat-{name}",
        "entity": "service",
        "action": action,
        "name": name,
        "owner_team": team,
        "occurred_at": (NOW - timedelta(days=90)).isoformat(),
    }


def test_adoption_by_team_environment_and_service(stack: Stack) -> None:
    """By hand, --days 30:
    checkout (payments, catalog, in the CMDB): d1 prod 2 days ago with everything the emitter
      sets, a digest and a ticket; d2 prod 1 day ago by hand (no pipeline, digest, ticket);
      d3 staging 3 days ago, complete. Emitting. prod: 2 deployments, 1 without emitter
      metadata, digest and ticket rates 0.5; stage: 1, all there; the team: 3, 1, 1/3, 1/3.
    cart (basket, catalog): c1 prod 40 days ago: silent (laggard), no recent deployment.
    search (search, deployments only): s1 prod 5 days ago, no digest: emitting, digest rate 1.
    fax-gateway (platform, catalog): never deployed. retired (catalog, removed): left out.
    payments, db, legacy-fax (the CMDB's alone, no team): never deployed.
    """
    assert stack.api is not None and stack.store is not None
    auth = AuthStore(stack.settings.resolved_auth_db)
    try:
        ingest = auth.create_token(TENANT, ("ingest",), name="adoption-ingest")[0]
        read = auth.create_token(TENANT, ("read",), name="adoption-read")[0]
        other = auth.create_token("globex", ("read",), name="adoption-other")[0]
    finally:
        auth.close()
    events = [
        _catalog("checkout", "payments"),
        _catalog("cart", "basket"),
        _catalog("fax-gateway", "platform"),
        _catalog("retired", "platform", action="removed"),
        *_deployment("d1", "checkout", "payments", 2, **EMITTED),
        *_deployment("d2", "checkout", "payments", 1),
        *_deployment("d3", "checkout", "payments", 3, env="staging", **EMITTED),
        *_deployment("c1", "cart", "basket", 40, **EMITTED),
        *_deployment("s1", "search", "search", 5, **_without(EMITTED, "artifact_digest")),
    ]
    store = stack.store
    with httpx.Client(base_url=stack.api.url, timeout=30) as client:
        answer = client.post(
            "/v1/events",
            json=[
                {"tenant": TENANT, **{k: v for k, v in e.items() if v is not None}} for e in events
            ],
            headers={"Authorization": f"Bearer {ingest}"},
        )
        assert answer.status_code == 202, answer.text
        poll(
            stack,
            lambda: store.query(
                "SELECT (SELECT count() FROM deployments), (SELECT count() FROM catalog_events),"
                " (SELECT count() FROM cmdb_findings)"
            )[1][0],
            lambda counts: counts == (5, 4, 4),
            timeout_s=240,
        )
        mine = client.get(
            "/v1/reports/adoption",
            params={"days": 30},
            headers={"Authorization": f"Bearer {read}"},
        )
        theirs = client.get("/v1/reports/adoption", headers={"Authorization": f"Bearer {other}"})
        bad = client.get(
            "/v1/reports/adoption",
            params={"days": 0},
            headers={"Authorization": f"Bearer {read}"},
        )
    assert mine.status_code == 200, mine.text
    report = mine.json()
    services = [
        (s["service"], s["team"], s["status"], s["days_silent"], s["environments"], s["in_catalog"],
         s["in_cmdb"])
        for s in report["services"]
    ]  # fmt: skip
    assert services == [
        ("db", "", "never", None, "", False, True),
        ("fax-gateway", "platform", "never", None, "", True, None),
        ("legacy-fax", "", "never", None, "", False, True),
        ("payments", "", "never", None, "", False, True),
        ("cart", "basket", "silent", 40, "prod", True, None),
        ("checkout", "payments", "emitting", 1, "prod stage", True, True),
        ("search", "search", "emitting", 5, "prod", False, None),
    ]
    teams = [tuple(r[c] for c in report["team_columns"][1:]) for r in report["teams"]]
    assert teams == [
        # team, environment, services, emitting, silent, never, coverage, deployments,
        # no_emitter_metadata, missing_digest_rate, missing_ticket_rate
        ("", "*", 3, 0, 0, 3, 0.0, 0, 0, None, None),
        ("basket", "*", 1, 0, 1, 0, 0.0, 0, 0, None, None),
        ("basket", "prod", 1, 0, 1, None, 0.0, 0, 0, None, None),
        ("payments", "*", 1, 1, 0, 0, 1.0, 3, 1, 0.3333, 0.3333),
        ("payments", "prod", 1, 1, 0, None, 1.0, 2, 1, 0.5, 0.5),
        ("payments", "stage", 1, 1, 0, None, 1.0, 1, 0, 0.0, 0.0),
        ("platform", "*", 1, 0, 0, 1, 0.0, 0, 0, None, None),
        ("search", "*", 1, 1, 0, 0, 1.0, 1, 0, 1.0, 0.0),
        ("search", "prod", 1, 1, 0, None, 1.0, 1, 0, 1.0, 0.0),
    ]
    assert theirs.json()["services"] == []
    assert bad.status_code == 400 and "days" in bad.text

    # The command goes through the API of the running stack (it owns the chDB data dir).
    env = {"SHIPLEDGER_DATA_DIR": str(stack.settings.data_dir)}
    args = ["report", "adoption", "--tenant", TENANT, "--days", "30"]
    as_json = CliRunner().invoke(cli, [*args, "--format", "json"], env=env)
    as_csv = CliRunner().invoke(cli, [*args, "--section", "services", "--format", "csv"], env=env)
    table = CliRunner().invoke(cli, args, env=env)
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(printed(as_json.output)) == {
        "teams": report["teams"],
        "services": report["services"],
    }
    assert as_csv.exit_code == 0, as_csv.output
    lines = printed(as_csv.output).splitlines()
    assert (
        lines[0]
        == "tenant,service,team,status,last_seen,days_silent,environments,in_catalog,in_cmdb"
    )
    assert lines[1] == "acme,db,,never,,,,False,True"
    assert table.exit_code == 0, table.output
    assert "fax-gateway" in table.output and "coverage" in table.output
