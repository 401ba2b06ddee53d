"""Hostile input against the real ingest API (uvicorn on loopback, real Tansu, chDB ledger): every
bad input is a 4xx naming the field (or a per-line report for uploads), never a 500, a 503 or a
dropped connection, and nothing of a refused request reaches Kafka. Webhooks: authentication
before throttling, replays of captured bodies deduplicated by the provider's own ids."""

from __future__ import annotations

import copy
import json
import socket
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from shipledger.lag import end_offsets
from shipledger.processors.gate import Gatekeeper
from shipledger.producers.api.auth import AuthStore
from shipledger.producers.api.server import ApiServer
from shipledger.schemas.policy import load_policy
from shipledger.schemas.topics import Topics
from shipledger.settings import Settings
from shipledger.sinks.ledger.reader import LedgerReader
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.topics import ensure_topics
from tests.kit import LONG_TEST_TIMEOUT_S, SHA, api_event, own_settings
from tests.webhook_kit import RawRequest

pytestmark = pytest.mark.integration

TENANT = "acme"


@dataclass
class Api:
    """An API on loopback over the real broker and a chDB ledger, with tokens and secrets."""

    url: str
    settings: Settings
    token: str
    secret: str

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60
        )

    def published(self) -> int:
        """Messages in every topic an event can go to (their true end offsets)."""
        topics = Topics.from_settings(self.settings)
        names = [topics.raw, *(self.settings.topic(t) for t in ("changes", "source", "signals"))]
        names += [self.settings.topic(t) for t in ("artifacts", "catalog")]
        parts = [(n, p) for n in names for p in range(self.settings.topic_partitions)]
        conf = self.settings.kafka_common(self.settings.bootstrap_servers or "")
        return sum(marks.high for marks in end_offsets(conf, parts).values())


def _start(
    broker: str, tmp: Path, with_ledger: bool, **overrides: Any
) -> tuple[Settings, AuthStore, LedgerStore | None, ApiServer]:
    """Settings, token store, ledger (chDB opens one data dir per process: only one API of
    the module has it) and the API server, not yet started."""
    settings = own_settings(
        tmp,
        topic_partitions=1,
        bootstrap_servers=broker,
        api_upload_batch_lines=100,
        **overrides,
    )
    ensure_topics(settings, broker)
    store = LedgerStore.open(settings) if with_ledger else None
    if store is not None:
        store.ensure_schema()
    return (
        settings,
        AuthStore(settings.resolved_auth_db),
        store,
        ApiServer(
            settings,
            broker,
            None if store is None else LedgerReader(store),
            governance=None if store is None else Gatekeeper(load_policy(None)),
        ),
    )


