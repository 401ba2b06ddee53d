"""Fixtures of the webhook tests: provider deliveries built from tests/fixtures/webhooks."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import Any

import pytest

from shipledger.webhooks import Mapped, WebhookResult, dispatch

WEBHOOK_TENANT = "acme"
# Fields of each family per HELPERS.md (the contract), for the families without a model here.
_FAMILY_FIELDS = {
    "source": {"kind", "repository", "ref", "commit_sha", "previous_sha", "commit_shas",
               "pull_request_number", "pull_request_title", "pull_request_url", "author",
               "merged_by", "release_tag", "url"},
    "artifact": {"kind", "artifact_name", "version", "digest", "repository", "commit_sha",
                 "builder", "url"},
    "signal": {"kind", "service", "environment", "severity", "title", "external_id",
               "deployment_id", "outcome", "url"},
    "catalog": {"entity", "action", "name", "owner_team", "tier", "repository",
                "dependencies", "url"},
}  # fmt: skip
_ENVELOPE = {"event_id", "tenant", "region", "occurred_at", "source", "attributes"}
_DEPLOYMENT_V2 = {"source", "team", "rollback_of", "approvers", "pull_requests", "provenance_url"}

Mutate = Callable[[dict[str, Any]], None]
WebhookRequest = Callable[..., tuple[dict[str, str], bytes]]


@pytest.fixture
def deliver(webhook_request: WebhookRequest, webhook_secret: str) -> Callable[..., WebhookResult]:
    """`(provider, fixture name, mutate=None, **dispatch kwargs)`: dispatch the fixture."""

    def _deliver(
        provider: str, name: str, mutate: Mutate | None = None, **kwargs: Any
    ) -> WebhookResult:
        headers, body = webhook_request(provider, name, mutate)
        kwargs.setdefault("secret", webhook_secret)
        kwargs.setdefault("tenant", WEBHOOK_TENANT)
        return dispatch(provider, headers, body, **kwargs)

    return _deliver


def _check(mapped: Mapped) -> dict[str, Any]:
    """Validate one mapped event with its family's model and return the validated dict.

    Until the contract branch's `shipledger.schemas.families` is merged, deployment events are
    validated by the v1 model (v2-only fields set aside) and the other families' dicts are
    checked against the HELPERS.md field names.
    """
    event = mapped.event
    assert event["tenant"] == WEBHOOK_TENANT
    if importlib.util.find_spec("shipledger.schemas.families") is not None:
        families = importlib.import_module("shipledger.schemas.families")
        model = families.family_of(mapped.family).model
        validated: dict[str, Any] = model.model_validate(event).to_avro()
        return validated
    if mapped.family == "deployment":
        from shipledger.schemas.models import DeploymentEvent

        v1 = {k: v for k, v in event.items() if k not in _DEPLOYMENT_V2}
        return {**DeploymentEvent.model_validate(v1).to_avro(), "source": event["source"]}
    assert set(event) == _FAMILY_FIELDS[mapped.family] | _ENVELOPE, set(event) ^ (
        _FAMILY_FIELDS[mapped.family] | _ENVELOPE
    )
    return event


@pytest.fixture
def check_contract() -> Callable[[Mapped], dict[str, Any]]:
    """Validate a mapped event against its family's contract; returns the validated fields."""
    return _check
