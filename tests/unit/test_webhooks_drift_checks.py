"""Checkly check results, Datadog Synthetics notifications, Terraform plans and Argo CD
OutOfSync notifications mapped onto signal events (docs/verification.md), from the fixtures
of tests/fixtures/webhooks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shipledger.producers.webhooks import WebhookPayloadError, dispatch
from shipledger.schemas.family_models import CHECK_NAME, DRIFT_RESOURCES, DRIFT_TOOL
from tests.webhook_kit import SECRET, Check, Deliver, Mutate, RawRequest


@pytest.mark.parametrize(
    ("name", "outcome"),
    [("failure", "failure"), ("recovery", "success"), ("degraded", "degraded")],
)
def test_checkly_results(deliver: Deliver, check_contract: Check, name: str, outcome: str) -> None:
    [mapped] = deliver("checkly", name).events
    event = check_contract(mapped)
    assert (event["kind"], event["outcome"]) == ("pipeline_finished", outcome)
    assert (event["service"], event["environment"]) == ("checkout", "prod")
    assert event["attributes"][CHECK_NAME] == "checkout API: place order"
    assert event["source"] == "webhook:checkly"
    assert event["url"].startswith("https://app.checklyhq.com/checks/")


def test_checkly_time_and_ids(deliver: Deliver) -> None:
    [failure] = deliver("checkly", "failure").events
    assert failure.event["occurred_at"] == "2024-03-04T10:24:31.482000+00:00"
    again = deliver("checkly", "failure").events[0].event["event_id"]
    recovered = deliver("checkly", "recovery").events[0].event["event_id"]
    assert again == failure.event["event_id"] != recovered


def test_checkly_ignores_ssl(deliver: Deliver) -> None:
    result = deliver("checkly", "ssl")
    assert result.events == [] and result.ignored == "alert type 'ALERT_SSL' is not recorded"


@pytest.mark.parametrize("field", ["alert_type", "check_result_id", "check_name", "started_at"])
def test_checkly_fields_named(deliver: Deliver, field: str) -> None:
    def drop(body: dict[str, Any]) -> None:
        del body[field]

    with pytest.raises(WebhookPayloadError, match=field):
        deliver("checkly", "failure", drop)


def test_datadog_synthetics_is_a_failed_health_signal(
    deliver: Deliver, check_contract: Check
) -> None:
    [mapped] = deliver("datadog", "synthetics_triggered").events
    event = check_contract(mapped)
    assert (event["kind"], event["service"], event["environment"]) == (
        "alert_fired",
        "checkout",
        "prod",
    )
    assert "[Synthetics]" in event["title"]


@pytest.mark.parametrize(
    ("provider", "fixture", "place", "addresses", "occurred_at"),
    [
        (
            "terraform",
            "plan_drift",
            ("checkout", "production"),
            # no-op and data-source reads are not drift; resource_drift comes first.
            [
                "aws_security_group.checkout",
                "aws_security_group.checkout",
                "module.cache.aws_elasticache_cluster.this[0]",
            ],
            "2024-03-04T11:05:00+00:00",
        ),
        (
            "argocd",
            "out_of_sync",
            ("payments", "production"),
            ["Deployment/payments-prod/payments-api", "ConfigMap/payments-prod/payments-config"],
            "2024-03-04T11:40:12+00:00",
        ),
    ],
    ids=["terraform", "argocd"],
)
def test_drift_is_an_alert_naming_its_resources(
    deliver: Deliver,
    check_contract: Check,
    provider: str,
    fixture: str,
    place: tuple[str, str],
    addresses: list[str],
    occurred_at: str,
) -> None:
    [mapped] = deliver(provider, fixture).events
    event = check_contract(mapped)
    assert (event["kind"], event["service"], event["environment"]) == ("alert_fired", *place)
    assert event["attributes"][DRIFT_TOOL] == provider
    resources = json.loads(event["attributes"][DRIFT_RESOURCES])
    assert [r["address"] for r in resources] == addresses
    assert mapped.event["occurred_at"] == occurred_at


def test_terraform_plan_with_changes(deliver: Deliver) -> None:
    [mapped] = deliver("terraform", "plan_drift").events
    resources = json.loads(mapped.event["attributes"][DRIFT_RESOURCES])
    assert [(r["actions"], r["found_in"]) for r in resources] == [
        ("update", "resource_drift"),
        ("update", "resource_changes"),
        ("delete+create", "resource_changes"),
    ]
    assert resources[2]["kind"] == "aws_elasticache_cluster"
    # The same plan sent twice is one report.
    again = deliver("terraform", "plan_drift").events[0].event["event_id"]
    assert again == mapped.event["event_id"]


def test_terraform_clean_plan_is_no_drift(deliver: Deliver) -> None:
    result = deliver("terraform", "plan_clean")
    assert result.events == [] and result.ignored == "the plan changes nothing: no drift"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b.pop("format_version"), "format_version"),
        (lambda b: b.update(format_version="2.0"), "format_version: '2.0' is not supported"),
        (lambda b: b.update(resource_changes={}), "resource_changes: must be an array"),
        (lambda b: b["resource_changes"][1].pop("address"), r"resource_changes\[1\].address"),
        (
            lambda b: b["resource_changes"][0]["change"].update(actions="update"),
            r"resource_changes\[0\].change.actions",
        ),
    ],
)
def test_terraform_bad_plans_name_the_field(deliver: Deliver, mutate: Mutate, message: str) -> None:
    with pytest.raises(WebhookPayloadError, match=message):
        deliver("terraform", "plan_drift", mutate)


@pytest.mark.parametrize("header", ["X-Shipledger-Service", "X-Shipledger-Environment"])
def test_terraform_needs_service_and_environment(webhook_request: RawRequest, header: str) -> None:
    headers, body = webhook_request("terraform", "plan_drift")
    del headers[header]
    with pytest.raises(WebhookPayloadError, match=f"{header}: header required"):
        dispatch("terraform", headers, body, secret=SECRET, tenant="acme")


def test_argocd_synced_is_no_drift(deliver: Deliver) -> None:
    result = deliver("argocd", "out_of_sync", lambda b: b.update(sync_status="Synced"))
    assert result.events == [] and "no drift" in (result.ignored or "")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b.pop("app"), "app"),
        (lambda b: b.pop("sync_status"), "sync_status"),
        (lambda b: b.update(resources="all"), "resources: must be an array of objects"),
        (
            lambda b: [b.pop("environment"), b.pop("destination_namespace")],
            "environment: required",
        ),
    ],
)
def test_argocd_out_of_sync_fields_named(deliver: Deliver, mutate: Mutate, message: str) -> None:
    with pytest.raises(WebhookPayloadError, match=message):
        deliver("argocd", "out_of_sync", mutate)
