"""The Kafka clients of a consume-then-produce loop (the sink, the escalator): one place says how
each builds its consumer and its producer, and where a test swaps them for hand-built fakes."""

from __future__ import annotations

from typing import Any, ClassVar

from confluent_kafka import Consumer

from shipledger.kafka import KafkaProducer
from shipledger.settings import Settings


class KafkaClients:
    """Builds the consumer and the producer of a loop, both named for its `role` (the group
    `<topic_prefix><role>` unless one is given, the client `shipledger-<role>`).
    Override `make_consumer`/`make_producer` in tests to drive the loop with fakes."""

    role: ClassVar[str]

    def __init__(self, settings: Settings, bootstrap: str, group_id: str | None = None) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.group_id = group_id or f"{settings.topic_prefix}{self.role}"

    def consumer_config(self) -> dict[str, Any]:
        """librdkafka consumer settings: manual commits, short fetch wait and session."""
        return self.settings.kafka_consumer(
            self.bootstrap, self.group_id, f"shipledger-{self.role}"
        )

    def make_consumer(self) -> Consumer:
        """A new consumer in the loop's group."""
        return Consumer(self.consumer_config())

    def make_producer(self) -> KafkaProducer:
        """The producer of the loop's outputs and dead letters."""
        return KafkaProducer(self.settings.kafka_producer(self.bootstrap))
