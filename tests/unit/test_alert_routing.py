"""Alert routing (issue #8, point 2): the paging and chat receivers (PagerDuty Events API
v2, Opsgenie Alert API, a Slack incoming webhook, an Alertmanager-compatible webhook) and
resolutions flowing to the receivers that can close what they opened.

Pure mappings first; then each provider over real HTTP to the stand-in receivers
(tests/conftest.py `StandInReceivers`: a declared stand-in for each provider, which checks
the documented request shape, because none can be reached from here); then the escalator's
chain (fake Kafka, real HTTP to the stand-ins): a replayed alert pages once, failures are
retried then dead-lettered, a resolution resolves the PagerDuty incident."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
from confluent_kafka import Message
from pydantic import SecretStr

from shipledger.escalations_cli import deliveries_sql
from shipledger.receivers import alertmanager, opsgenie, pagerduty, slack, webhook
from shipledger.receivers.engine import Deliverer, Outcome, RetryPolicy
from shipledger.receivers.plan import AlertMessage, deliveries
from shipledger.receivers.receiver import Delivery, Target
from shipledger.receivers.record import DeliveryRecord
from shipledger.receivers.registry import KINDS, policy_problems, targets
from shipledger.schemas.letters import DeadLetter
from shipledger.schemas.models import Alert
from shipledger.schemas.policy import Policy, PolicyError, parse_policy
from shipledger.schemas.registry import AvroCodec
from shipledger.settings import Settings
from shipledger.sinks.ledger import chain
from tests.kit import FakeProducer, freeze_alert
from tests.unit.test_escalator_pipeline import (
    FakeConsumer,
    Harness,
    escalator_settings,
)
from tests.unit.test_receivers import StandInReceivers as TicketingStandIns
from tests.unit.test_receivers import Waits


class StandInReceivers(TicketingStandIns, Protocol):
    """The `receivers` fixture (tests/conftest.py `StandInReceivers`), with what its paging
    and chat stand-ins keep: PagerDuty events and open incidents by dedup key, Opsgenie
    alerts by alias, Slack messages and Alertmanager webhook payloads."""

    pd_events: list[dict[str, Any]]
    incidents_open: dict[str, bool]
    genie: dict[str, dict[str, Any]]
    slack: list[dict[str, Any]]
    am: list[dict[str, Any]]


ALERT = freeze_alert(
    severity="high",
    message="checkout shipped to prod during the <year-end> freeze",
    policy_version="route-1+abc",
    team="payments",
    detected_at=datetime(2026, 12, 22, 10, 0, 1, tzinfo=UTC),
)
RESOLUTION = ALERT.model_copy(
    update={
        "alert_id": "9d1f2e3c-0000-5000-8000-000000000001",
        "kind": "resolution",
        "resolves": ALERT.alert_id,
        "message": "freeze_violation no longer holds: the freeze was lifted",
        "detected_at": datetime(2026, 12, 22, 11, tzinfo=UTC),
    }
)
PATHS = {"webhook": "/hooks/audit", "alertmanager": "/alertmanager/am"}


def target(server: StandInReceivers, kind: str, **options: object) -> Target:
    return Target(
        name=f"my-{kind}",
        kind=kind,
        url=server.url + PATHS.get(kind, ""),
        options=KINDS[kind].options.model_validate(options),
        secret=SecretStr(server.secrets[kind]),
    )


def deliver(to: Target, alert: Alert = ALERT, waits: Waits | None = None) -> Outcome:
    retry = RetryPolicy(attempts=3, backoff_s=0.01, backoff_max_s=0.05, timeout_s=5.0)
    with httpx.Client(follow_redirects=False) as client:
        deliverer = Deliverer(client, retry, KINDS, sleep=waits or Waits())
        return deliverer.deliver(Delivery(alert, "pager", to.name), to)


# --- pure mappings --------------------------------------------------------------------------
def test_severities_map_onto_each_providers_scale() -> None:
    assert pagerduty.SEVERITY == {
        "critical": "critical",
        "high": "error",
        "medium": "warning",
        "low": "info",
        "info": "info",
    }
    assert [opsgenie.PRIORITY[s] for s in ("critical", "high", "medium", "low", "info")] == [
        "P1",
        "P2",
        "P3",
        "P4",
        "P5",
    ]


def test_the_pagerduty_payload_names_the_alert() -> None:
    to = Target(
        "pd", "pagerduty", "https://events.pagerduty.com", KINDS["pagerduty"].options(), None
    )
    payload = pagerduty.payload(Delivery(ALERT, "r", "pd"), to)
    assert payload["severity"] == "error"
    assert payload["source"] == "checkout.prod" and payload["group"] == "payments"
    assert payload["class"] == "freeze_violation" and payload["component"] == "checkout"
    assert payload["summary"].startswith("shipledger high: freeze_violation - checkout in prod")
    assert payload["custom_details"]["Alert id"] == ALERT.alert_id


def test_alertmanager_fingerprint_is_fnv1a_over_sorted_labels() -> None:
    # prometheus/common: an empty label set hashes to the FNV-1a 64 offset basis.
    assert alertmanager.fingerprint({}) == "cbf29ce484222325"
    assert alertmanager.fingerprint({"a": "1", "b": "2"}) == alertmanager.fingerprint(
        {"b": "2", "a": "1"}
    )
    assert alertmanager.fingerprint({"a": "1"}) != alertmanager.fingerprint({"a": "2"})


def test_a_resolution_keeps_the_labels_and_fingerprint_of_its_alert() -> None:
    to = Target("am", "alertmanager", "https://am.example", KINDS["alertmanager"].options(), None)
    firing = alertmanager.message(Delivery(ALERT, "r", "am"), to)
    resolved = alertmanager.message(Delivery(RESOLUTION, "r", "am"), to)
    assert (firing["status"], resolved["status"]) == ("firing", "resolved")
    (a,), (b,) = firing["alerts"], resolved["alerts"]
    assert a["labels"] == b["labels"] and a["fingerprint"] == b["fingerprint"]
    assert a["labels"]["alert_id"] == ALERT.alert_id and a["labels"]["team"] == "payments"
    assert a["endsAt"] == alertmanager.ZERO_TIME and b["endsAt"] == "2026-12-22T11:00:00Z"
    assert firing["groupKey"] == resolved["groupKey"]


def test_slack_escapes_its_control_characters() -> None:
    message = slack.message(Delivery(ALERT, "r", "chat"))
    assert message["blocks"][1]["text"]["text"] == (
        "checkout shipped to prod during the &lt;year-end&gt; freeze"
    )
    assert len(message["blocks"][2]["fields"]) <= 10
    resolved = slack.message(Delivery(RESOLUTION, "r", "chat"))
    assert resolved["text"].startswith("RESOLVED shipledger high")


ROUTES = """\
version: route-1
escalation:
  receivers:
    pd: {type: pagerduty, credentials: pd_key}
    chat: {type: slack, credentials: chat_url}
    snow: {type: servicenow, url: "https://snow.example", credentials: snow}
    am: {type: alertmanager, url: "https://am.example/hook"}
  routes:
    - {name: payments-page, teams: [payments], min_severity: high, receivers: [pd, snow]}
    - {name: prod-chat, environments: [prod], receivers: [chat, am]}
