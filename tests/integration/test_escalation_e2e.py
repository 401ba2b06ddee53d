"""Escalation end to end on the real stack: `shipledger emit` → Tansu → Faust → alert → the
escalator in `up` → the stand-in ServiceNow, Jira and webhook receivers (tests/conftest.py
`StandInReceivers`) → the outcome in the ledger's `escalations` table (chDB).

One deployment opens one ticket per receiver; the same alert replayed opens none; a receiver
failing twice is retried and delivers; a receiver failing every time dead-letters the alert
(the DLQ, the `escalations` row says why), and `shipledger dlq replay` of that letter
delivers it once the receiver is back, without a second ticket anywhere else."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import pytest
from confluent_kafka import Consumer, TopicPartition
from pydantic import SecretStr

from shipledger import metrics as m
from shipledger.kafka import KafkaProducer
from shipledger.schemas.policy import load_policy
from shipledger.settings import Settings
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.sinks.rows import alert_row
from shipledger.sinks.writer import LedgerWriter
from shipledger.up.stack import Stack
from tests.kit import TICKET_DEFAULTS, own_settings, sample_alert

pytestmark = pytest.mark.integration

SHIPLEDGER = str(Path(sys.executable).parent / "shipledger")
POLICY = (
    "version: esc-it-1\n"
    + TICKET_DEFAULTS
    + """\
escalation:
  receivers:
    snow: {{type: servicenow, url: "{url}", credentials: snow}}
    jira: {{type: jira, url: "{url}", credentials: jira, project: OPS}}
    hook: {{type: webhook, url: "{url}/hooks/audit", credentials: hook}}
  routes:
    - name: prod-tickets
      alert_rules: [missing_change_ticket]
      environments: [production]
      receivers: [snow, jira, hook]
"""
)


class StandInReceivers(Protocol):
    """The `receivers` fixture (tests/conftest.py `StandInReceivers`)."""

    url: str
    secrets: dict[str, str]
    incidents: list[dict[str, Any]]
    issues: list[dict[str, Any]]
    hooks: dict[str, dict[str, Any]]
    hook_requests: int
    #: (method, path) of every request, in arrival order.
    requests: list[tuple[str, str]]
    problems: list[str]
    fail: dict[str, list[int]]
    always: dict[str, int]
    slow_s: float
    answering: threading.Event


def escalation_settings(tmp_path: Path, receivers: StandInReceivers, **overrides: Any) -> Settings:
    """A test stack's settings escalating to `receivers` (POLICY, their secrets)."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(url=receivers.url))
    secrets = receivers.secrets
    return own_settings(
        tmp_path,
        policy_file=policy,
        sink_batch_ms=100,
        receiver_secrets={
            "snow": SecretStr(secrets["servicenow"]),
            "jira": SecretStr(secrets["jira"]),
            "hook": SecretStr(secrets["webhook"]),
        },
        **overrides,
    )


@pytest.fixture
def stack(broker: str, tmp_path: Path, receivers: StandInReceivers) -> Iterator[Stack]:
    settings = escalation_settings(
        tmp_path,
        receivers,
        escalation_attempts=3,
        escalation_backoff_s=0.01,
        escalation_backoff_max_s=0.05,
        escalation_timeout_s=5.0,
    )
    with Stack(settings, bootstrap=broker, log_dir=tmp_path / "logs") as running:
        yield running


