"""Fixtures of the webhook tests: provider deliveries built from tests/fixtures/webhooks."""

from __future__ import annotations

import copy
import hashlib
import hmac
import importlib
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shipledger.webhooks import Mapped, WebhookResult, dispatch

WEBHOOK_SECRET = "whsec-0123456789"
WEBHOOK_TENANT = "acme"
_FIXTURES = Path(__file__).parent.parent / "fixtures" / "webhooks"
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


def signed(provider: str, headers: dict[str, str], body: bytes, secret: str) -> dict[str, str]:
    """`headers` with the provider's authentication for `body` under `secret`."""
    out = dict(headers)
    if provider == "github":
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        out["X-Hub-Signature-256"] = f"sha256={digest}"
    elif provider == "gitlab":
        out["X-Gitlab-Token"] = secret
    else:
        out["X-Shipledger-Token"] = secret
    return out


def _request(
    provider: str, name: str, mutate: Mutate | None = None
) -> tuple[dict[str, str], bytes]:
    fixture = json.loads((_FIXTURES / provider / f"{name}.json").read_text())
    payload = copy.deepcopy(fixture["body"])
    if mutate is not None:
        mutate(payload)
    body = json.dumps(payload).encode()
    return signed(provider, fixture["headers"], body, WEBHOOK_SECRET), body


@pytest.fixture
def webhook_request() -> Callable[..., tuple[dict[str, str], bytes]]:
    """`(provider, fixture name, mutate=None) -> (signed headers, body)`."""
    return _request


@pytest.fixture
def sign() -> Callable[[str, dict[str, str], bytes, str], dict[str, str]]:
    """`(provider, headers, body, secret) -> headers` authenticated for that provider."""
    return signed


@pytest.fixture
def deliver() -> Callable[..., WebhookResult]:
    """`(provider, fixture name, mutate=None, **dispatch kwargs)`: dispatch the fixture."""

    def _deliver(
        provider: str, name: str, mutate: Mutate | None = None, **kwargs: Any
    ) -> WebhookResult:
        headers, body = _request(provider, name, mutate)
        kwargs.setdefault("secret", WEBHOOK_SECRET)
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
