"""The escalator's chain driven with hand-built alert messages, a fake consumer/producer and a
mock HTTP transport: outcomes published before the commit, nothing committed when Kafka
refuses them (and republished, not re-sent, next time), a dead letter after the attempts, a
delivery the ledger knows skipped. No broker, no receiver."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Message, TopicPartition
from pydantic import SecretStr

from shipledger import metrics as m
from shipledger.receivers.escalator import Escalator, EscalatorError
from shipledger.receivers.plan import outcome_id
from shipledger.receivers.receiver import delivery_id
from shipledger.receivers.record import DeliveryRecord
from shipledger.receivers.registry import policy_problems, targets
from shipledger.schemas.letters import DeadLetter
from shipledger.schemas.models import Alert
from shipledger.schemas.policy import Policy, parse_policy
from shipledger.schemas.registry import AvroCodec
from shipledger.schemas.topics import Topics
from shipledger.settings import Settings
from tests.kit import FakeProducer, sample_alert

POLICY = """\
version: pipe-1
escalation:
  receivers:
    snow: {type: servicenow, url: "https://snow.example", credentials: snow}
  routes:
    - {name: all, receivers: [snow]}
"""
ALERT = sample_alert(
    alert_id="alert-1",
    deployment_id="dep-1",
    tenant="retail",
    occurred_at=datetime(2026, 12, 22, 10, tzinfo=UTC),
)


class FakeConsumer:
    def __init__(self, log: list[str], batches: list[list[Message]], stop: threading.Event):
        self.log, self.batches, self.stop = log, batches, stop
        self.commits: list[list[tuple[str, int, int]]] = []
        self.topics: list[str] = []
        #: What the broker has fetched and not yet handed out; nothing while paused.
        self.fetched: list[Message] = []
        self.paused = False

    def subscribe(self, topics: list[str], **_: Any) -> None:
        self.topics = topics

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        taken, self.fetched = self.fetched[:num_messages], self.fetched[num_messages:]
        return taken

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(topic, 0) for topic in self.topics]  # none before subscribe

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused = True
        self.log.append("pause")

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused = False
        self.log.append("resume")

    def poll(self, timeout: float = -1) -> Message | None:
        """The next batch's first message (the rest is fetched for `consume`); once every
        batch is out, the escalator is stopped."""
        if self.paused:
            return None
        if not self.fetched:
            if not self.batches:
                self.stop.set()
                return None
            self.fetched = self.batches.pop(0)
        return self.fetched.pop(0) if self.fetched else None

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append([(tp.topic, tp.partition, tp.offset) for tp in offsets])
        self.log.append("commit")

    def close(self) -> None:
        pass


class FakeLedger:
    def __init__(self, stored: set[tuple[str, str]]) -> None:
        self.stored = stored

    def existing_ids(self, table: str, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        assert table == "escalations"
        return self.stored & set(keys)


class Harness(Escalator):
    """The real escalator with its Kafka and HTTP clients replaced."""

    consumer: FakeConsumer
    producer: FakeProducer
    transport: httpx.MockTransport

    def make_consumer(self) -> Any:
        return self.consumer

    def make_producer(self) -> Any:
        return self.producer

    def make_client(self) -> httpx.Client:
        return httpx.Client(transport=self.transport)


def escalator_settings(tmp_path: Path, attempts: int) -> Settings:
    """Settings of an escalator on fake Kafka (topic prefix p.) that makes `attempts` tries
    of a delivery, a millisecond apart."""
    return Settings(
        data_dir=tmp_path,
        topic_prefix="p.",
        escalation_attempts=attempts,
        escalation_backoff_s=0.001,
        escalation_backoff_max_s=0.001,
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return escalator_settings(tmp_path, attempts=2)


def policy() -> Policy:
    return parse_policy(POLICY, checks=[policy_problems])


def alert_message(topics: Topics, offset: int = 0) -> Message:
    value = AvroCodec("io.shipledger.v1.Alert").encode(ALERT.to_avro())
    return Message(
        topic=topics.alerts, partition=0, offset=offset, key=b"retail/dep-1", value=value
    )


def servicenow(log: list[str], status: int = 201) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        log.append(f"{request.method} snow")
        if request.method == "GET":
            return httpx.Response(200, json={"result": []})
        if status != 201:
            return httpx.Response(status, json={"error": "down"})
        return httpx.Response(201, json={"result": {"sys_id": "abc", "number": "INC0010001"}})

    return httpx.MockTransport(answer)


def run(
    settings: Settings,
    log: list[str],
    record: DeliveryRecord,
    *,
    status: int = 201,
    refuse: bool = False,
    ledger: FakeLedger | None = None,
) -> Harness:
    stop = threading.Event()
    loaded = policy()
    configured = targets(loaded, lambda _name: SecretStr("bot:pw"))
    harness = Harness(settings, "unused:9092", loaded, configured, record, ledger)
    harness.consumer = FakeConsumer(log, [[alert_message(harness.topics, offset=7)]], stop)
    harness.producer = FakeProducer(log, refuse=refuse)
    harness.transport = servicenow(log, status)
    harness.run(stop)
    return harness


def test_outcomes_are_acknowledged_before_the_commit(settings: Settings, tmp_path: Path) -> None:
    log: list[str] = []
    record = DeliveryRecord(tmp_path / "record.sqlite3")
    harness = run(settings, log, record)
    assert log == [
        "pause",
        "GET snow",  # the lookup by correlation_id
        "POST snow",
        "resume",
        "produce escalations",
        "acked",
        "commit",
    ]
    assert harness.consumer.commits == [[(harness.topics.alerts, 0, 8)]]
    (sent,) = harness.producer.sent
    row = AvroCodec("io.shipledger.v1.Escalation").decode(sent["value"])
    assert (row["status"], row["ticket_key"], row["alert_id"]) == (
        "delivered",
        "INC0010001",
        "alert-1",
    )
    assert sent["key"] == b"retail/alert-1"
    (state,) = record.states([delivery_id("retail", "alert-1", "snow")]).values()
    assert state.published


def test_outcomes_kafka_refused_are_published_again_never_sent_again(
    settings: Settings, tmp_path: Path
) -> None:
    log: list[str] = []
    record = DeliveryRecord(tmp_path / "record.sqlite3")
    with pytest.raises(EscalatorError, match="not committing"):
        run(settings, log, record, refuse=True)
    assert "commit" not in log and "POST snow" in log
    # Restarted: the record has the outcome; it is published again, nothing is sent.
    log.clear()
    harness = run(settings, log, record)
    assert log == ["produce escalations", "acked", "commit"]
    assert harness.metrics.total(m.ESCALATION_DELIVERED) == 0


def test_a_receiver_failing_every_attempt_dead_letters_the_alert(
    settings: Settings, tmp_path: Path
) -> None:
    log: list[str] = []
    harness = run(settings, log, DeliveryRecord(tmp_path / "record.sqlite3"), status=503)
    assert log.count("POST snow") == 2  # SHIPLEDGER_ESCALATION_ATTEMPTS
    outcome, letter = harness.producer.sent
    row = AvroCodec("io.shipledger.v1.Escalation").decode(outcome["value"])
    assert (row["status"], row["attempts"], row["http_status"]) == ("dead_lettered", 2, 503)
    assert letter["topic"] == harness.topics.dlq
    assert letter["value"] == alert_message(harness.topics).value()  # the alert, untouched
    headers = DeadLetter.read(letter["headers"])
    assert (headers.stage, headers.source_topic, headers.source_offset) == (
        "escalation",
        harness.topics.alerts,
        7,
    )
    assert headers.reason.startswith("escalation failed: snow: 2 attempt(s) failed")
    assert log[-1] == "commit"


def test_a_delivery_the_ledger_knows_is_not_sent(settings: Settings, tmp_path: Path) -> None:
    log: list[str] = []
    record = DeliveryRecord(tmp_path / "record.sqlite3")
    done = delivery_id("retail", "alert-1", "snow")
    ledger = FakeLedger({("retail", outcome_id(done, "delivered"))})
    harness = run(settings, log, record, ledger=ledger)
    assert log == ["commit"]
    assert harness.metrics.total(m.ESCALATION_SKIPPED) == 1
    assert record.states([done])[done].state == "delivered"  # learnt: no ledger read next time


class FakeBacklog:
    def __init__(self, alerts: list[Alert]) -> None:
        self.alerts = alerts
        self.asked: list[datetime] = []

    def alerts_detected_since(self, at: datetime) -> list[Alert]:
        self.asked.append(at)
        return [alert for alert in self.alerts if alert.detected_at >= at]


def test_the_start_catches_up_with_alerts_a_forgetful_broker_lost(
    settings: Settings, tmp_path: Path
) -> None:
    log: list[str] = []
    record = DeliveryRecord(tmp_path / "record.sqlite3")
    lost = ALERT.model_copy(update={"alert_id": "alert-lost", "detected_at": ALERT.detected_at})
    backlog = FakeBacklog([ALERT, lost])

    def start() -> Harness:
        stop = threading.Event()
        loaded = policy()
        configured = targets(loaded, lambda _name: SecretStr("bot:pw"))
        harness = Harness(settings, "unused:9092", loaded, configured, record, backlog=backlog)
        harness.consumer = FakeConsumer(log, [], stop)  # the broker forgot everything
        harness.producer = FakeProducer(log)
        harness.transport = servicenow(log)
        harness.run(stop)
        return harness

    # Never escalated anything: enabling escalation does not ticket the past, only what was
    # detected since it first started (a crash before its first commit lost that too).
    start()
    assert backlog.asked == [record.escalating_since()] and log == []
    # ALERT was escalated (and its batch committed) before the crash; alert-lost was not.
    run(settings, log, record)
    assert record.detected_through() == ALERT.detected_at
    log.clear()
    harness = start()
    assert backlog.asked[-1] == ALERT.detected_at - timedelta(seconds=3600)
    assert log.count("POST snow") == 1  # alert-lost only: ALERT is in the record
    (sent,) = harness.producer.sent
    assert (
        AvroCodec("io.shipledger.v1.Escalation").decode(sent["value"])["alert_id"] == "alert-lost"
    )
    assert harness.metrics.total(m.ESCALATION_SKIPPED) == 1