"""


def routed(policy: Policy, *alerts: Alert) -> list[tuple[str, str, str]]:
    configured = targets(policy, lambda name: SecretStr("https://hooks.slack.com/services/x"))
    resolvers = {n for n, t in configured.items() if KINDS[t.kind].resolve is not None}
    messages = [AlertMessage(a, None, b"", "alerts", 0, i) for i, a in enumerate(alerts)]
    return [
        (p.delivery.route, p.delivery.receiver, p.delivery.action)
        for p in deliveries(messages, policy.escalation, resolvers)
    ]


def test_routes_match_team_severity_and_environment() -> None:
    policy = parse_policy(ROUTES, checks=[policy_problems])
    assert routed(policy, ALERT) == [
        ("payments-page", "pd", "trigger"),
        ("payments-page", "snow", "trigger"),
        ("prod-chat", "chat", "trigger"),
        ("prod-chat", "am", "trigger"),
    ]
    other_team = ALERT.model_copy(update={"team": "search", "alert_id": "a2"})
    assert [r for _, r, _ in routed(policy, other_team)] == ["chat", "am"]
    staging_low = ALERT.model_copy(update={"environment": "staging", "severity": "low"})
    assert routed(policy, staging_low) == []


def test_a_resolution_goes_only_to_receivers_that_can_close() -> None:
    policy = parse_policy(ROUTES, checks=[policy_problems])
    # ServiceNow keeps its incident for a person to close: it is sent no resolution.
    assert routed(policy, RESOLUTION) == [
        ("payments-page", "pd", "resolve"),
        ("prod-chat", "chat", "resolve"),
        ("prod-chat", "am", "resolve"),
    ]


def test_a_receiver_without_a_public_endpoint_needs_a_url() -> None:
    bad = ROUTES.replace(
        'am: {type: alertmanager, url: "https://am.example/hook"}', "am: {type: alertmanager}"
    )
    with pytest.raises(PolicyError, match="type alertmanager has no default: set `url:`"):
        parse_policy(bad, checks=[policy_problems])
    defaults = targets(parse_policy(ROUTES, checks=[policy_problems]), lambda _: SecretStr("k"))
    assert defaults["pd"].url == "https://events.pagerduty.com"
    assert defaults["chat"].url == "https://hooks.slack.com"


# --- each provider, over HTTP to its stand-in ----------------------------------------------
def test_pagerduty_trigger_then_resolve_with_the_alert_id_as_dedup_key(
    receivers: StandInReceivers,
) -> None:
    to = target(receivers, "pagerduty")
    outcome = deliver(to)
    assert receivers.problems == []
    assert outcome.delivered and outcome.status == 202 and outcome.ticket is not None
    assert outcome.ticket.key == ALERT.alert_id
    (trigger,) = receivers.pd_events
    assert trigger["event_action"] == "trigger" and trigger["dedup_key"] == ALERT.alert_id
    assert trigger["routing_key"] == receivers.secrets["pagerduty"]
    assert trigger["payload"]["severity"] == "error"
    assert receivers.incidents_open == {ALERT.alert_id: True}

    assert deliver(to, RESOLUTION).delivered
    assert receivers.problems == []
    resolve = receivers.pd_events[-1]
    assert resolve == {
        "routing_key": receivers.secrets["pagerduty"],
        "event_action": "resolve",
        "dedup_key": ALERT.alert_id,
    }
    assert receivers.incidents_open == {ALERT.alert_id: False}


def test_opsgenie_create_by_alias_then_close_by_alias(receivers: StandInReceivers) -> None:
    to = target(receivers, "opsgenie", responders=[{"type": "team", "name": "payments"}])
    outcome = deliver(to)
    assert receivers.problems == [] and outcome.delivered and outcome.status == 202
    created = receivers.genie[ALERT.alert_id]
    assert created["status"] == "open"
    body = created["body"]
    assert body["priority"] == "P2" and body["alias"] == ALERT.alert_id
    assert body["responders"] == [{"type": "team", "name": "payments"}]
    assert len(body["message"]) <= 130 and body["entity"] == "checkout"

    assert deliver(to, RESOLUTION).delivered
    assert receivers.problems == []
    assert receivers.genie[ALERT.alert_id]["status"] == "closed"
    assert ("POST", f"/v2/alerts/{ALERT.alert_id}/close") in receivers.requests


def test_opsgenie_with_the_wrong_key_is_refused_once(receivers: StandInReceivers) -> None:
    to = target(receivers, "opsgenie")
    wrong = Target(to.name, to.kind, to.url, to.options, SecretStr("not-the-key"))
    outcome = deliver(wrong)
    assert not outcome.delivered and outcome.attempts == 1 and outcome.status == 401


def test_slack_message_through_the_secret_webhook_url(receivers: StandInReceivers) -> None:
    to = target(receivers, "slack")
    assert deliver(to).delivered
    assert deliver(to, RESOLUTION).delivered
    assert receivers.problems == []
    first, second = receivers.slack
    assert first["blocks"][0]["type"] == "header"
    assert second["text"].startswith("RESOLVED ")


def test_a_slack_failure_never_writes_the_webhook_path(receivers: StandInReceivers) -> None:
    to = target(receivers, "slack")
    receivers.always[receivers.secrets["slack"]] = 503
    outcome = deliver(to)
    assert not outcome.delivered and outcome.reason is not None
    assert "path withheld" in outcome.reason
    assert "/services/" not in outcome.reason
    # A secret pointing to another host is refused before anything is sent.
    elsewhere = Target(to.name, to.kind, to.url, to.options, SecretStr("https://evil.example/x"))
    refused = deliver(elsewhere)
    assert not refused.delivered and refused.attempts == 1 and refused.status is None
    assert refused.reason is not None and "https://evil.example" not in refused.reason


def test_alertmanager_webhook_firing_then_resolved(receivers: StandInReceivers) -> None:
    to = target(receivers, "alertmanager", labels={"source": "shipledger"})
    assert deliver(to).delivered
    assert deliver(to, RESOLUTION).delivered
    assert receivers.problems == []
    firing, resolved = receivers.am
    assert (firing["version"], firing["status"], resolved["status"]) == ("4", "firing", "resolved")
    assert firing["receiver"] == "my-alertmanager"
    assert firing["alerts"][0]["labels"]["source"] == "shipledger"
    assert firing["alerts"][0]["fingerprint"] == resolved["alerts"][0]["fingerprint"]


def test_the_signed_webhook_carries_resolutions(receivers: StandInReceivers) -> None:
    to = target(receivers, "webhook")
    assert deliver(to).delivered and deliver(to, RESOLUTION).delivered
    assert receivers.problems == []  # both signatures verified by the stand-in
    escalated, resolved = receivers.hooks.values()
    assert escalated["type"] == webhook.EVENT_TYPE
    assert resolved["type"] == webhook.RESOLVED_TYPE
    assert resolved["alert"]["resolves"] == ALERT.alert_id


# --- through the escalator's chain --------------------------------------------------------
PIPELINE = """\
version: route-1
escalation:
  receivers:
    pd: {{type: pagerduty, url: "{url}", credentials: pd_key}}
  routes:
    - {{name: page, min_severity: high, receivers: [pd]}}
