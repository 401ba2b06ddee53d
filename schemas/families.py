"""The event families: logical name -> Avro schema, topic and pydantic model, derived from the
catalog (every topic with a `family:`, in catalog order). Typical use:

from shipledger.schemas.families import family_of
fam = family_of("change")
event = fam.model.model_validate(payload)        # per-field errors
value = AvroCodec(fam.schema).encode(event.to_avro())
producer.produce(settings.topic(fam.topic), key=fam.key(event), value=value)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from shipledger.schemas.models import Model
from shipledger.schemas.registry import catalog
from shipledger.schemas.topic_spec import TopicSpec, load_model


class UnknownFamily(KeyError):
    """A family name that is not in `FAMILIES`; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Family:
    """One event family: its Avro schema's full name, its topic's logical name (full name:
    `settings.topic(topic)`), where its pydantic model is (`module:Class`, the catalog's
    `model:`; the class is `model`) and the field its topic is keyed by (scoped by tenant in
    `key`)."""

    name: str
    schema: str
    topic: str
    model_path: str
    key_field: str

    @classmethod
    def of_topic(cls, spec: TopicSpec) -> Family:
        """The family a catalog topic carries (its `family:` entry)."""
        if spec.family is None:
            raise ValueError(f"topic {spec.name!r} carries no event family")
        if spec.model is None:
            raise ValueError(f"topic {spec.name!r} names no model in the catalog")
        return cls(spec.family, spec.schema_name, spec.name, spec.model, spec.key)

    @cached_property
    def model(self) -> type[Model]:
        """The pydantic model validating the family, imported on first use: the emitter keys
        deployment events by `DEPLOYMENT` without loading every family's models."""
        return load_model(self.model_path)

    def key(self, event: Model) -> bytes:
        """Kafka key: `tenant/<key field>` (`tenant/<event_id>` when the key field is empty).

        Every key carries the tenant: two tenants' events with the same natural id (a Jenkins
        `job:build`, a project path) are different things."""
        # The model's own field dict, not a copy: `dict(event)` cost 6 us per event of the API.
        values = event.__dict__
        return scoped_key(str(values["tenant"]), str(values[self.key_field] or values["event_id"]))


def scoped_key(tenant: str, natural: str) -> bytes:
    """The Kafka key of a tenant's object: `tenant/<natural id>` (records and alerts of a
    deployment use it too, so all of one deployment's messages share a partition)."""
    return f"{tenant}/{natural}".encode()


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (Family.of_topic(t) for t in catalog().topics.values() if t.family)
}
#: The deployment family, which the emitter, the processors and the benchmarks key by.
DEPLOYMENT = FAMILIES["deployment"]


def family_of_topic(prefix: str, topic: str) -> Family | None:
    """The family carried by `topic` (a full name under topic prefix `prefix`), or None (a
    topic of derived messages: records, alerts)."""
    return next((f for f in FAMILIES.values() if f"{prefix}{f.topic}" == topic), None)


def family_of(name: str) -> Family:
    """The family called `name`; UnknownFamily lists the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        known = ", ".join(FAMILIES)
        raise UnknownFamily(f"unknown event family {name!r}: known families are {known}") from None
