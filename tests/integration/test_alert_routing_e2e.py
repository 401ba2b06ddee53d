"""Alert routing end to end on the real stack: events through the ingest API → Tansu →
Faust → an alert and later its resolution → the escalator in `up` → the stand-in PagerDuty,
Alertmanager-webhook and Slack receivers (tests/conftest.py `StandInReceivers`, which checks
each provider's documented payload) → the outcomes in the ledger's `escalations` table,
read back with `shipledger escalate deliveries`.

A prod deployment whose change request is not approved pages once (PagerDuty trigger with
the alert id as dedup_key, Alertmanager firing, a Slack message); the alert replayed pages
no one again; the approval arriving late resolves the alert, which resolves the PagerDuty
incident, sends Alertmanager `resolved` with the same fingerprint and posts RESOLVED to
Slack; the escalations chains still verify with the new columns."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from shipledger.sinks.ledger.audit import verify
from shipledger.up.stack import Stack
from tests.integration.test_escalation_e2e import redeliver_alerts, rows, run_cli, wait_for
from tests.kit import (
    TICKET_DEFAULTS,
    api_change,
    api_token,
    policy_stack,
    post_events,
    wait_drained,
)
from tests.unit.test_alert_routing import StandInReceivers

pytestmark = pytest.mark.integration

TENANT = "retail"
POLICY = (
    "version: route-it-1\n"
    + TICKET_DEFAULTS
    + """\
escalation:
  receivers:
    pd: {{type: pagerduty, url: "{url}", credentials: pd}}
    am: {{type: alertmanager, url: "{url}/alertmanager/am", credentials: am}}
    chat: {{type: slack, url: "{url}", credentials: chat}}
  routes:
    - name: payments-page
      alert_rules: [change_not_approved]
      environments: [production]
      teams: [payments]
      min_severity: medium
      receivers: [pd, am, chat]
"""
)


@pytest.fixture
def stack(broker: str, tmp_path: Path, receivers: StandInReceivers) -> Iterator[Stack]:
    secrets = receivers.secrets
    with policy_stack(
        broker,
        tmp_path,
        POLICY.format(url=receivers.url),
        escalation_attempts=3,
        escalation_backoff_s=0.01,
        escalation_backoff_max_s=0.05,
        receiver_secrets={
            "pd": SecretStr(secrets["pagerduty"]),
            "am": SecretStr(secrets["alertmanager"]),
            "chat": SecretStr(secrets["slack"]),
        },
    ) as running:
        yield running


@pytest.fixture
def post(stack: Stack) -> Callable[..., None]:
    """POSTs objects to the stack's ingest API as tenant retail (202 or the test fails)."""
    return functools.partial(post_events, stack, api_token(stack.settings, TENANT), TENANT)


DEPLOYMENT = {
    "event_id": "dep-late-started",
    "deployment_id": "dep-late",
    "event_type": "started",
    "service": "checkout",
    "environment": "production",
    "commit_sha": "0f" * 20,
    "actor": "ci-bot",
    "team": "payments",
    "change_id": "CHG-L",
    "occurred_at": "2026-11-25T10:00:00+00:00",
}


def deliveries(stack: Stack) -> list[tuple[Any, ...]]:
    return rows(
        stack,
        "SELECT receiver, action, status FROM {db}.escalations ORDER BY action DESC, receiver",
    )


def test_an_alert_pages_once_and_its_resolution_resolves(
    stack: Stack, receivers: StandInReceivers, post: Callable[..., None]
) -> None:
    post(api_change("l-open", "CHG-L", "opened", "2026-11-25T08:00:00+00:00"))
    wait_for(
        stack, "the change request", lambda: bool(rows(stack, "SELECT 1 FROM {db}.change_events"))
    )
    post(DEPLOYMENT)
    wait_for(stack, "three triggers", lambda: len(deliveries(stack)) == 3)
    assert deliveries(stack) == [
        ("am", "trigger", "delivered"),
        ("chat", "trigger", "delivered"),
        ("pd", "trigger", "delivered"),
    ]
    # The alert and its escalations reach the ledger by two topics, in no promised order.
    alert_sql = "SELECT alert_id FROM {db}.alerts WHERE kind = 'alert'"
    wait_for(stack, "the alert stored", lambda: len(rows(stack, alert_sql)) == 1)
    ((alert_id,),) = rows(stack, alert_sql)
    assert [(e["event_action"], e["dedup_key"]) for e in receivers.pd_events] == [
        ("trigger", alert_id)
    ]

    # The alert again (a redelivery): nobody is paged twice.
    redeliver_alerts(stack, skipped=3)
    assert len(receivers.pd_events) == 1 and len(receivers.am) == 1 and len(receivers.slack) == 1

    # The approval (09:45, before the start) arrives late: the alert is resolved, and so is
    # the page.
    post(api_change("l-approve", "CHG-L", "approved", "2026-11-25T09:45:00+00:00"))
    wait_for(stack, "three resolves", lambda: len(deliveries(stack)) == 6)
    assert receivers.problems == []
    assert [(e["event_action"], e["dedup_key"]) for e in receivers.pd_events] == [
        ("trigger", alert_id),
        ("resolve", alert_id),
    ]
    assert receivers.incidents_open == {alert_id: False}
    firing, resolved = receivers.am
    assert (firing["status"], resolved["status"]) == ("firing", "resolved")
    assert firing["alerts"][0]["fingerprint"] == resolved["alerts"][0]["fingerprint"]
    assert receivers.slack[1]["text"].startswith("RESOLVED ")

    # The status per receiver, read back as an SRE would.
    listed = json.loads(
        run_cli(stack, "escalate", "deliveries", "--action", "resolve", "--format", "json").stdout
    )
    assert {(r["receiver"], r["status"], r["resolved_alert_id"]) for r in listed} == {
        ("pd", "delivered", alert_id),
        ("am", "delivered", alert_id),
        ("chat", "delivered", alert_id),
    }
    summary = json.loads(
        run_cli(stack, "escalate", "deliveries", "--by-receiver", "--format", "json").stdout
    )
    assert [(r["receiver"], r["delivered"], r["resolved"]) for r in summary] == [
        ("am", 2, 1),
        ("chat", 2, 1),
        ("pd", 2, 1),
    ]
    assert stack.store is not None
    # The resolution and the record version it came with may still be on their way to the
    # ledger: a flush caught between its rows and its chain heads would read as an insert.
    wait_drained(stack)
    report = verify(stack.store)
    assert report.clean, report.text()
