"""PagerDuty v3 webhooks and Opsgenie's webhook integration mapped onto incident signals."""

from __future__ import annotations

import pytest

from shipledger.producers.webhooks import WebhookAuthError, WebhookPayloadError, dispatch
from shipledger.producers.webhooks.opsgenie import tags_of
from tests.webhook_kit import SECRET, Check, Deliver, Mutate, RawRequest


@pytest.mark.parametrize(
    ("provider", "fixture", "event_type", "fields", "attribute"),
    [
        (
            "pagerduty",
            "incident_triggered",
            "incident.triggered",
            {
                "service": "checkout",
                "external_id": "PGR0VU2",
                "severity": "P1",
                "title": "Checkout error rate above 5%",
                "url": "https://acme.pagerduty.com/incidents/PGR0VU2",
                "source": "webhook:pagerduty",
            },
            ("pagerduty.incident_number", "2"),
        ),
        (
            "opsgenie",
            "create",
            "Create",
            {
                "service": "checkout",
                "environment": "prod",
                "external_id": "60b98b1b-e0f6-4e7d-9a8f-0bd6f0e1de43-1795183200000",
                "severity": "P1",
                "title": "checkout error rate above 5%",
            },
            ("opsgenie.alias", "checkout-error-rate"),
        ),
    ],
    ids=["pagerduty", "opsgenie"],
)
def test_incident_opened(
    deliver: Deliver,
    check_contract: Check,
    provider: str,
    fixture: str,
    event_type: str,
    fields: dict[str, str],
    attribute: tuple[str, str],
) -> None:
    result = deliver(provider, fixture)
    assert result.event_type == event_type
    [mapped] = result.events
    event = check_contract(mapped)
    assert event["kind"] == "incident_opened"
    assert {name: event[name] for name in fields} == fields
    assert mapped.event["occurred_at"] == "2026-11-20T14:00:00+00:00"
    name, value = attribute
    assert event["attributes"][name] == value


def test_pagerduty_resolved_and_other_types(deliver: Deliver, check_contract: Check) -> None:
    def retype(name: str) -> Mutate:
        return lambda b: b["event"].update(event_type=name)

    [resolved] = deliver("pagerduty", "incident_triggered", retype("incident.resolved")).events
    assert check_contract(resolved)["kind"] == "incident_resolved"
    assert deliver("pagerduty", "incident_triggered", retype("incident.acknowledged")).ignored


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b["event"].pop("id"), "event.id"),
        (lambda b: b["event"].pop("data"), "event.data"),
        (lambda b: b["event"]["data"].pop("service"), "event.data.service.summary"),
        (lambda b: b["event"].update(occurred_at="soon"), "event.occurred_at"),
        (lambda b: b["event"]["data"].update(id=[1]), "event.data.id"),
    ],
)
def test_pagerduty_fields_named(deliver: Deliver, mutate: Mutate, field: str) -> None:
    with pytest.raises(WebhookPayloadError, match=f"^{field}: "):
        deliver("pagerduty", "incident_triggered", mutate)


def test_pagerduty_signature_while_a_secret_rotates(webhook_request: RawRequest) -> None:
    headers, body = webhook_request("pagerduty", "incident_triggered")
    # While a secret rotates PagerDuty sends both signatures: one matching is enough.
    rotated = {**headers, "X-PagerDuty-Signature": "v1=00ff, " + headers["X-PagerDuty-Signature"]}
    assert dispatch("pagerduty", rotated, body, secret=SECRET, tenant="acme").events
    with pytest.raises(WebhookAuthError, match="must look like 'v1="):
        dispatch(
            "pagerduty",
            {**headers, "X-PagerDuty-Signature": "sha256=ab"},
            body,
            secret=SECRET,
            tenant="acme",
        )
    del headers["X-PagerDuty-Signature"]
    with pytest.raises(WebhookAuthError, match="missing X-PagerDuty-Signature"):
        dispatch("pagerduty", headers, body, secret=SECRET, tenant="acme")


def test_opsgenie_service_falls_back_to_tags_then_entity(deliver: Deliver) -> None:
    def no_details(b: dict[str, object]) -> None:
        b["alert"].pop("details")  # type: ignore[attr-defined]

    [mapped] = deliver("opsgenie", "create", no_details).events
    assert (mapped.event["service"], mapped.event["environment"]) == ("checkout", "prod")

    def entity_only(b: dict[str, object]) -> None:
        no_details(b)
        b["alert"]["tags"] = []  # type: ignore[index]

    [mapped] = deliver("opsgenie", "create", entity_only).events
    assert mapped.event["service"] == "checkout-prod"


def test_opsgenie_other_actions_and_close(deliver: Deliver, check_contract: Check) -> None:
    [closed] = deliver("opsgenie", "create", lambda b: b.update(action="Close")).events
    assert check_contract(closed)["kind"] == "incident_resolved"
    assert deliver("opsgenie", "create", lambda b: b.update(action="Acknowledge")).ignored


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b.pop("action"), "action"),
        (lambda b: b["alert"].pop("alertId"), "alert.alertId"),
        (lambda b: b["alert"].pop("createdAt"), "alert.createdAt"),
        (lambda b: b["alert"].update(tags="service:x"), "alert.tags"),
        (lambda b: b["alert"].update(details=None, tags=[], entity=None), "alert.details.service"),
    ],
)
def test_opsgenie_fields_named(deliver: Deliver, mutate: Mutate, field: str) -> None:
    with pytest.raises(WebhookPayloadError, match=f"^{field}: "):
        deliver("opsgenie", "create", mutate)


def test_opsgenie_tags() -> None:
    assert tags_of(["service:checkout", "critical", "env:prod", "env:qa"]) == {
        "service": "checkout",
        "env": "prod",
    }
