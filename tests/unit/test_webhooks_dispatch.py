"""`dispatch` as a whole: providers, malformed bodies, deterministic ids, and a fuzz proving it
only ever returns a result or raises one of the two documented errors."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from shipledger.producers.webhooks import (
    PROVIDERS,
    WebhookAuthError,
    WebhookPayloadError,
    WebhookResult,
    dispatch,
    event_id,
)
from tests.webhook_kit import SECRET, RawRequest, Sign

_FIXTURES = Path(__file__).parent.parent / "fixtures" / "webhooks"
#: One authenticated fixture per provider whose body the malformed-body tests replace.
_SAMPLES = {
    "github": "deployment",
    "gitlab": "deployment_success",
    "argocd": "sync_succeeded",
    "cdevents": "service_deployed_binary",
    "jenkins": "success",
    "alertmanager": "firing",
    "datadog": "triggered",
    "checkly": "failure",
    "terraform": "plan_drift",
    "harbor": "delete_artifact",
    "artifactory": "docker_deleted",
    "pagerduty": "incident_triggered",
    "opsgenie": "create",
}


def test_unknown_provider() -> None:
    with pytest.raises(WebhookPayloadError, match="unknown webhook provider 'bitbucket'"):
        dispatch("bitbucket", {}, b"{}", secret=SECRET, tenant="acme")


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"[" * 100_000, "nested more than 64 levels deep"),
        (b'{"a": ' + b"1" * 5000 + b"}", "integer of 5000 digits is out of range"),
        (b'{"context": {"id": "\\udfff"}}', "lone surrogate"),
    ],
)
def test_malformed_body(
    webhook_request: RawRequest, sign: Sign, provider: str, body: bytes, message: str
) -> None:
    headers, _ = webhook_request(provider, _SAMPLES[provider])
    headers = sign(provider, headers, body, SECRET)
    with pytest.raises(WebhookPayloadError, match=message):
        dispatch(provider, headers, body, secret=SECRET, tenant="acme")


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_unauthenticated_body_is_not_read(webhook_request: RawRequest, provider: str) -> None:
    headers, body = webhook_request(provider, _SAMPLES[provider])
    # Signed or sent with its secret under another: refused, whatever the body holds.
    for sent in (body, b"{not json"):
        with pytest.raises(WebhookAuthError, match="does not match"):
            dispatch(provider, headers, sent, secret="another-secret", tenant="acme")
    # No secret configured: the same answer as a wrong one (the set-up is not revealed).
    with pytest.raises(WebhookAuthError, match="does not match"):
        dispatch(provider, headers, b"{}", secret="", tenant="acme")


@pytest.mark.parametrize(
    ("provider", "header", "error"),
    [
        ("github", "X-GitHub-Event", WebhookPayloadError),
        ("gitlab", "X-Gitlab-Token", WebhookAuthError),
        ("argocd", "X-Shipledger-Token", WebhookAuthError),
        ("jenkins", "X-Shipledger-Token", WebhookAuthError),
    ],
)
def test_a_missing_header_is_named(
    webhook_request: RawRequest, provider: str, header: str, error: type[Exception]
) -> None:
    headers, body = webhook_request(provider, _SAMPLES[provider])
    del headers[header]
    with pytest.raises(error, match=f"^missing {header} header"):
        dispatch(provider, headers, body, secret=SECRET, tenant="acme")


def test_event_ids_are_uuids_unique_per_index_tenant_provider_delivery() -> None:
    base = event_id("acme", "github", "d-1", 0)
    assert str(uuid.UUID(base)) == base
    assert base == event_id("acme", "github", "d-1", 0)
    others = {
        event_id("acme", "github", "d-1", 1),
        event_id("globex", "github", "d-1", 0),
        event_id("acme", "gitlab", "d-1", 0),
        event_id("acme", "github", "d-2", 0),
    }
    assert base not in others and len(others) == 4


def _fixture(provider: str, name: str) -> tuple[dict[str, str], Any]:
    data = json.loads((_FIXTURES / provider / f"{name}.json").read_text())
    return data["headers"], data["body"]


_ALL_FIXTURES = sorted(
    (p.parent.name, p.stem) for p in _FIXTURES.glob("*/*.json")
)  # (provider, fixture)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=50) | st.just("0" * 40)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside a JSON document."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _paths(value, (*prefix, i))
    return found


@st.composite
def _mutated_fixture(draw: st.DrawFn) -> tuple[str, dict[str, str], bytes]:
    """A real fixture with some values replaced, removed or retyped, correctly authenticated."""
    provider, name = draw(st.sampled_from(_ALL_FIXTURES))
    headers, body = _fixture(provider, name)
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(body)
        if not paths:
            break
        *parents, last = draw(st.sampled_from(paths))
        node = body
        for key in parents:
            node = node[key]
        if isinstance(node, dict) and draw(st.booleans()):
            del node[last]
        else:
            node[last] = draw(_scalars | _json)
    if draw(st.booleans()):
        header = draw(st.sampled_from(sorted(headers)))
        headers[header] = draw(st.text(max_size=30))
    raw = json.dumps(body).encode()
    return provider, headers, raw


_HEADER_VALUES = [
    "deployment",
    "deployment_status",
    "push",
    "Deployment Hook",
    "Push Hook",
    "1.0",
    "dev.cdevents.service.deployed.0.2.0",
    "application/cloudevents+json",
]
_DISPATCH_HEADERS = [
    "X-GitHub-Event",
    "X-Gitlab-Event",
    "ce-specversion",
    "ce-type",
    "ce-id",
    "ce-source",
    "Content-Type",
]


@st.composite
def _random_request(draw: st.DrawFn) -> tuple[str, dict[str, str], bytes]:
    """Random headers and bytes for a random provider (authenticated or not by the test)."""
    provider = draw(st.sampled_from(sorted(PROVIDERS)))
    body = draw(st.binary(max_size=200) | _json.map(lambda v: json.dumps(v).encode()))
    headers = draw(st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=5))
    for name in _DISPATCH_HEADERS:
        if draw(st.booleans()):
            headers[name] = draw(st.sampled_from(_HEADER_VALUES) | st.text(max_size=20))
    return provider, headers, body


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(request=_mutated_fixture() | _random_request(), authenticate=st.booleans())
def test_fuzz_only_documented_outcomes(
    sign: Sign, request: tuple[str, dict[str, str], bytes], authenticate: bool
) -> None:
    provider, headers, body = request
    if authenticate:
        headers = sign(provider, headers, body, SECRET)
    try:
        result = dispatch(provider, headers, body, secret=SECRET, tenant="acme")
    except (WebhookAuthError, WebhookPayloadError) as exc:
        assert str(exc)
        event(f"{provider}: {type(exc).__name__}")
        return
    assert isinstance(result, WebhookResult)
    event(f"{provider}: {'events' if result.events else 'ignored'}")
    assert (result.ignored is None) == bool(result.events)
    for mapped in result.events:
        assert mapped.event["tenant"] == "acme"
        assert mapped.event["source"] == f"webhook:{provider}"
