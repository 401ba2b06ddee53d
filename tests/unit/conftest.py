"""Fixtures of the webhook tests: provider deliveries built from tests/fixtures/webhooks."""

from __future__ import annotations

from typing import Any

import pytest

from shipledger.producers.webhooks import Mapped, WebhookResult, dispatch
from shipledger.schemas.families import family_of
from tests.webhook_kit import Check, Deliver, Mutate, RawRequest

WEBHOOK_TENANT = "acme"


@pytest.fixture
def deliver(webhook_request: RawRequest, webhook_secret: str) -> Deliver:
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
    """Validate one mapped event with its family's model and return the validated dict."""
    assert mapped.event["tenant"] == WEBHOOK_TENANT
    validated: dict[str, Any] = (
        family_of(mapped.family).model.model_validate(mapped.event).to_avro()
    )
    return validated


@pytest.fixture
def check_contract() -> Check:
    """Validate a mapped event against its family's contract; returns the validated fields."""
    return _check
