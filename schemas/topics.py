"""Topic names: the catalog's topics (`catalog.yaml`) under the configured prefix.

The pipeline's code addresses six topics by their role (`RAW`, `RECORDS`, `ALERTS`,
`ESCALATIONS`, `GATE_DECISIONS`, `DLQ`); every other topic (the event families) only by its
catalog entry. Typical use:

from shipledger.schemas.topics import Topics
topics = Topics.from_settings(settings)
producer.produce(topics.raw, ...)            # shipledger.deployments.raw
consumer.subscribe(topics.sunk())           # every topic the sink stores
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

from shipledger.schemas.registry import catalog
from shipledger.schemas.topic_spec import TopicSpec

#: Logical names of the topics the pipeline's code addresses by role.
RAW = "deployments.raw"
RECORDS = "deployments.records"
ALERTS = "alerts"
ESCALATIONS = "escalations"
DLQ = "dlq"
GATE_DECISIONS = "gate.decisions"
#: The published policy (`shipledger policy push`), compacted: the latest per key.
POLICY = "policy"
#: Topics every processors worker reads whole into its enrichment view (`processors.feed`):
#: they are its changelog, so they keep every message (created with `retention.ms` -1).
ENRICHMENT = ("changes", "catalog", "artifacts")
#: Builds and registry deletions: a worker catches up with it before flagging an artifact.
ARTIFACTS = "artifacts"
#: Operations signals: the processors join its anomalies with recent deployments.
SIGNALS = "signals"


class Prefixed(Protocol):
    """What `Topics.from_settings` reads of the settings (`shipledger.settings.Settings`)."""

    @property
    def topic_prefix(self) -> str:
        """The prefix every topic name starts with."""
        ...


def _by_role(name: str, doc: str) -> cached_property[str]:
    """A `Topics` attribute: the full name of catalog topic `name` (`Topics.of`), once."""

    def full_name(topics: Topics) -> str:
        return topics.of(name)

    full_name.__doc__ = doc
    return cached_property(full_name)


@dataclass(frozen=True)
class Topics:
    """Full names of shipledger's topics under `prefix` (`Settings.topic_prefix`)."""

    prefix: str = ""

    @classmethod
    def from_settings(cls, settings: Prefixed) -> Topics:
        """Names under `settings.topic_prefix`."""
        return cls(prefix=settings.topic_prefix)

    def of(self, name: str) -> str:
        """Full name of the catalog topic `name`; KeyError naming the known ones."""
        return f"{self.prefix}{catalog().topic(name).name}"

    raw = _by_role(RAW, "Deployment events as CI/CD systems reported them.")
    records = _by_role(RECORDS, "The processors' deployment records.")
    alerts = _by_role(ALERTS, "The processors' policy findings.")
    escalations = _by_role(
        ESCALATIONS, "The escalator's outcome of each delivery of an alert to a receiver."
    )
    dlq = _by_role(DLQ, "Rejected messages (the dead-letter topic of the raw topic).")

    def specs(self) -> dict[str, TopicSpec]:
        """Every topic's catalog entry by full name, in catalog order."""
        return {f"{self.prefix}{name}": spec for name, spec in catalog().topics.items()}

    def all(self) -> list[str]:
        """Every topic, in catalog order."""
        return list(self.specs())

    def sunk(self) -> list[str]:
        """Every topic the sink reads into the ledger (dead letters too)."""
        return list(self.tables())

    def tables(self) -> dict[str, str]:
        """The ledger table of every topic the sink stores (dead letters too)."""
        return {name: spec.table.name for name, spec in self.specs().items() if spec.table}

    def schemas(self) -> dict[str, str]:
        """The value schema of every topic that has one (the DLQ holds other topics' bytes)."""
        return {
            name: spec.value_schema
            for name, spec in self.specs().items()
            if spec.value_schema is not None
        }
