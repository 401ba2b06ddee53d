"""Topic creation: every catalog topic (`shipledger.schemas.topics.Topics`) and the jobs' lease
topic on a broker, and `shipledger topics create`, which does only that (a deployment's
one-shot step)."""

from __future__ import annotations

import click
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from shipledger.schemas.topics import ENRICHMENT, POLICY, Topics
from shipledger.settings import Settings

#: The enrichment topics are the processors' view's changelog: never delete a message.
_KEEP_FOREVER = {"retention.ms": "-1"}
#: The policy topic keeps the latest policy per key, forever.
_COMPACTED = {"cleanup.policy": "compact"}
_DAY_MS = 86_400_000
#: The periodic jobs' lease (`shipledger.up.lease`), not a catalog topic: nothing is ever
#: written to it; its one partition is held by one member of the lease's group at a time.
JOBS_LEASE = "jobs.lease"


def lease_topic(settings: Settings) -> str:
    """Full name of the jobs' lease topic."""
    return settings.topic(JOBS_LEASE)


def ensure_topics(settings: Settings, bootstrap: str, timeout_s: float = 15.0) -> Topics:
    """Create shipledger's topics (the catalog's and the jobs' lease) if missing
    (idempotent) and return the catalog's names."""
    topics = Topics.from_settings(settings)
    configs = {topics.of(name): _KEEP_FOREVER for name in ENRICHMENT}
    configs[topics.of(POLICY)] = _COMPACTED
    # The embedded stack's restore writes back the ledger's letters of that age (`up.restore`).
    configs[topics.dlq] = {"retention.ms": str(settings.dlq_retention_days * _DAY_MS)}
    admin = AdminClient(settings.kafka_common(bootstrap))
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    # One partition: its holder is the one member running the jobs.
    partitions = dict.fromkeys(topics.all(), settings.topic_partitions) | {lease_topic(settings): 1}
    missing = [
        NewTopic(
            name,
            num_partitions=count,
            replication_factor=settings.topic_replication_factor,
            config=configs.get(name, {}),
        )
        for name, count in partitions.items()
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


@click.group("topics")
def topics_group() -> None:
    """shipledger's Kafka topics."""


@topics_group.command("create")
@click.option(
    "--bootstrap",
    envvar="SHIPLEDGER_BOOTSTRAP_SERVERS",
    required=True,
    help="Kafka bootstrap servers (also SHIPLEDGER_BOOTSTRAP_SERVERS).",
)
def create_topics(bootstrap: str) -> None:
    """Create every missing shipledger topic (the jobs' lease too), then exit (idempotent).

    \b
    SHIPLEDGER_TOPIC_PREFIX names them, SHIPLEDGER_TOPIC_PARTITIONS (4) and
    SHIPLEDGER_TOPIC_REPLICATION_FACTOR (1) shape new ones; existing topics are left as they
    are. The sink and `shipledger up` do the same at start; a deployment runs this first
    (deploy/compose, deploy/k8s), before the workers join.
      shipledger topics create --bootstrap kafka:9092
    """
    settings = Settings()
    try:
        topics = ensure_topics(settings, bootstrap)
    except (RuntimeError, KafkaException) as exc:
        raise click.ClickException(str(exc)) from exc
    for name in [*topics.all(), lease_topic(settings)]:
        click.echo(name)