def run_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPLEDGER_")}
    for ci in ("GITHUB_ACTIONS", "GITLAB_CI", "JENKINS_URL"):
        env.pop(ci, None)
    env.update(stack.settings.to_env())
    env.update({"SHIPLEDGER_BOOTSTRAP_SERVERS": stack.bootstrap, "SHIPLEDGER_STRICT": "true"})
    done = subprocess.run([SHIPLEDGER, *args], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr + done.stdout
    return done


def deploy(stack: Stack, deployment_id: str) -> None:
    """A prod deployment without a change ticket: one missing_change_ticket alert."""
    run_cli(
        stack,
        "emit", "started", "--deployment-id", deployment_id, "--service", "checkout",
        "--environment", "production", "--commit-sha", "0f" * 20, "--actor", "alice",
        "--tenant", "retail", "--occurred-at", datetime.now(UTC).isoformat(),
    )  # fmt: skip


def rows(stack: Stack, sql: str) -> list[tuple[Any, ...]]:
    assert stack.store is not None
    _, found = stack.store.query(sql.replace("{db}", stack.settings.clickhouse_database))
    return [tuple(row) for row in found]


def wait_for(stack: Stack, what: str, done: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        stack.check()
        if time.monotonic() > deadline:
            for log in sorted((stack.settings.data_dir.parent / "logs").glob("*.log")):
                print(f"--- {log.name}\n" + "\n".join(log.read_text().splitlines()[-30:]))
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def outcomes(stack: Stack, deployment_id: str) -> dict[str, tuple[Any, ...]]:
    """receiver -> (status, attempts, ticket_key, reason) of the deployment's latest rows."""
    found = rows(
        stack,
        "SELECT receiver, status, attempts, ticket_key, reason FROM {db}.escalations "
        f"WHERE deployment_id = '{deployment_id}' ORDER BY occurred_at",
    )
    return {row[0]: row[1:] for row in found}


def replay_alerts(stack: Stack) -> int:
    """Produce every message of the alerts topic again, as a redelivery would."""
    topic = stack.topics.alerts
    consumer = Consumer(
        {"bootstrap.servers": stack.bootstrap, "group.id": "replay", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(2)])
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p))[1] for p in range(2)}
    producer = KafkaProducer(stack.settings.kafka_producer(stack.bootstrap))
    copied = 0
    try:
        while sum(ends.values()) > 0:
            msg = consumer.poll(1.0)
            if msg is None or msg.error() is not None:
                continue
            producer.produce(topic, msg.value(), msg.key(), partition=msg.partition() or 0)
            copied += 1
            ends[msg.partition() or 0] -= 1
        producer.flush_or_raise(10)
    finally:
        consumer.close()
    return copied


def redeliver_alerts(stack: Stack, skipped: int) -> None:
    """Every alert again (`replay_alerts`), then a wait until the escalator has skipped
    `skipped` deliveries in all as made already."""
    assert replay_alerts(stack) >= 1
    wait_for(
        stack,
        "the replay to be skipped",
        lambda: (
            stack.escalator is not None
            and stack.escalator.metrics.total(m.ESCALATION_SKIPPED) >= skipped
        ),
    )


def test_alerts_become_one_ticket_each_whatever_happens(
    stack: Stack, receivers: StandInReceivers
) -> None:
    assert stack.escalator is not None
    # One deployment: one ticket at each receiver, its key in the ledger beside the alert.
    deploy(stack, "dep-1")
    wait_for(stack, "three deliveries", lambda: len(outcomes(stack, "dep-1")) == 3)
    assert receivers.problems == []
    assert outcomes(stack, "dep-1") == {
        "snow": ("delivered", 1, "INC0010001", None),
        "jira": ("delivered", 1, "OPS-1", None),
        "hook": ("delivered", 1, "HOOK-1", None),
    }
    # The alert and its escalations reach the ledger by two topics, in no promised order.
    alert_sql = "SELECT alert_id FROM {db}.alerts WHERE deployment_id = 'dep-1'"
    wait_for(stack, "dep-1's alert stored", lambda: len(rows(stack, alert_sql)) == 1)
    ((alert_id,),) = rows(stack, alert_sql)
    assert receivers.incidents[0]["body"]["correlation_id"] == alert_id
    joined = rows(
        stack,
        "SELECT a.rule, e.receiver, e.ticket_key FROM {db}.alerts AS a "
        "JOIN {db}.escalations AS e USING (tenant, alert_id) ORDER BY e.receiver",
    )
    assert joined == [
        ("missing_change_ticket", "hook", "HOOK-1"),
        ("missing_change_ticket", "jira", "OPS-1"),
        ("missing_change_ticket", "snow", "INC0010001"),
    ]

    # The same alert again: no second ticket anywhere.
    redeliver_alerts(stack, skipped=3)
    assert (len(receivers.incidents), len(receivers.issues), receivers.hook_requests) == (1, 1, 1)

    # ServiceNow fails twice: retried with backoff, delivered at the third attempt.
    receivers.fail["/api/now/table/incident"] = [503, 503]
    deploy(stack, "dep-2")
    wait_for(stack, "dep-2's deliveries", lambda: len(outcomes(stack, "dep-2")) == 3)
    assert outcomes(stack, "dep-2")["snow"] == ("delivered", 3, "INC0010002", None)
    assert len(receivers.incidents) == 2

    # Jira fails every time: dead-lettered after 3 attempts, the others delivered.
    receivers.always["/rest/api/3/"] = 500
    deploy(stack, "dep-3")
    wait_for(stack, "dep-3's deliveries", lambda: len(outcomes(stack, "dep-3")) == 3)
    status, attempts, key, reason = outcomes(stack, "dep-3")["jira"]
    assert (status, attempts, key) == ("dead_lettered", 3, None)
    assert "HTTP 500" in reason
    wait_for(
        stack,
        "the dead letter in the ledger",
        lambda: bool(rows(stack, "SELECT 1 FROM {db}.dead_letters WHERE stage = 'escalation'")),
    )
    ((source, letter_reason),) = rows(
        stack, "SELECT source_topic, reason FROM {db}.dead_letters WHERE stage = 'escalation'"
    )
    assert source == stack.topics.alerts and letter_reason.startswith("escalation failed: jira")

    # Jira is back: replaying the letter delivers it there, and only there.
    receivers.always.clear()
    run_cli(stack, "dlq", "replay", "--all", "--stage", "escalation")
    wait_for(
        stack,
        "the replayed delivery",
        lambda: outcomes(stack, "dep-3")["jira"][0] == "delivered",
    )
    assert outcomes(stack, "dep-3")["jira"][2] == "OPS-3"
    assert (len(receivers.incidents), len(receivers.issues), len(receivers.hooks)) == (3, 3, 3)
    assert receivers.problems == []