@pytest.fixture(scope="module")
def api(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """Default limits but the rate (the fuzzing sends many requests with one token)."""
    settings, auth, store, server = _start(
        broker,
        tmp_path_factory.mktemp("hostile"),
        True,
        api_rate_per_s=100_000.0,
        api_rate_burst=100_000,
    )
    token, _ = auth.create_token(TENANT, ("ingest", "read", "admin"))
    secret = "whsec-" + uuid.uuid4().hex
    for provider in ("github", "gitlab", "argocd", "cdevents", "jenkins"):
        auth.set_webhook_secret(TENANT, provider, secret)
    try:
        with server:
            yield Api(server.url, settings, token, secret)
    finally:
        auth.close()
        assert store is not None
        store.close()


# --- finding 7: bad input is a 4xx naming the field -------------------------------------------
_DEEP = "[" * 100_000 + "]" * 100_000
HOSTILE_BODIES: list[tuple[str, str | bytes, int, str]] = [
    # (case, body, status, text the error must contain: the field and the reason)
    ("exit code over Avro int", json.dumps(api_event(exit_code=2**31)), 422, "exit_code"),
    ("duration over Avro long", json.dumps(api_event(duration_ms=2**63)), 422, "duration_ms"),
    ("5,000-digit integer", '{"exit_code": ' + "9" * 5000 + "}", 400, "5000 digits"),
    ("nested 100,000 deep", _DEEP, 400, "levels deep"),
    ("NaN", '{"exit_code": NaN}', 400, "NaN"),
    ("number overflowing to infinity", '{"duration_ms": 1e999}', 400, "out of range"),
    ("lone surrogate", '{"service": "\\udfff"}', 400, "service"),
    ("surrogate in a map key", '{"attributes": {"\\udfff": "x"}}', 400, "attributes"),
    ("invalid UTF-8", b'{"service": "\xff\xfe"}', 400, "not valid JSON"),
    ("control character in service", json.dumps(api_event(service="a\x00b")), 422, "service"),
    ("newline in environment", json.dumps(api_event(environment="prod\nx")), 422, "environment"),
    ("tab in tenant", json.dumps(api_event(tenant="ac\tme")), 422, "tenant"),
    ("blank tenant", json.dumps(api_event(tenant="")), 422, "tenant"),
    ("year 0001", json.dumps(api_event(occurred_at="0001-01-01T00:00:00Z")), 422, "occurred_at"),
    ("year 9999", json.dumps(api_event(occurred_at="9999-12-31T23:59:59Z")), 422, "occurred_at"),
    (
        "control character in a change's service list",
        json.dumps(
            {"family": "change", "change_id": "CHG1", "system": "snow", "state": "opened"}
            | {"services": ["ok", "bad\x1b[31m"]}
        ),
        422,
        "services.1",
    ),
    (
        "surrogate in a signal's title",
        '{"family": "signal", "kind": "alert_fired", "title": "\\ud800x"}',
        400,
        "title",
    ),
    (
        "a caller declaring its commit missing (only webhooks may)",
        json.dumps(api_event(missing_metadata=["commit_sha"], commit_sha=None)),
        422,
        "missing_metadata",
    ),
    (
        "a caller forging a verified approval (only POST /v1/approvals records one)",
        json.dumps(
            {"family": "change", "change_id": "CHG1", "system": "snow", "state": "approved"}
            | {
                "approvals": [
                    {
                        "approver": "mallory",
                        "decision": "approved",
                        "decided_at": "2026-11-25T09:00:00Z",
                        "groups": ["cab"],
                        "verified_by": "oidc:https://idp.example.org",
                    }
                ]
            }
        ),
        422,
        "verified approvals",
    ),
    (
        "event over 1 MB (Kafka's message size)",
        json.dumps(api_event(attributes={f"k{i}": "x" * 8000 for i in range(140)})),
        422,
        "over the limit of 524288",
    ),
]


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [pytest.param(b, s, n, id=case) for case, b, s, n in HOSTILE_BODIES],
)
def test_hostile_event_bodies_get_a_4xx_naming_the_field(
    api: Api, body: str | bytes, status: int, names: str
) -> None:
    before = api.published()
    with api.client() as client:
        answer = client.post(
            "/v1/events", content=body, headers={"Content-Type": "application/json"}
        )
    assert answer.status_code == status, answer.text
    text = answer.text  # ASCII-safe JSON whatever was echoed
    assert names in text, text
    assert api.published() == before


def test_ndjson_with_a_bad_line_after_600_good_ones_reports_how_far_it_got(api: Api) -> None:
    lines = [json.dumps(api_event()) for _ in range(600)]
    bad = [
        '{"deployment_id": "d", "exit_code": ' + "1" * 5000 + "}",
        '{"service": "\\udfff"}',
        json.dumps(api_event(duration_ms=2**63)),
        json.dumps(api_event(attributes={f"k{i}": "x" * 8000 for i in range(70)})),
    ]
    body = "\n".join([*lines, *bad, json.dumps(api_event())]) + "\n"
    before = api.published()
    with api.client() as client:
        answer = client.post(
            "/v1/uploads", content=body, headers={"Content-Type": "application/x-ndjson"}
        )
    assert answer.status_code == 207, answer.text
    report = answer.json()
    assert (report["records"], report["accepted"], report["rejected"]) == (605, 601, 4)
    assert [(e["line"], e["field"]) for e in report["errors"]] == [
        (601, "line"),
        (602, "service"),
        (603, "duration_ms"),
        (604, "event"),
    ]
    assert api.published() == before + 601


