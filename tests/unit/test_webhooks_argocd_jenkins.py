"""Argo CD notifications and Jenkins post-build bodies (both ours, docs/webhooks.md)."""

from __future__ import annotations

from typing import Any

import pytest

from shipledger.producers.webhooks import WebhookPayloadError
from tests.webhook_kit import Check, Deliver, Mutate

#: What every run of a provider's fixtures maps onto, whatever its outcome.
RUN = {
    "argocd": {
        # Every phase of one sync operation is one deployment.
        "deployment_id": "argocd:argocd:payments-api:2024-03-04T10:20:00+00:00",
        "service": "payments",
        "environment": "production",
        "commit_sha": "0c2b9f6c1e4a5d8b7a6f3e2d1c0b9a8f7e6d5c4b",
        "actor": "argocd-automation",
        "trigger": "automated",
        "pipeline_provider": "argocd",
    },
    "jenkins": {
        "deployment_id": "jenkins:payments/deploy-production:412",
        "service": "payments",
        "environment": "production",
        "commit_sha": "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3",
        "actor": "jsmith",
        "trigger": "manual",
        "pipeline_run_id": "payments/deploy-production#412",
        "pipeline_run_url": "https://jenkins.acme.example/job/payments/job/deploy-production/412/",
        "source": "webhook:jenkins",
    },
}


@pytest.mark.parametrize(
    ("provider", "fixture", "event_type", "duration_ms"),
    [
        ("argocd", "sync_running", "started", None),
        ("argocd", "sync_succeeded", "succeeded", 67_000),
        ("argocd", "sync_failed", "failed", 151_000),
        ("jenkins", "success", "succeeded", 187_000),
        ("jenkins", "failure", "failed", 95_000),
        ("jenkins", "aborted", "cancelled", 60_000),
    ],
)
def test_a_run_is_a_deployment(
    deliver: Deliver,
    check_contract: Check,
    provider: str,
    fixture: str,
    event_type: str,
    duration_ms: int | None,
) -> None:
    [mapped] = deliver(provider, fixture).events
    event = check_contract(mapped)
    want = {**RUN[provider], "event_type": event_type, "duration_ms": duration_ms}
    assert {name: event[name] for name in want} == want


@pytest.mark.parametrize(
    ("fixture", "occurred_at"),
    [
        ("sync_running", "2024-03-04T10:20:00+00:00"),
        ("sync_succeeded", "2024-03-04T10:21:07+00:00"),
        ("sync_failed", "2024-03-04T10:22:31+00:00"),
    ],
)
def test_argocd_sync_time_namespace_and_identity(
    deliver: Deliver, check_contract: Check, fixture: str, occurred_at: str
) -> None:
    result = deliver("argocd", fixture)
    [mapped] = result.events
    assert mapped.event["occurred_at"] == occurred_at
    assert check_contract(mapped)["attributes"]["argocd.destination_namespace"] == "payments-prod"
    assert result.delivery_id is None  # identified by the body's hash


def test_argocd_manual_sync_without_labels(deliver: Deliver, check_contract: Check) -> None:
    def manual(body: dict[str, Any]) -> None:
        body.update(initiated_by="jsmith", automated="false")
        body["service"] = body["environment"] = "<no value>"  # labels absent on the app

    [mapped] = deliver("argocd", "sync_succeeded", manual).events
    event = check_contract(mapped)
    assert (event["actor"], event["trigger"]) == ("jsmith", "manual")
    assert (event["service"], event["environment"]) == ("payments-api", "payments-prod")


def test_argocd_terminating_ignored_and_revision_checked(deliver: Deliver) -> None:
    def terminating(body: dict[str, Any]) -> None:
        body["phase"] = "Terminating"

    assert deliver("argocd", "sync_running", terminating).ignored

    def chart_version(body: dict[str, Any]) -> None:
        body["revision"] = "1.4.2"  # a Helm chart version is not a commit

    with pytest.raises(WebhookPayloadError, match="revision: must be a full commit SHA"):
        deliver("argocd", "sync_succeeded", chart_version)


def test_argocd_retry_has_the_same_ids(deliver: Deliver) -> None:
    ids = {deliver("argocd", "sync_succeeded").events[0].event["event_id"] for _ in range(2)}
    assert len(ids) == 1
    assert deliver("argocd", "sync_running").events[0].event["event_id"] not in ids


def test_jenkins_unstable_started_and_not_built(deliver: Deliver, check_contract: Check) -> None:
    def result(value: str) -> Mutate:
        return lambda body: body.update(result=value)

    [unstable] = deliver("jenkins", "success", result("UNSTABLE")).events
    assert check_contract(unstable)["event_type"] == "failed"
    [started] = deliver("jenkins", "success", result("STARTED")).events
    assert check_contract(started)["event_type"] == "started"
    assert started.event["occurred_at"] == "2024-03-04T10:10:00+00:00"
    assert deliver("jenkins", "success", result("NOT_BUILT")).ignored
    with pytest.raises(WebhookPayloadError, match="result: 'PASSED' is not one of"):
        deliver("jenkins", "success", result("PASSED"))


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b.pop("commit_sha"), "commit_sha"),
        (lambda b: b.update(commit_sha="a94a8fe"), "commit_sha"),
        (lambda b: b.pop("service"), "service"),
        (lambda b: b.pop("environment"), "environment"),
        (lambda b: b.pop("finished_at"), "finished_at"),
        (lambda b: b.update(started_at="2024-03-04 10:10"), "started_at"),
        (lambda b: b.update(kind="bigbang"), "kind"),
    ],
)
def test_jenkins_fields_named(deliver: Deliver, mutate: Mutate, field: str) -> None:
    with pytest.raises(WebhookPayloadError, match=f"^{field}: "):
        deliver("jenkins", "success", mutate)