def test_stopping_up_delivers_pending_alerts_first(
    tmp_path: Path, receivers: StandInReceivers
) -> None:
    """On the embedded broker (memory), `stop()` drains: an alert not yet escalated (the
    receivers are slow) is delivered, and its outcome stored, before the broker goes."""
    receivers.slow_s = 3.0
    settings = escalation_settings(tmp_path, receivers)
    with Stack(settings, log_dir=tmp_path / "logs") as stack:
        deploy(stack, "dep-drain")
    assert stack.abandoned == {}
    assert (len(receivers.incidents), len(receivers.issues), len(receivers.hooks)) == (1, 1, 1)
    with LedgerStore.open(settings) as store:
        _, found = store.query("SELECT receiver, status FROM escalations ORDER BY receiver")
    assert [tuple(row) for row in found] == [
        ("hook", "delivered"),
        ("jira", "delivered"),
        ("snow", "delivered"),
    ]


def test_a_restart_delivers_alerts_the_embedded_broker_forgot(
    tmp_path: Path, receivers: StandInReceivers
) -> None:
    """`up` killed: its broker forgets the alerts the escalator had not read, the ledger keeps
    them. The next start looks at the ledger's recent alerts again and delivers the ones
    not escalated, and only those."""
    settings = escalation_settings(tmp_path, receivers)
    with Stack(settings, log_dir=tmp_path / "logs") as stack:
        deploy(stack, "dep-seen")
        wait_for(stack, "dep-seen's tickets", lambda: len(outcomes(stack, "dep-seen")) == 3)
    # What a kill -9 leaves: an alert in the ledger that the escalator never read.
    lost = sample_alert(
        alert_id="lost-alert",
        deployment_id="dep-lost",
        tenant="retail",
        occurred_at=datetime.now(UTC),
    )
    with LedgerStore.open(settings) as store:
        LedgerWriter(store, load_policy(settings.policy_file)).write_rows(
            {"alerts": [alert_row(lost.to_avro())]}
        )
    with Stack(settings, log_dir=tmp_path / "logs") as stack:
        wait_for(stack, "dep-lost's tickets", lambda: len(outcomes(stack, "dep-lost")) == 3)
    assert (len(receivers.incidents), len(receivers.issues), len(receivers.hooks)) == (2, 2, 2)
    assert receivers.incidents[1]["body"]["correlation_id"] == "lost-alert"
