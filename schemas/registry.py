"""Schema catalog and the one Avro codec (Confluent wire framing: magic 0 + 4-byte schema id).

The catalog (`catalog.yaml`) is the file-backed registry: stable ids for every schema version,
used when no registry URL is configured, and every topic (`TopicSpec`). Processes read it from
`catalog.json`, the same document as JSON (`shipledger schemas catalog` writes it from the YAML,
`shipledger schemas check` fails when it differs): JSON loads without PyYAML, whose import
alone was ~7 % of a `shipledger emit`. Decoding resolves the
writer's version to the newest reader version of the same schema (fastavro schema resolution),
so old producers keep working.

Which id frames a version, and which version an id names, is this process's `SchemaIds`: the
catalog's by default; a Confluent-compatible Schema Registry's once an entry point has called
`use_schema_registry(settings.schema_registry_url, ...)` (`schemas.confluent_ids`). Every codec
reads it at each call, so no produce or consume site knows which one is in force.
"""

from __future__ import annotations

import io
import json
import struct
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from shipledger.schemas.topic_spec import TopicSpec
from shipledger.startup import AVRO_CONTAINER_CODECS, without

with without(*AVRO_CONTAINER_CODECS):
    import fastavro

MAGIC = 0
_HEADER = struct.Struct(">bI")


class DecodeError(ValueError):
    """Bytes that are not a valid message of the expected schema. `field` names the culprit."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


class EncodeError(ValueError):
    """A value that does not fit its Avro schema."""


class RegistryUnavailable(RuntimeError):
    """The configured Schema Registry cannot answer (down, refusing, misconfigured). Not the
    message's fault: a consumer must stop and retry it, never dead-letter it."""


@dataclass(frozen=True)
class SchemaVersion:
    """One registered version of one schema."""

    id: int
    name: str
    version: int
    raw: dict[str, Any]
    parsed: Any


class Catalog:
    """All schema versions and topic descriptors, loaded once from the package."""

    def __init__(self, versions: list[SchemaVersion], topics: dict[str, TopicSpec]) -> None:
        self.by_id = {v.id: v for v in versions}
        self.topics = topics
        self._latest: dict[str, SchemaVersion] = {}
        for v in sorted(versions, key=lambda v: v.version):
            self._latest[v.name] = v

    def latest(self, name: str) -> SchemaVersion:
        """Newest version of the named schema (full name, e.g. io.shipledger.v1.Alert)."""
        try:
            return self._latest[name]
        except KeyError:
            raise KeyError(f"unknown schema {name!r}") from None

    def topic(self, name: str) -> TopicSpec:
        """The topic with logical name `name`; KeyError naming the known ones."""
        try:
            return self.topics[name]
        except KeyError:
            known = ", ".join(self.topics)
            raise KeyError(f"unknown topic {name!r}: the catalog has {known}") from None

    def versions(self, name: str) -> list[SchemaVersion]:
        """All versions of a schema, oldest first."""
        return sorted((v for v in self.by_id.values() if v.name == name), key=lambda v: v.version)


#: The catalog's source, as written, and the JSON every process reads (see the module docstring).
CATALOG_YAML = "catalog.yaml"
CATALOG_JSON = "catalog.json"
#: Where the catalog and its schema files are: beside this module (read as files, not through
#: importlib.resources, whose file reader imports zipfile into every `emit`).
_HERE = Path(__file__).parent


def catalog_json() -> str:
    """What `catalog.json` must hold: `catalog.yaml`'s document as JSON."""
    import yaml  # only to write or check catalog.json

    text = (_HERE / CATALOG_YAML).read_text(encoding="utf-8")
    return json.dumps(yaml.safe_load(text), indent=2) + "\n"


@cache
def catalog() -> Catalog:
    """The catalog shipped in this package (parsed once per process)."""
    doc = json.loads((_HERE / CATALOG_JSON).read_text(encoding="utf-8"))
    versions = []
    for entry in doc["schemas"]:
        raw = json.loads((_HERE / entry["file"]).read_text(encoding="utf-8"))
        full = f"{raw['namespace']}.{raw['name']}"
        if full != entry["name"]:
            raise ValueError(f"catalog entry {entry['id']} names {entry['name']}, file has {full}")
        versions.append(
            SchemaVersion(
                id=int(entry["id"]),
                name=full,
                version=int(entry["version"]),
                raw=raw,
                parsed=fastavro.parse_schema(raw),
            )
        )
    topics = {
        name: TopicSpec.model_validate({"name": name, **spec})
        for name, spec in doc["topics"].items()
    }
    return Catalog(versions, topics)


class SchemaIds(Protocol):
    """Which schema id frames each version, and which version each id names."""

    def writer_id(self, version: SchemaVersion) -> int:
        """The id to frame messages written with `version` (raises RegistryUnavailable)."""
        ...

    def writer(self, schema_id: int) -> SchemaVersion | None:
        """The schema version an id on the wire names, None if unknown (raises
        RegistryUnavailable)."""
        ...