"""


class Loopback(Harness):
    """The escalator with a fake Kafka and a real HTTP client (to the stand-ins)."""

    def make_client(self) -> httpx.Client:
        return httpx.Client(follow_redirects=False)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return escalator_settings(tmp_path, attempts=3)


def escalate(
    settings: Settings,
    server: StandInReceivers,
    record: DeliveryRecord,
    batches: list[list[Alert]],
) -> Loopback:
    stop = threading.Event()
    policy = parse_policy(PIPELINE.format(url=server.url), checks=[policy_problems])
    configured = targets(policy, lambda _name: SecretStr(server.secrets["pagerduty"]))
    harness = Loopback(settings, "unused:9092", policy, configured, record)
    codec = AvroCodec("io.shipledger.v1.Alert")
    messages = [
        [
            Message(
                topic=harness.topics.alerts,
                partition=0,
                offset=10 * b + i,
                key=b"retail/dep-1",
                value=codec.encode(alert.to_avro()),
            )
            for i, alert in enumerate(batch)
        ]
        for b, batch in enumerate(batches)
    ]
    log: list[str] = []
    harness.consumer = FakeConsumer(log, messages, stop)
    harness.producer = FakeProducer(log)
    harness.run(stop)
    return harness


def rows(harness: Loopback) -> list[dict[str, Any]]:
    codec = AvroCodec("io.shipledger.v1.Escalation")
    return [
        codec.decode(sent["value"])
        for sent in harness.producer.sent
        if sent["topic"] == harness.topics.escalations
    ]


def test_a_replayed_alert_pages_once_even_after_a_restart(
    settings: Settings, receivers: StandInReceivers, tmp_path: Path
) -> None:
    record = DeliveryRecord(tmp_path / "record.sqlite3")
    escalate(settings, receivers, record, [[ALERT, ALERT], [ALERT]])  # a duplicate, a redelivery
    record.close()
    restarted = DeliveryRecord(tmp_path / "record.sqlite3")  # the state is on disk
    harness = escalate(settings, receivers, restarted, [[ALERT]])
    assert receivers.problems == []
    assert [e["event_action"] for e in receivers.pd_events] == ["trigger"]
    assert rows(harness) == []  # nothing new to say


def test_failures_are_retried_then_dead_lettered(
    settings: Settings, receivers: StandInReceivers, tmp_path: Path
) -> None:
    receivers.always["/v2/enqueue"] = 500
    harness = escalate(settings, receivers, DeliveryRecord(tmp_path / "r.sqlite3"), [[ALERT]])
    assert receivers.requests.count(("POST", "/v2/enqueue")) == 3  # SHIPLEDGER_ESCALATION_ATTEMPTS
    (row,) = rows(harness)
    assert (row["status"], row["attempts"], row["http_status"]) == ("dead_lettered", 3, 500)
    assert row["action"] == "trigger"
    (letter,) = [s for s in harness.producer.sent if s["topic"] == harness.topics.dlq]
    assert DeadLetter.read(letter["headers"]).stage == "escalation"
    assert receivers.secrets["pagerduty"] not in (row["reason"] or "")


def test_a_resolution_resolves_the_pagerduty_incident(
    settings: Settings, receivers: StandInReceivers, tmp_path: Path
) -> None:
    record = DeliveryRecord(tmp_path / "record.sqlite3")
    harness = escalate(settings, receivers, record, [[ALERT], [RESOLUTION, RESOLUTION]])
    assert receivers.problems == []
    assert [(e["event_action"], e["dedup_key"]) for e in receivers.pd_events] == [
        ("trigger", ALERT.alert_id),
        ("resolve", ALERT.alert_id),
    ]
    assert receivers.incidents_open == {ALERT.alert_id: False}
    trigger, resolve = rows(harness)
    assert (trigger["action"], trigger["alert_id"]) == ("trigger", ALERT.alert_id)
    assert (resolve["action"], resolve["alert_id"], resolve["resolved_alert_id"]) == (
        "resolve",
        RESOLUTION.alert_id,
        ALERT.alert_id,
    )


# --- the ledger side -----------------------------------------------------------------------
def test_escalation_rows_chained_before_the_action_columns_still_verify() -> None:
    """Migration 0010 adds `action` and `resolved_alert_id` to rows hashed without them: they
    read back empty, and an empty late column of `escalations` is left out of the hash."""
    old = {"event_id": "e1", "tenant": "retail", "status": "delivered", "chain_seq": 1}
    stamped = chain.row_hash(old, "escalations")
    assert chain.row_hash({**old, "action": "", "resolved_alert_id": ""}, "escalations") == stamped
    assert chain.row_hash({**old, "action": "trigger"}, "escalations") != stamped
    # Only that table's: elsewhere an empty `action` is a value like any other.
    assert chain.row_hash({**old, "action": ""}, "catalog_events") != chain.row_hash(old)


@pytest.mark.parametrize(
    ("table", "added"),
    [
        ("source_events", {"changed_paths": {}}),  # migration 0012
        ("artifact_events", {"provenance_url": None, "action": "", "registry": None}),  # 0013
    ],
)
def test_family_rows_chained_before_their_new_columns_still_verify(
    table: str, added: dict[str, object]
) -> None:
    """A row stamped before a migration added columns reads them back empty (a map, NULL,
    ''): left out of the hash, as when it was stamped; set, they are hashed."""
    old = {"event_id": "e1", "tenant": "retail", "chain_seq": 1}
    assert chain.row_hash({**old, **added}, table) == chain.row_hash(old, table)
    first = next(iter(added))
    set_value = {"a1": ["svc/x.py"]} if first == "changed_paths" else "https://slsa.example/1"
    assert chain.row_hash({**old, first: set_value}, table) != chain.row_hash(old, table)


def test_the_deliveries_query_takes_only_plain_names() -> None:
    sql = deliveries_sql(receiver="payments-pager", action="resolve", limit=5)
    assert "receiver = 'payments-pager'" in sql and sql.endswith("LIMIT 5")
    assert "if(action = '', 'trigger', action) = 'resolve'" in sql
    assert "GROUP BY receiver" in deliveries_sql(by_receiver=True)
    with pytest.raises(ValueError, match="not a receiver name or an alert id"):
        deliveries_sql(alert="x' OR 1=1 --")