def test_csv_long_field_and_bare_cr_are_refused_per_line(api: Api) -> None:
    header = "deployment_id,event_type,service,environment,commit_sha,actor"
    good = f"d-{uuid.uuid4().hex[:8]},started,checkout,prod,{SHA},alice"
    long_field = f"d-long,started,{'x' * 131_073},prod,{SHA},alice"
    bare_cr = f"d-cr,started,check\rout,prod,{SHA},alice"
    body = "\n".join([header, good, long_field, bare_cr]) + "\n"
    with api.client() as client:
        answer = client.post("/v1/uploads", content=body, headers={"Content-Type": "text/csv"})
    assert answer.status_code == 207, answer.text
    report = answer.json()
    assert (report["accepted"], report["rejected"]) == (1, 2)
    reasons = {e["line"]: e["reason"] for e in report["errors"]}
    assert "not valid CSV" in reasons[3] or "longer than" in reasons[3]
    assert "control character" in reasons[4] or "not valid CSV" in reasons[4]


# --- findings 8 and 9: webhooks -------------------------------------------------------------
def test_missing_secret_is_401_like_a_wrong_one(
    api: Api, webhook_request: RawRequest, sign: Callable[..., dict[str, str]]
) -> None:
    headers, body = webhook_request("github", "deployment")
    headers = sign("github", headers, body, api.secret)
    with httpx.Client(base_url=api.url, timeout=30) as client:
        unknown = client.post("/v1/webhooks/github/no-such-tenant", content=body, headers=headers)
        wrong = client.post(
            f"/v1/webhooks/github/{TENANT}",
            content=body,
            headers=sign("github", headers, body, "not-the-secret-at-all"),
        )
    assert unknown.status_code == wrong.status_code == 401
    assert "no-such-tenant" not in unknown.text and "secret set" not in unknown.text
    assert unknown.json()["error"] == wrong.json()["error"]


def test_replayed_signed_body_under_a_new_delivery_id_has_the_same_event_ids(
    api: Api, webhook_request: RawRequest, sign: Callable[..., dict[str, str]]
) -> None:
    """The signature covers the body, not X-GitHub-Delivery: a replay must dedupe."""
    headers, body = webhook_request("github", "deployment_status_success")
    headers = sign("github", headers, body, api.secret)
    ids = []
    with httpx.Client(base_url=api.url, timeout=30) as client:
        for delivery in ("original", "replayed-with-a-new-delivery-id"):
            headers["X-GitHub-Delivery"] = delivery
            answer = client.post(f"/v1/webhooks/github/{TENANT}", content=body, headers=headers)
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["event_ids"])
    assert ids[0] == ids[1] and len(ids[0]) == 1


def test_a_tenant_holding_a_slash_receives_webhooks(
    api: Api, webhook_request: RawRequest, sign: Callable[..., dict[str, str]]
) -> None:
    """A tenant is any name, "/" included: its webhook URL was an unnamed 404."""
    tenant, secret = "team/payments", "whsec-" + uuid.uuid4().hex
    auth = AuthStore(api.settings.resolved_auth_db)
    try:
        auth.set_webhook_secret(tenant, "github", secret)
    finally:
        auth.close()
    headers, body = webhook_request("github", "deployment")
    with httpx.Client(base_url=api.url, timeout=30) as client:
        for url in ("/v1/webhooks/github/team/payments", "/v1/webhooks/github/team%2Fpayments"):
            headers["X-GitHub-Delivery"] = url
            answer = client.post(url, content=body, headers=sign("github", headers, body, secret))
            assert answer.status_code == 202, answer.text
        wrong = client.post(
            "/v1/webhooks/github/team/other",
            content=body,
            headers=sign("github", headers, body, secret),
        )
    assert wrong.status_code == 401, wrong.text


@pytest.fixture
def slow_api(broker: str, tmp_path: Path) -> Iterator[Api]:
    """An API whose rate allows 5 requests in a burst, then 1 per second."""
    settings, auth, _, server = _start(
        broker,
        tmp_path,
        False,
        api_rate_per_s=1.0,
        api_rate_burst=5,
        api_refused_rate_per_s=1.0,
        api_refused_rate_burst=5,
    )
    secret = "whsec-" + uuid.uuid4().hex
    auth.set_webhook_secret(TENANT, "github", secret)
    try:
        with server:
            yield Api(server.url, settings, "", secret)
    finally:
        auth.close()