class CatalogIds:
    """The catalog's own ids (the default: no registry configured)."""

    def __init__(self, cat: Catalog) -> None:
        self._catalog = cat

    def writer_id(self, version: SchemaVersion) -> int:
        """The catalog id of `version`."""
        return version.id

    def writer(self, schema_id: int) -> SchemaVersion | None:
        """The catalog's version with that id."""
        return self._catalog.by_id.get(schema_id)


_ids_lock = threading.Lock()
_ids: SchemaIds | None = None


def schema_ids() -> SchemaIds:
    """This process's schema ids (the catalog's until `bind_schema_ids`)."""
    global _ids
    ids = _ids  # read without the lock: this runs for every message
    if ids is None:
        with _ids_lock:
            ids = _ids
            if ids is None:
                ids = _ids = CatalogIds(catalog())
    return ids


def bind_schema_ids(ids: SchemaIds | None) -> None:
    """Make `ids` this process's schema ids (None: the catalog's again). Entry points call
    `schemas.confluent_ids.use_schema_registry` rather than this."""
    global _ids
    with _ids_lock:
        _ids = ids


#: Avro types that hold no record (a record nested anywhere needs fastavro's strict check).
_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})


def _flat(schema: Any) -> bool:
    """Whether `schema` (a field's type) can hold no record: primitives, enums, fixed, and
    arrays, maps and unions of them. A named reference counts as a record (not looked up)."""
    if isinstance(schema, str):
        return schema in _PRIMITIVES
    if isinstance(schema, list):
        return all(_flat(branch) for branch in schema)
    kind = schema.get("type")
    if kind in ("enum", "fixed"):
        return True
    if kind == "array":
        return _flat(schema["items"])
    if kind == "map":
        return _flat(schema["values"])
    return kind in _PRIMITIVES  # a logical type on a primitive (timestamp-millis...)


class AvroCodec:
    """Encode/decode one schema's records with Confluent framing, ids from `ids` (default:
    this process's `schema_ids()`, read at each call)."""

    def __init__(
        self, schema_name: str, cat: Catalog | None = None, ids: SchemaIds | None = None
    ) -> None:
        self._catalog = cat or catalog()
        self.writer = self._catalog.latest(schema_name)
        self._ids = ids if ids is not None or cat is None else CatalogIds(cat)
        fields = self.writer.parsed["fields"]
        #: The field names when no field can hold a record, else None (see `encode`).
        self._flat_fields = (
            frozenset(f["name"] for f in fields) if all(_flat(f["type"]) for f in fields) else None
        )

    def encode(self, record: dict[str, Any]) -> bytes:
        """Frame and serialize `record` with the newest version of the schema."""
        ids = self._ids or schema_ids()
        header = _HEADER.pack(MAGIC, ids.writer_id(self.writer))
        # fastavro's strict check (no field beyond the schema's, none without a default
        # missing) doubles its cost: a flat record of exactly the schema's fields passes it
        # by construction (a model's dump, every event). Any failure is written again strictly
        # below, which names the problem as ever.
        if record.keys() == self._flat_fields:
            try:
                return self._written(header, record, strict=False)
            except (ValueError, TypeError, KeyError, AttributeError):
                pass
        try:
            return self._written(header, record, strict=True)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise EncodeError(f"{self.writer.name}: {exc}") from exc

    def _written(self, header: bytes, record: dict[str, Any], *, strict: bool) -> bytes:
        buf = io.BytesIO()
        buf.write(header)
        fastavro.schemaless_writer(buf, self.writer.parsed, record, strict_allow_default=strict)
        return buf.getvalue()

    def decode(self, data: bytes | None) -> dict[str, Any]:
        """Parse framed bytes; raises DecodeError naming what is wrong."""
        if data is None or len(data) < _HEADER.size:
            raise DecodeError("message too short for Confluent framing (need magic + schema id)")
        magic, schema_id = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise DecodeError(f"unknown magic byte {magic} (expected {MAGIC}: Confluent framing)")
        writer = (self._ids or schema_ids()).writer(schema_id)
        if writer is None:
            raise DecodeError(f"unknown schema id {schema_id}")
        if writer.name != self.writer.name:
            raise DecodeError(
                f"schema id {schema_id} is {writer.name}, expected {self.writer.name}"
            )
        try:
            value = fastavro.schemaless_reader(
                io.BytesIO(data[_HEADER.size :]), writer.parsed, self.writer.parsed
            )
        except Exception as exc:  # fastavro raises many types on corrupt input
            raise DecodeError(f"corrupt Avro payload for {writer.name}: {exc}") from exc
        if not isinstance(value, dict):
            raise DecodeError(f"{writer.name} payload is not a record")
        return value


@cache  # a codec reads the schema ids at each call: one per topic serves every message
def topic_codec(name: str) -> AvroCodec:
    """The codec of catalog topic `name`'s value schema (`name` is the logical name)."""
    return AvroCodec(catalog().topic(name).schema_name)
