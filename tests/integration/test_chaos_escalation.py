"""Chaos and escalation: kill -9 of `shipledger up` while its escalator opens the first tickets
it ever opens.

A real `up` escalates a prod deployment's alert to the stand-in ServiceNow, Jira and webhook
receivers (tests/conftest.py `StandInReceivers`, holding every create until the test lets
them answer, so that the kill lands while the deliveries are in flight: recorded `sending`, no
batch committed yet; a fixed delay closed that window before the sink stored the alert on a
loaded machine). The
kill takes the alert out of the embedded broker; the ledger keeps it, and the journal does
not send its event again (the ledger holds the event, its record and its alert). The next
start must deliver it from the ledger, and in-doubt deliveries must not open a second ticket
(ServiceNow and Jira are asked first; the webhook is sent again with the same `webhook-id`).
Before the fix, the escalator looked at the ledger again only once it had committed a batch,
so an alert in flight at the first crash was never delivered (nor recorded in the ledger).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx
import pytest

from shipledger.sinks.ledger import ddl
from tests.integration.test_chaos import query_rows
from tests.integration.test_chaos_restarts import api_stack
from tests.integration.test_escalation_e2e import StandInReceivers, escalation_settings
from tests.kit import api_event, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

OUTCOMES = "SELECT receiver, status FROM escalations ORDER BY receiver, status"


def _sending(record: Path) -> int:
    """Deliveries the escalator's record (SQLite) says are in flight."""
    if not record.exists():
        return 0
    with sqlite3.connect(f"file:{record}?mode=ro", uri=True) as db:
        (count,) = db.execute("SELECT count() FROM deliveries WHERE state = 'sending'").fetchone()
    return int(count)


def _creates(receivers: StandInReceivers) -> int:
    """Creates (POSTs) the stand-in providers received; before the crash, only creates."""
    return sum(method == "POST" for method, _ in list(receivers.requests))


def _stored(table: Path) -> bool:
    """Whether the embedded ledger's `table` (its directory) has a committed part."""
    return any(p.is_dir() and not p.name.startswith(("tmp", "detached")) for p in table.glob("*_*"))


def test_kill_9_during_the_first_deliveries_delivers_each_once_after_the_restart(
    tmp_path: Path, receivers: StandInReceivers
) -> None:
    data = tmp_path / "data"
    _, env, headers, up = api_stack(data, tmp_path / "up.log")
    escalating = escalation_settings(tmp_path, receivers, data_dir=data)
    secrets = {name: s.get_secret_value() for name, s in escalating.receiver_secrets.items()}
    env |= {
        "SHIPLEDGER_POLICY_FILE": str(escalating.policy_file),
        "SHIPLEDGER_RECEIVER_SECRETS": json.dumps(secrets),
        # The held creates must still be in flight at the kill, however long the sink takes
        # to store the alert: no timeout and retry (which would ask again while they wait).
        "SHIPLEDGER_ESCALATION_TIMEOUT_S": "600",
    }
    receivers.answering.clear()
    deployment = api_event(deployment_id="dep-paged", event_id="dep-paged-started")
    tables = data / "clickhouse" / "data" / "shipledger"
    try:
        up.start()
        url = up.ready()
        answer = httpx.post(
            f"{url}/v1/events", json={"events": [deployment]}, headers=headers, timeout=60
        )
        assert answer.status_code == 202, answer.text
        wait_for(
            lambda: (
                _sending(escalating.resolved_escalation_db) == 3
                and _creates(receivers) == 3
                and all(_stored(tables / table) for table in (ddl.EVENTS, ddl.RECORDS, ddl.ALERTS))
            ),
            "the event, its record and its alert stored, the alert's deliveries in flight",
            timeout_s=120,
        )
        up.kill()
        receivers.answering.set()
        # The providers finish what they received before the restart asks them: a create
        # still in progress when it asks is the documented residual risk (escalator).
        wait_for(
            lambda: (
                (len(receivers.incidents), len(receivers.issues), len(receivers.hooks)) == (1, 1, 1)
            ),
            "the in-flight creates done by the providers",
            timeout_s=60,
        )
        up.start()
        up.ready()
        wait_for(
            lambda: (
                query_rows(env, OUTCOMES) == ["hook,delivered", "jira,delivered", "snow,delivered"]
            ),
            "each delivery recorded once, delivered",
            timeout_s=120,
        )
        tail = up.stop()
    finally:
        receivers.answering.set()
        up.kill_if_running()
    assert "shipledger stopped cleanly." in tail, tail
    assert (len(receivers.incidents), len(receivers.issues), len(receivers.hooks)) == (1, 1, 1)
    assert receivers.problems == []