def test_unsigned_flood_does_not_starve_signed_deliveries(
    slow_api: Api, webhook_request: RawRequest, sign: Callable[..., dict[str, str]]
) -> None:
    headers, body = webhook_request("github", "deployment")
    forged = sign("github", headers, body, "an-attacker-guess-0000")
    with httpx.Client(base_url=slow_api.url, timeout=30) as client:
        flood = [
            client.post(f"/v1/webhooks/github/{TENANT}", content=body, headers=forged).status_code
            for _ in range(40)
        ]
        assert set(flood) == {401, 429} and flood[:5] == [401] * 5  # throttled on their own
        signed = sign("github", headers, body, slow_api.secret)
        answer = client.post(f"/v1/webhooks/github/{TENANT}", content=body, headers=signed)
    assert answer.status_code == 202, answer.text


@pytest.fixture
def impatient_api(broker: str, tmp_path: Path) -> Iterator[Api]:
    """An API that waits 1 s for more of a request body."""
    settings, auth, _, server = _start(broker, tmp_path, False, api_body_idle_timeout_s=1.0)
    token, _ = auth.create_token(TENANT, ("ingest",))
    try:
        with server:
            yield Api(server.url, settings, token, "")
    finally:
        auth.close()


def _stall(url: str, request: bytes) -> bytes:
    """Send `request` (headers and the start of a body it declares longer) and wait, up to a
    deadline far beyond the API's, for what the API answers before the connection closes."""
    host, port = url.removeprefix("http://").split(":")
    answer = b""
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(request)
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def test_a_body_that_stops_arriving_is_a_408_not_a_connection_held_for_ever(
    impatient_api: Api,
) -> None:
    """Before any signature is checked, a webhook that declares 100 bytes and sends one held
    its connection (and a file descriptor) for ever: many such, and nobody can connect. An
    upload stalled after good lines: those are published, the report says so."""
    head = "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}\r\n"
    webhook = head.format(f"/v1/webhooks/github/{TENANT}", "application/json", 100, "") + "{"
    answer = _stall(impatient_api.url, webhook.encode())
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"SHIPLEDGER_API_BODY_IDLE_TIMEOUT_S" in answer
    # The connection is closed with the answer, not held for the keep-alive time (30 s).
    assert b"connection: close" in answer.lower()
    lines = "".join(json.dumps(api_event()) + "\n" for _ in range(150))
    auth = f"Authorization: Bearer {impatient_api.token}\r\n"
    upload = head.format("/v1/uploads", "application/x-ndjson", len(lines) + 100, auth) + lines
    before = impatient_api.published()
    answer = _stall(impatient_api.url, upload.encode())
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    report = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert (report["records"], report["accepted"]) == (150, 150), report
    assert impatient_api.published() == before + 150


