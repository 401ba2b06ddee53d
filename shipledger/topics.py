"""Topic names and creation: one place that knows every topic shipledger uses."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from shipledger.settings import Settings


@dataclass(frozen=True)
class Topics:
    """Full names of shipledger's topics under the configured prefix."""

    raw: str
    records: str
    alerts: str
    dlq: str
    changes: str
    source: str
    artifacts: str
    signals: str
    catalog: str
    #: The prefix every name starts with (`Settings.topic_prefix`).
    prefix: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> Topics:
        """Names under `settings.topic_prefix`."""
        return cls(
            raw=settings.topic("deployments.raw"),
            records=settings.topic("deployments.records"),
            alerts=settings.topic("alerts"),
            dlq=settings.topic("dlq"),
            changes=settings.topic("changes"),
            source=settings.topic("source"),
            artifacts=settings.topic("artifacts"),
            signals=settings.topic("signals"),
            catalog=settings.topic("catalog"),
            prefix=settings.topic_prefix,
        )

    def families(self) -> list[str]:
        """The topics of the event families beside deployments (the sink reads them alone)."""
        return [self.changes, self.source, self.artifacts, self.signals, self.catalog]

    def sunk(self) -> list[str]:
        """Every topic the sink reads into the ledger (dead letters too)."""
        return [self.raw, self.records, self.alerts, self.dlq, *self.families()]

    def schemas(self) -> dict[str, str]:
        """The value schema of every topic that has one (the DLQ holds other topics' bytes)."""
        from shipledger.schemas.registry import catalog

        cat = catalog()
        return {
            f"{self.prefix}{name}": topic.schema
            for name, topic in cat.topics.items()
            if topic.schema is not None
        }

    def all(self) -> list[str]:
        """Every topic, in pipeline order."""
        return [self.raw, self.records, self.alerts, self.dlq, *self.families()]


def ensure_topics(settings: Settings, bootstrap: str, timeout_s: float = 15.0) -> Topics:
    """Create shipledger's topics if missing (idempotent) and return their names."""
    topics = Topics.from_settings(settings)
    admin = AdminClient(settings.kafka_common(bootstrap))
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [
        NewTopic(name, num_partitions=settings.topic_partitions, replication_factor=1)
        for name in topics.all()
        if name not in existing
    ]
    if missing:
        for name, future in admin.create_topics(missing, request_timeout=timeout_s).items():
            try:
                future.result(timeout=timeout_s)
            except Exception as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise RuntimeError(f"could not create topic {name}: {exc}") from exc
    return topics
