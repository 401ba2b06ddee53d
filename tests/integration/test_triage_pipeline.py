"""Incident triage end to end on the embedded stack (docs/triage.md): deployments and the
catalog through the ingest API, then a PagerDuty v3 `incident.triggered` and an Opsgenie
`Create` (the documented fixtures, signed) through the webhook API; `up`'s triage job ranks
the suspects, posts them as a note to each provider's API (the loopback stand-in checks the
documented shape) and stores them in `incident_suspects`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from shipledger.producers.api.auth import AuthStore
from shipledger.up.stack import Stack
from tests.conftest import GENIE_KEY, StandInReceivers
from tests.kit import api_deployment, own_settings, poll
from tests.webhook_kit import SECRET, RawRequest

pytestmark = pytest.mark.integration

TENANT = "acme"
PD_INCIDENT = "PGR0VU2"
GENIE_ALERT = "60b98b1b-e0f6-4e7d-9a8f-0bd6f0e1de43-1795183200000"
CMDB_EXPORT = Path(__file__).parent.parent / "fixtures" / "cmdb" / "cmdb_ci_service.csv"


@pytest.fixture
def stack(broker: str, tmp_path: Path, receivers: StandInReceivers) -> Iterator[Stack]:
    settings = own_settings(
        tmp_path,
        api_port=0,
        sink_batch_ms=100,
        triage_interval_s=0.2,
        escalation_attempts=3,
        escalation_backoff_s=0.01,
        escalation_backoff_max_s=0.05,
        pagerduty_api_url=receivers.url,
        pagerduty_api_token=SecretStr(receivers.pd_api_token),
        pagerduty_from=receivers.pd_from,
        opsgenie_api_url=receivers.url,
        opsgenie_api_key=SecretStr(GENIE_KEY),
        # The CMDB job runs at start (before any deployment: every CI is never deployed).
        cmdb_export_file=CMDB_EXPORT,
        cmdb_interval_s=0.2,
    )
    auth = AuthStore(settings.resolved_auth_db)
    try:
        for provider in ("pagerduty", "opsgenie"):
            auth.set_webhook_secret(TENANT, provider, SECRET)
    finally:
        auth.close()
    with Stack(settings, bootstrap=broker, log_dir=tmp_path / "logs", api=True) as running:
        yield running


def test_an_incident_gets_its_suspects_stored_and_noted(
    stack: Stack, receivers: StandInReceivers, webhook_request: RawRequest
) -> None:
    assert stack.api is not None and stack.store is not None
    auth = AuthStore(stack.settings.resolved_auth_db)
    try:
        token = auth.create_token(TENANT, ("ingest",), name="triage-test")[0]
    finally:
        auth.close()
    events = [
        {"family": "catalog", "event_id": "cat-checkout", "entity": "service",
         "action": "created", "name": "checkout", "owner_team": "payments",
         "dependencies": ["payments"], "occurred_at": "2026-11-01T00:00:00+00:00"},
        *api_deployment("d-pay", "payments",
                        [("started", "2026-11-20T13:30:00+00:00"),
                         ("failed", "2026-11-20T13:34:00+00:00")]),
        *api_deployment("d-co", "checkout",
                        [("started", "2026-11-20T13:50:00+00:00"),
                         ("succeeded", "2026-11-20T13:55:00+00:00")]),
    ]  # fmt: skip
    with httpx.Client(base_url=stack.api.url, timeout=30) as client:
        answer = client.post(
            "/v1/events",
            json=[{"tenant": TENANT, **e} for e in events],
            headers={"Authorization": f"Bearer {token}"},
        )
        assert answer.status_code == 202, answer.text
        store = stack.store
        poll(
            stack,
            lambda: store.query("SELECT count() FROM deployment_records")[1][0][0],
            lambda n: n >= 4,
        )
        for provider, fixture in (("pagerduty", "incident_triggered"), ("opsgenie", "create")):
            headers, body = webhook_request(provider, fixture)
            answer = client.post(f"/v1/webhooks/{provider}/{TENANT}", content=body, headers=headers)
            assert answer.status_code == 202, (provider, answer.text)
        # A forged delivery is refused and stores nothing.
        headers, body = webhook_request("pagerduty", "incident_triggered")
        forged = {**headers, "X-PagerDuty-Signature": "v1=" + "0" * 64}
        answer = client.post(f"/v1/webhooks/pagerduty/{TENANT}", content=body, headers=forged)
        assert answer.status_code == 401, answer.text

    sql = (
        "SELECT provider, external_id, rank, deployment_id, note_status, parts "
        "FROM incident_suspects ORDER BY provider, rank"
    )
    rows = poll(stack, lambda: store.query(sql)[1], lambda r: len(r) >= 4)
    assert [r[:5] for r in rows] == [
        ("opsgenie", GENIE_ALERT, 1, "d-co", "posted"),
        ("opsgenie", GENIE_ALERT, 2, "d-pay", "posted"),
        ("pagerduty", PD_INCIDENT, 1, "d-co", "posted"),
        ("pagerduty", PD_INCIDENT, 2, "d-pay", "posted"),
    ]
    assert json.loads(rows[0][5])[0]["name"] == "time_proximity"
    [pd_note] = receivers.pd_notes[PD_INCIDENT]
    [genie_note] = receivers.genie_notes[GENIE_ALERT]
    for note in (pd_note, genie_note):
        lines = note.splitlines()
        assert lines[0].startswith("shipledger: recent changes suspected for checkout")
        assert lines[1].startswith("1. d-co (checkout to prod, succeeded")
        assert lines[2].startswith("2. d-pay (payments to prod, failed")
        assert "deployment failed" in lines[2] and "a direct dependency of checkout" in lines[2]
    assert receivers.problems == []
    signals = store.query("SELECT count() FROM signal_events WHERE kind = 'incident_opened'")
    assert signals[1][0][0] == 2
    # The scheduled CMDB reconciliation ran again and again, and stored its export once.
    findings = store.query(
        "SELECT uniqExact(export_sha256), count(), countIf(finding = 'ci_never_deployed') "
        "FROM cmdb_findings"
    )[1]
    assert findings == [(1, 4, 4)]
