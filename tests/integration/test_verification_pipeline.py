"""Post-deploy verification and configuration drift end to end on real components
(docs/verification.md): deployments and check signals through `POST /v1/events`, Checkly,
Terraform and Argo CD webhooks through `POST /v1/webhooks/<provider>/<tenant>` → Tansu →
sink → chDB; `up`'s verifier deciding verdicts into `deployment_verifications`; the Faust
worker linking drift reports to deployments (`config_drift` alerts); the API and the CLI
reading the verdicts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from shipledger.settings import Settings
from shipledger.up.stack import Stack
from tests.kit import (
    SHA,
    api_client,
    own_settings,
    run_shipledger,
    up_env,
    wait_drained,
    wait_until,
)

pytestmark = pytest.mark.integration

TENANT = "shop"
SECRET = "verify-secret-0123456789"
_FIXTURES = Path(__file__).parent.parent / "fixtures" / "webhooks"
NOW = datetime.now(UTC).replace(microsecond=0)


def ago(minutes: float) -> str:
    return (NOW - timedelta(minutes=minutes)).isoformat()


@pytest.fixture
def api_stack(broker: str, tmp_path: Path) -> Iterator[Stack]:
    settings: Settings = own_settings(tmp_path, sink_batch_ms=100, verification_interval_s=0.5)
    with Stack(settings, bootstrap=broker, log_dir=tmp_path / "logs", api=True) as running:
        yield running


@pytest.fixture
def client(api_stack: Stack) -> Iterator[httpx.Client]:
    """A client of tenant shop with ingest and read scopes; its webhook secrets are set."""
    secrets = dict.fromkeys(("checkly", "terraform", "argocd"), SECRET)
    with api_client(api_stack, TENANT, ("ingest", "read"), "verify-test", secrets) as c:
        yield c


def rows(stack: Stack, sql: str) -> list[Any]:
    assert stack.store is not None
    return list(stack.store.query(sql)[1])


def post_events(client: httpx.Client, events: list[dict[str, Any]]) -> None:
    answer = client.post("/v1/events", json=[{"tenant": TENANT, **e} for e in events])
    assert answer.status_code == 202, answer.text


def succeeded(
    deployment_id: str, service: str, environment: str, at: float
) -> list[dict[str, Any]]:
    """The started and succeeded events of a deployment that succeeded `at` minutes ago."""
    common = {
        "deployment_id": deployment_id,
        "service": service,
        "environment": environment,
        "commit_sha": SHA,
        "actor": "ci-bot",
    }
    return [
        {**common, "event_type": "started", "occurred_at": ago(at + 2)},
        {**common, "event_type": "succeeded", "occurred_at": ago(at)},
    ]


def check(event_id: str, service: str, at: float, outcome: str) -> dict[str, Any]:
    """A synthetic check result posted through the API, `at` minutes ago."""
    return {
        "family": "signal",
        "event_id": event_id,
        "kind": "pipeline_finished",
        "service": service,
        "environment": "production",
        "outcome": outcome,
        "title": f"smoke {event_id}",
        "attributes": {"check.name": f"smoke {service}"},
        "occurred_at": ago(at),
    }


def webhook(
    client: httpx.Client, provider: str, fixture: str, changes: dict[str, Any]
) -> httpx.Response:
    delivery = json.loads((_FIXTURES / provider / f"{fixture}.json").read_text())
    headers = {**delivery["headers"], "X-Shipledger-Token": SECRET}
    body = {**delivery["body"], **changes}
    return client.post(
        f"/v1/webhooks/{provider}/{TENANT}", content=json.dumps(body), headers=headers
    )


def verdict(client: httpx.Client, deployment_id: str) -> dict[str, Any] | None:
    answer = client.get(f"/v1/deployments/{deployment_id}/verification")
    if answer.status_code == 404:
        return None
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def wait_verdict(
    stack: Stack, client: httpx.Client, deployment_id: str, want: str
) -> dict[str, Any]:
    seen: list[dict[str, Any] | None] = [None]

    def done() -> bool:
        seen[0] = verdict(client, deployment_id)
        return seen[0] is not None and seen[0]["verdict"] == want

    wait_until(stack, done, f"{deployment_id} {want} (last: {seen[0]})")
    assert seen[0] is not None
    return seen[0]


def test_verdicts_late_checks_and_drift(
    api_stack: Stack, client: httpx.Client, tmp_path: Path
) -> None:
    # checkout: succeeded 20 min ago, two passing checks in its 15 min prod window (one from
    # Checkly), one after it (ignored). search: no check at all. cart: to be revised late.
    post_events(
        client,
        [
            *succeeded("dep-ok", "checkout", "production", 20),
            *succeeded("dep-none", "search", "staging", 30),
            *succeeded("dep-late", "cart", "production", 25),
            *succeeded("dep-pay", "payments", "production", 40),
            check("c-ok-1", "checkout", 17, "success"),
            check("c-after", "checkout", 2, "failure"),
            check("c-late-1", "cart", 24, "success"),
        ],
    )
    answer = webhook(
        client, "checkly", "recovery", {"started_at": ago(16), "check_result_id": "r-ok-2"}
    )
    assert answer.status_code == 202, answer.text

    ok = wait_verdict(api_stack, client, "dep-ok", "verified")
    assert (ok["score"], ok["check_count"], ok["environment"]) == (1.0, 2, "prod")
    assert [c["source"] for c in ok["evidence"]["checks"]] == ["api", "webhook:checkly"]
    assert ok["window_end"] == (NOW - timedelta(minutes=5)).isoformat()
    none = wait_verdict(api_stack, client, "dep-none", "unverified")
    assert (none["score"], none["evidence"]["checks"]) == (0.0, [])
    wait_verdict(api_stack, client, "dep-late", "verified")

    # A late check: arrives now, after the window closed, its event time inside it.
    answer = webhook(
        client,
        "checkly",
        "failure",
        {"started_at": ago(12), "check_result_id": "r-late-2", "tags": "service:cart,env:prod"},
    )
    assert answer.status_code == 202, answer.text
    late = wait_verdict(api_stack, client, "dep-late", "suspect")
    assert [c["result"] for c in late["evidence"]["checks"]] == ["pass", "fail"]
    history = rows(
        api_stack,
        "SELECT verdict FROM deployment_verifications "
        "WHERE deployment_id = 'dep-late' ORDER BY decided_at",
    )
    assert [v for (v,) in history] == ["verified", "suspect"]

    # dep-pay's verdict needs its record in the ledger: awaited like the others'.
    wait_verdict(api_stack, client, "dep-pay", "unverified")
    listed = client.get("/v1/verifications", params={"verdict": "unverified"}).json()
    assert [v["deployment_id"] for v in listed] == ["dep-none", "dep-pay"]
    assert client.get("/v1/verifications", params={"verdict": "fine"}).status_code == 400

    # The CLI reads them through the running stack's API.
    env = up_env(api_stack.settings.data_dir)
    shown = run_shipledger("verification", "show", "dep-late", "--format", "json", env=env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)[0]["verdict"] == "suspect"
    table = run_shipledger("verification", "list", "--format", "csv", env=env)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].startswith("deployment_id,tenant,service")
    assert {line.split(",")[0] for line in table.stdout.splitlines()[1:]} == {
        "dep-ok",
        "dep-none",
        "dep-late",
        "dep-pay",
    }

    # Drift: a Terraform plan with changes after dep-ok; an Argo CD OutOfSync after dep-pay.
    before = rows(api_stack, "SELECT count() FROM signal_events")[0][0]
    bad = webhook(client, "terraform", "plan_drift", {"resource_changes": [{"change": {}}]})
    assert bad.status_code == 400 and "resource_changes[0].change.actions" in bad.text
    answer = webhook(client, "terraform", "plan_drift", {"timestamp": ago(3)})
    assert answer.status_code == 202, answer.text
    answer = webhook(client, "argocd", "out_of_sync", {"reported_at": ago(1)})
    assert answer.status_code == 202, answer.text
    sql = (
        "SELECT deployment_id, evidence['drift_tool'], evidence['addresses'], message "
        "FROM alerts WHERE rule = 'config_drift' ORDER BY deployment_id"
    )
    wait_until(api_stack, lambda: len(rows(api_stack, sql)) == 2, "two config_drift alerts")
    (ok_dep, tool, addresses, message), (pay_dep, argo, resources, _) = rows(api_stack, sql)
    assert (ok_dep, tool) == ("dep-ok", "terraform")
    assert addresses.split(",") == [
        "aws_security_group.checkout",
        "aws_security_group.checkout",
        "module.cache.aws_elasticache_cluster.this[0]",
    ]
    assert "module.cache.aws_elasticache_cluster.this[0] (delete+create)" in message
    assert (pay_dep, argo) == ("dep-pay", "argocd")
    assert (
        resources == "Deployment/payments-prod/payments-api,ConfigMap/payments-prod/payments-config"
    )
    # The bad plan stored nothing: two drift reports more, no more. The alerts come from the
    # worker, the signal rows from the sink, which may store them after the alerts.
    stored = "SELECT count() FROM signal_events"
    wait_until(api_stack, lambda: rows(api_stack, stored)[0][0] >= before + 2, "the reports")
    assert rows(api_stack, stored)[0][0] == before + 2
    # Drift reports are no checks (dep-ok stays verified) and no anomalies (no suspects: an
    # alert the worker raised of them would be stored once the stack has drained).
    wait_drained(api_stack)
    assert (verdict(client, "dep-ok") or {}).get("verdict") == "verified"
    suspects = "SELECT count() FROM alerts WHERE rule = 'suspect_deployment'"
    assert rows(api_stack, suspects) == [(0,)]
    unknown = client.get("/v1/deployments/dep-nope/verification")
    assert unknown.status_code == 404 and "deployment_id" in unknown.text
