"""Shared fixtures: a real Tansu broker per session, settings isolated in a temp data dir."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from shipledger.schemas.models import Alert, DeploymentEvent, DeploymentRecord
from shipledger.schemas.registry import AvroCodec
from shipledger.settings import Settings
from shipledger.sinks import rows
from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.sinks.rows import Row
from shipledger.sinks.sink import ClickHouseSink
from shipledger.up.broker import EmbeddedBroker


@pytest.fixture(scope="session", autouse=True)
def stacks_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The registry of running stacks (`shipledger.stackfile`) of this session, not the
    user's: the stacks tests start never show up to the user's own commands, nor theirs here."""
    path = tmp_path_factory.mktemp("stacks")
    previous = os.environ.get("SHIPLEDGER_STACKS_DIR")
    os.environ["SHIPLEDGER_STACKS_DIR"] = str(path)
    yield path
    if previous is None:
        del os.environ["SHIPLEDGER_STACKS_DIR"]
    else:
        os.environ["SHIPLEDGER_STACKS_DIR"] = previous


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a real Tansu broker started for this test session."""
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with EmbeddedBroker(log_path=log) as b:
        yield b.bootstrap


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with a private data dir, a unique topic prefix and no real broker."""
    return Settings(
        data_dir=tmp_path / "data",
        # Unique per test: tmp_path names are truncated, so two tests can share a tail.
        topic_prefix=f"t{uuid.uuid4().hex[:12]}.",
        topic_partitions=2,
        emit_timeout_s=2.0,
    )


_CI_VARS = ("GITHUB_ACTIONS", "GITLAB_CI", "JENKINS_URL")
CliEnv = Callable[[Settings, str], dict[str, str]]


def _cli_env(settings: Settings, bootstrap: str) -> dict[str, str]:
    """This process's environment minus CI and SHIPLEDGER_* variables, plus test settings."""
    env = {
        k: v for k, v in os.environ.items() if k not in _CI_VARS and not k.startswith("SHIPLEDGER_")
    }
    env.update(
        {
            "SHIPLEDGER_STACKS_DIR": os.environ["SHIPLEDGER_STACKS_DIR"],
            "SHIPLEDGER_DATA_DIR": str(settings.data_dir),
            "SHIPLEDGER_TOPIC_PREFIX": settings.topic_prefix,
            "SHIPLEDGER_EMIT_TIMEOUT_S": str(settings.emit_timeout_s),
            "SHIPLEDGER_BOOTSTRAP_SERVERS": bootstrap,
            # Tests run side by side: never the fixed default port.
            "SHIPLEDGER_API_PORT": "0",
        }
    )
    return env


@pytest.fixture
def cli_env() -> CliEnv:
    """Builds the environment a CI job running `shipledger` against `bootstrap` would have."""
    return _cli_env


@pytest.fixture
def use_env(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, str]], None]:
    """Makes `env` this process's whole environment for the test (undone afterwards)."""

    def install(env: dict[str, str]) -> None:
        for key in list(os.environ):
            if key not in env:
                monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)

    return install


