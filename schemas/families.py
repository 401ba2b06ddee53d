"""The event families: logical name -> Avro schema, topic and pydantic model. Typical use:

from shipledger.schemas.families import family_of
fam = family_of("change")
event = fam.model.model_validate(payload)        # per-field errors
value = AvroCodec(fam.schema).encode(event.to_avro())
producer.produce(settings.topic(fam.topic), key=fam.key(event), value=value)
"""

from __future__ import annotations

from dataclasses import dataclass

from shipledger.schemas.family_models import (
    ArtifactEvent,
    CatalogEvent,
    ChangeEvent,
    SignalEvent,
    SourceEvent,
)
from shipledger.schemas.models import DeploymentEvent, Model
from shipledger.schemas.registry import catalog

_NS = "io.shipledger.v1"


class UnknownFamily(KeyError):
    """A family name that is not in `FAMILIES`; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Family:
    """One event family: its Avro schema's full name, its topic's logical name (full name:
    `settings.topic(topic)`) and the pydantic model validating it."""

    name: str
    schema: str
    topic: str
    model: type[Model]

    @property
    def key_field(self) -> str:
        """The field the topic is keyed by (from catalog.yaml), scoped by tenant in `key`."""
        return catalog().topics[self.topic].key

    def key(self, event: Model) -> bytes:
        """Kafka key: `tenant/<key field>` (`tenant/<event_id>` when the key field is empty).

        Every key carries the tenant: two tenants' events with the same natural id (a Jenkins
        `job:build`, a project path) are different things."""
        values = dict(event)
        return scoped_key(str(values["tenant"]), str(values[self.key_field] or values["event_id"]))


def scoped_key(tenant: str, natural: str) -> bytes:
    """The Kafka key of a tenant's object: `tenant/<natural id>` (records and alerts of a
    deployment use it too, so all of one deployment's messages share a partition)."""
    return f"{tenant}/{natural}".encode()


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("deployment", f"{_NS}.DeploymentEvent", "deployments.raw", DeploymentEvent),
        Family("change", f"{_NS}.ChangeEvent", "changes", ChangeEvent),
        Family("source", f"{_NS}.SourceEvent", "source", SourceEvent),
        Family("artifact", f"{_NS}.ArtifactEvent", "artifacts", ArtifactEvent),
        Family("signal", f"{_NS}.SignalEvent", "signals", SignalEvent),
        Family("catalog", f"{_NS}.CatalogEvent", "catalog", CatalogEvent),
    )
}
#: The deployment family, which the emitter, the processors and the benchmarks key by.
DEPLOYMENT = FAMILIES["deployment"]


def family_of(name: str) -> Family:
    """The family called `name`; UnknownFamily lists the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        known = ", ".join(FAMILIES)
        raise UnknownFamily(f"unknown event family {name!r}: known families are {known}") from None
