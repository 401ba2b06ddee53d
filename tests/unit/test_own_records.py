"""A worker folds the records it sends into the anomaly join's recent deployments at once, and
its feed skips them when they come back from Kafka (named by the origin header `Outputs` sets);
records of any other worker (or of this worker's previous run) are still decoded and folded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shipledger import metrics as m
from shipledger.dlq_limit import DlqLimit, DlqLimitState
from shipledger.processors.feed import EnrichmentFeed
from shipledger.processors.handler import EventHandler
from shipledger.processors.outputs import Outputs, origin_header
from shipledger.processors.recent import Deployed
from shipledger.processors.state import DeploymentState
from shipledger.schemas.models import DeploymentRecord, utcnow
from shipledger.schemas.policy import load_policy
from shipledger.schemas.registry import topic_codec
from shipledger.schemas.topics import RECORDS, Topics
from shipledger.settings import Settings
from tests.kit import deployment_record, without_digest_rules
from tests.unit.test_handler import FakeMessage, FakeOutputs, FakeTable, event


@dataclass
class FakeKafkaMessage:
    """What the feed reads of a confluent-kafka message."""

    _topic: str
    _value: bytes
    _headers: list[tuple[str, bytes]] | None

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 3


class RecordingProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def produce(self, topic: str, value: bytes, key: bytes, **kwargs: Any) -> None:
        self.sent.append((topic, kwargs.get("headers")))


def record_message(topic: str, headers: list[tuple[str, bytes]] | None) -> Any:
    record = deployment_record(started_at=utcnow())
    return FakeKafkaMessage(topic, topic_codec(RECORDS).encode(record.to_avro()), headers)


def test_the_feed_skips_its_own_records_and_decodes_the_others() -> None:
    settings = Settings()
    records = Topics.from_settings(settings).records
    feed = EnrichmentFeed(settings, "127.0.0.1:1", origin="w1")
    feed._read_one(record_message(records, origin_header("w1")), set())
    assert feed.drain() == []
    for other in (origin_header("w0"), None):  # another worker's, or one without the header
        feed._read_one(record_message(records, other), set())
        assert [type(e) for e in feed.drain()] == [Deployed]


def test_a_feed_without_an_origin_decodes_every_record() -> None:
    settings = Settings()
    feed = EnrichmentFeed(settings, "127.0.0.1:1")
    records = Topics.from_settings(settings).records
    feed._read_one(record_message(records, origin_header("w1")), set())
    assert [type(e) for e in feed.drain()] == [Deployed]


def test_outputs_name_their_origin_on_records_only() -> None:
    settings = Settings()
    outputs = Outputs(settings, "127.0.0.1:1", m.RecordingMetrics(), origin="w1")
    producer = RecordingProducer()
    outputs._producer = producer  # type: ignore[assignment]
    record = deployment_record()
    outputs.send(outputs.encode(record, []))
    outputs.send([(outputs.topics.alerts, b"k", b"v")])
    assert producer.sent == [
        (outputs.topics.records, origin_header("w1")),
        (outputs.topics.alerts, None),
    ]


def test_the_handler_tells_of_every_record_it_sends() -> None:
    sent: list[DeploymentRecord] = []
    limit = DlqLimitState(DlqLimit.from_settings(Settings()), "processors")
    policy = without_digest_rules(load_policy(None))
    state = DeploymentState(FakeTable())
    handle = EventHandler(policy, state, FakeOutputs(), limit, sent=sent.append)
    handle.handle(FakeMessage(event("e1")))
    handle.handle(FakeMessage(event("e1")))  # a repeat sends no record
    handle.handle(FakeMessage(event("e2", "succeeded")))
    assert [(r.last_event_id, r.seq) for r in sent] == [("e1", 1), ("e2", 2)]