def consume(
    broker: str, topic: str, expected: int, settle_s: float = 0.5, timeout_s: float = 15.0
) -> list[tuple[bytes, DeploymentEvent, int]]:
    """(key, event, partition) of every message in `topic`, from the beginning.

    Waits for `expected` messages, then `settle_s` more to catch any unexpected extra ones.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": broker,
            "group.id": f"test-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "fetch.wait.max.ms": 10,
        }
    )
    codec = AvroCodec("io.shipledger.v1.DeploymentEvent")
    out: list[tuple[bytes, DeploymentEvent, int]] = []
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        deadline = time.monotonic() + timeout_s
        settle_until: float | None = None
        while time.monotonic() < (settle_until or deadline):
            msg = consumer.poll(0.05)
            if msg is None:
                if len(out) >= expected and settle_until is None:
                    settle_until = time.monotonic() + settle_s
                continue
            assert msg.error() is None, msg.error()
            key, value, partition = msg.key(), msg.value(), msg.partition()
            assert isinstance(key, bytes) and isinstance(value, bytes) and partition is not None
            out.append((key, DeploymentEvent.model_validate(codec.decode(value)), partition))
    finally:
        consumer.close()
    return out


#: The `consume` fixture: (broker, topic, expected, settle_s=, timeout_s=) -> messages.
Consume = Callable[..., list[tuple[bytes, DeploymentEvent, int]]]


@pytest.fixture(name="consume")
def consume_fixture() -> Consume:
    """Reads every deployment event of a topic from the beginning (see `consume`)."""
    return consume


_LEDGER_TENANTS = ("acme", "globex")
_LEDGER_AGES = ((1, 3), (200, 2))  # (days ago, rows per tenant)


def _ledger_rows(tenant: str, index: int, days_ago: int) -> tuple[Row, Row, Row]:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(days=days_ago, minutes=index)
    event = DeploymentEvent(
        deployment_id=f"{tenant}-dep-{days_ago}-{index}",
        event_type="succeeded",
        service=f"{tenant}-svc",
        environment="prod",
        tenant=tenant,
        commit_sha="0123456789abcdef0123456789abcdef01234567",
        actor="alice",
        occurred_at=at,
    )
    meta = rows.KafkaMeta("raw", 0, index, int(at.timestamp() * 1000))
    event_row = rows.event_row(event.to_avro(), meta)
    record = DeploymentRecord(
        record_id=event.event_id,
        deployment_id=event.deployment_id,
        seq=1,
        status="succeeded",
        kind="release",
        service=event.service,
        environment="prod",
        environment_raw="prod",
        tenant=tenant,
        commit_sha=event.commit_sha,
        actor="alice",
        trigger="automated",
        policy_version="p-1",
        started_at=at,
        event_count=1,
        last_event_id=event.event_id,
        last_event_type="succeeded",
        updated_at=at,
    )
    alert = Alert(
        alert_id=f"{event.event_id}:rule",
        rule="missing_change_ticket",
        severity="high",
        message="no change ticket",
        evidence={"environment": "prod"},
        policy_version="p-1",
        deployment_id=event.deployment_id,
        event_id=event.event_id,
        tenant=tenant,
        service=event.service,
        environment="prod",
        actor="alice",
        occurred_at=at,
        detected_at=at,
    )
    return event_row, rows.record_row(record.to_avro()), rows.alert_row(alert.to_avro())


def _seed_ledger(store: LedgerStore, settings: Settings) -> None:
    events, records, alerts = [], [], []
    for tenant in _LEDGER_TENANTS:
        for days_ago, count in _LEDGER_AGES:
            for index in range(count):
                event, record, alert = _ledger_rows(tenant, index, days_ago)
                events.append(event)
                records.append(record)
                alerts.append(alert)
    # Stored the way the sink stores rows (chain and retention columns stamped).
    sink = ClickHouseSink(settings, "unused:9092", store)
    sink.write_rows({ddl.EVENTS: events, ddl.RECORDS: records, ddl.ALERTS: alerts})


@pytest.fixture
def ledger(settings: Settings) -> Iterator[LedgerStore]:
    """A chDB ledger in the test's data dir; closed at teardown. Tenants acme and globex have
    5 events, 5 records (one per deployment) and 5 alerts each: 3 one day old, 2 200 days
    old (occurred_at / started_at)."""
    with LedgerStore.open(settings) as store:
        store.ensure_schema()
        _seed_ledger(store, settings)
        yield store


# --- webhook deliveries (tests/fixtures/webhooks: provider payloads from their docs) ----------
WEBHOOK_SECRET = "whsec-0123456789"
_WEBHOOK_FIXTURES = Path(__file__).parent / "fixtures" / "webhooks"
#: Edits a fixture's JSON body in place before it is signed.
Mutate = Callable[[dict[str, Any]], None]
#: The `webhook_request` fixture: (provider, fixture name, mutate=None) -> (headers, body).
WebhookRequest = Callable[..., tuple[dict[str, str], bytes]]


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


def _webhook_request(
    provider: str, name: str, mutate: Mutate | None = None
) -> tuple[dict[str, str], bytes]:
    fixture = json.loads((_WEBHOOK_FIXTURES / provider / f"{name}.json").read_text())
    payload = copy.deepcopy(fixture["body"])
    if mutate is not None:
        mutate(payload)
    body = json.dumps(payload).encode()
    return signed(provider, fixture["headers"], body, WEBHOOK_SECRET), body


@pytest.fixture
def webhook_request() -> WebhookRequest:
    """`(provider, fixture name, mutate=None) -> (headers, body)`, signed with
    `WEBHOOK_SECRET` the way the provider signs."""
    return _webhook_request


@pytest.fixture
def webhook_secret() -> str:
    """The secret `webhook_request` signs with."""
    return WEBHOOK_SECRET


@pytest.fixture
def sign() -> Callable[[str, dict[str, str], bytes, str], dict[str, str]]:
    """`(provider, headers, body, secret) -> headers` authenticated for that provider."""
    return signed
