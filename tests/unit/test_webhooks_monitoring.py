"""Prometheus Alertmanager (webhook receiver JSON, version 4) and Datadog monitor webhooks
(our template of Datadog's variables) mapped onto signal events."""

from __future__ import annotations

from typing import Any

import pytest

from shipledger.producers.webhooks import WebhookAuthError, WebhookPayloadError, dispatch
from shipledger.producers.webhooks.datadog import tags_of
from tests.webhook_kit import SECRET, Check, Deliver, Mutate, RawRequest


def test_alertmanager_firing_group(deliver: Deliver, check_contract: Check) -> None:
    result = deliver("alertmanager", "firing")
    assert result.event_type == "firing"
    first, second = (check_contract(m) for m in result.events)
    assert first["kind"] == "alert_fired"
    assert (first["service"], first["environment"]) == ("checkout", "production")
    assert (first["title"], first["severity"]) == ("HighErrorRate", "page")
    assert first["external_id"] == "c6a2cd6e1d0b5f2a"
    assert result.events[0].event["occurred_at"] == "2026-11-30T12:00:00+00:00"
    assert first["attributes"]["alertmanager.summary"] == "checkout 5xx ratio above 5%"
    assert first["url"].startswith("http://prometheus.example.com:9090/graph")
    assert first["source"] == "webhook:alertmanager"
    # No service label: the job names the service.
    assert (second["service"], second["environment"]) == ("node", None)


def test_alertmanager_resolved_and_repeats(deliver: Deliver, check_contract: Check) -> None:
    [resolved] = deliver("alertmanager", "resolved").events
    event = check_contract(resolved)
    assert event["kind"] == "alert_resolved"
    assert resolved.event["occurred_at"] == "2026-11-30T12:25:00+00:00"
    # A repeated notification of the same firing alert is the same event; its resolution not.
    ids = {deliver("alertmanager", "firing").events[0].event["event_id"] for _ in range(2)}
    assert len(ids) == 1 and resolved.event["event_id"] not in ids


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b.update(version="3"), "version"),
        (lambda b: b.update(alerts=[]), "alerts"),
        (lambda b: b["alerts"][0]["labels"].pop("alertname"), "alerts.0.labels.alertname"),
        (lambda b: b["alerts"][1].update(status="pending"), "alerts.1.status"),
        (lambda b: b["alerts"][0].update(startsAt="yesterday"), "startsAt"),
    ],
)
def test_alertmanager_fields_named(deliver: Deliver, mutate: Mutate, field: str) -> None:
    with pytest.raises(WebhookPayloadError, match=f"{field}: "):
        deliver("alertmanager", "firing", mutate)


def test_alertmanager_bearer_or_token(webhook_request: RawRequest) -> None:
    headers, body = webhook_request("alertmanager", "firing")
    assert headers["Authorization"] == f"Bearer {SECRET}"
    del headers["Authorization"]
    with pytest.raises(WebhookAuthError, match="missing X-Shipledger-Token"):
        dispatch("alertmanager", headers, body, secret=SECRET, tenant="acme")
    headers["X-Shipledger-Token"] = SECRET
    assert dispatch("alertmanager", headers, body, secret=SECRET, tenant="acme").events


def test_datadog_triggered(deliver: Deliver, check_contract: Check) -> None:
    result = deliver("datadog", "triggered")
    [mapped] = result.events
    event = check_contract(mapped)
    assert event["kind"] == "alert_fired"
    assert (event["service"], event["environment"]) == ("checkout", "prod")
    assert (
        event["title"] == "[Triggered on {service:checkout,env:prod}] checkout error rate is high"
    )
    assert (event["severity"], event["external_id"]) == ("P2", "132465798")
    assert mapped.event["occurred_at"] == "2026-11-19T12:00:00+00:00"
    assert event["attributes"]["datadog.team"] == "payments"
    assert result.delivery_id == "7458132985462178301"


def test_datadog_recovered_and_other_transitions(deliver: Deliver, check_contract: Check) -> None:
    [mapped] = deliver("datadog", "recovered").events
    assert check_contract(mapped)["kind"] == "alert_resolved"

    def transition(value: str) -> Mutate:
        return lambda body: body.update(transition=value)

    [again] = deliver("datadog", "triggered", transition("Re-Triggered")).events
    assert check_contract(again)["kind"] == "alert_fired"
    for ignored in ("Warn", "No Data", "Renotify"):
        assert deliver("datadog", "triggered", transition(ignored)).ignored


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b.pop("id"), "id"),
        (lambda b: b.pop("title"), "title"),
        (lambda b: b.update(date="$DATE"), "date"),
        # Digits to str.isdigit, not to int(): a 500 once.
        (lambda b: b.update(date="\u00b2"), "date"),
        (lambda b: b.update(date="9" * 5000), "date"),
        (lambda b: b.pop("transition"), "transition"),
    ],
)
def test_datadog_fields_named(deliver: Deliver, mutate: Mutate, field: str) -> None:
    with pytest.raises(WebhookPayloadError, match=f"^{field}: "):
        deliver("datadog", "triggered", mutate)


@pytest.mark.parametrize(
    ("text", "tags"),
    [
        ("service:checkout, env:prod,monitor", {"service": "checkout", "env": "prod"}),
        ("env:prod,env:stage,url:http://x:1", {"env": "prod", "url": "http://x:1"}),
        ("", {}),
    ],
)
def test_datadog_tags(text: str, tags: dict[str, Any]) -> None:
    assert tags_of(text) == tags