# --- OpenAPI-driven fuzzing of every route (schemathesis) ---------------------------------
#: Examples per route and generation mode (positive: valid by the schema; negative: not).
#: Bounded so both fuzz tests take about 80 s on a 2-core machine; derandomized,
#: so every run sends the same inputs.
FUZZ_EXAMPLES = 70
_FUZZ_SETTINGS = hypothesis.settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    suppress_health_check=list(hypothesis.HealthCheck),
)
_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.mark.timeout(LONG_TEST_TIMEOUT_S)
def test_fuzz_every_route_no_5xx_and_documented_answers(api: Api) -> None:
    """Every operation of the served OpenAPI document, positive and negative cases, with a
    valid token: no 5xx, every status code documented, every body as documented."""
    with httpx.Client(base_url=api.url, timeout=30) as client:
        doc = client.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(doc)
    results = list(schema.get_all_operations())
    assert all(isinstance(result, Ok) for result in results), results  # the document is valid
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert {(op.method.upper(), op.path) for op in operations} == {
        (method.upper(), path) for path, item in doc["paths"].items() for method in item
    }
    auth = {"Authorization": f"Bearer {api.token}"}
    tried: Counter[str] = Counter()
    failures: list[str] = []
    with requests.Session() as session:
        for operation in operations:
            if operation.path == "/v1/stream":
                continue  # answers until the client leaves: tests/integration/test_dashboard.py
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @_FUZZ_SETTINGS
                @hypothesis.given(operation.as_strategy(generation_mode=mode))
                def fuzz(case: schemathesis.Case[Any]) -> None:
                    response = case.call(base_url=api.url, session=session, headers=auth)
                    tried[f"{response.status_code // 100}xx"] += 1
                    try:
                        case.validate_response(response, checks=_CHECKS, headers=auth)
                    except FailureGroup as group:
                        failures.extend(
                            f"{case.operation.label} -> {response.status_code}: {failure.title}: "
                            f"{failure.message[:300]} | {response.text[:200]}"
                            for failure in group.exceptions
                        )

                try:
                    fuzz()
                except hypothesis.errors.Unsatisfiable:
                    # No input of this route can break its schema (no parameters, or only
                    # free-form strings): there is no negative case to send.
                    assert mode is GenerationMode.NEGATIVE, operation.label
    print(f"fuzz: {sum(tried.values())} requests over {len(operations)} routes: {dict(tried)}")
    assert tried["5xx"] == 0 and not failures, "\n".join(sorted(set(failures))[:20])


_WEBHOOK_SAMPLES = {
    "github": "deployment_status_success",
    "gitlab": "deployment_success",
    "argocd": "sync_succeeded",
    "cdevents": "service_deployed_binary",
    "jenkins": "success",
}
_HOSTILE_VALUES: st.SearchStrategy[Any] = st.sampled_from(
    [
        "\udfff",
        "a\x00b",
        "prod\r\nX-Injected: 1",
        "x" * 9000,
        2**63,
        -(2**31) - 1,
        10**30,
        1e308,
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "",
        None,
        [],
        {},
        {"a": [[[[[]]]]]},
        "0" * 40,
    ]
)


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every value of a JSON document."""
    found = [path] if path else []
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else []
    )
    for key, value in items:
        found += _leaves(value, (*path, key))
    return found


@st.composite
def _hostile_delivery(draw: st.DrawFn) -> tuple[str, Callable[[dict[str, Any]], None]]:
    """A provider and an edit putting hostile values at some paths of its sample body."""
    provider = draw(st.sampled_from(sorted(_WEBHOOK_SAMPLES)))
    edits = draw(
        st.lists(st.tuples(st.integers(0, 10_000), _HOSTILE_VALUES), min_size=1, max_size=3)
    )

    def mutate(body: dict[str, Any]) -> None:
        for pick, value in edits:
            paths = _leaves(body)
            *parents, last = paths[pick % len(paths)]
            node = body
            for key in parents:
                node = node[key]
            node[last] = copy.deepcopy(value)  # never one list or dict in two places

    return provider, mutate


def test_fuzz_signed_webhooks_with_hostile_values(
    api: Api, webhook_request: RawRequest, sign: Callable[..., dict[str, str]]
) -> None:
    """Signed (so past authentication) provider payloads with hostile values put anywhere:
    202, 400 or 422, never 5xx."""
    statuses: Counter[int] = Counter()
    with httpx.Client(base_url=api.url, timeout=30) as client:

        @hypothesis.settings(_FUZZ_SETTINGS, max_examples=4 * FUZZ_EXAMPLES)
        @hypothesis.given(_hostile_delivery())
        def fuzz(delivery: tuple[str, Callable[[dict[str, Any]], None]]) -> None:
            provider, mutate = delivery
            headers, body = webhook_request(provider, _WEBHOOK_SAMPLES[provider], mutate)
            answer = client.post(
                f"/v1/webhooks/{provider}/{TENANT}",
                content=body,
                headers=sign(provider, headers, body, api.secret),
            )
            statuses[answer.status_code] += 1
            assert answer.status_code in (202, 400, 422), answer.text

        fuzz()
    print(f"signed webhook fuzz: {sum(statuses.values())} deliveries: {dict(statuses)}")
