"""Schema ids from a Confluent-compatible Schema Registry (`SHIPLEDGER_SCHEMA_REGISTRY_URL`).

With a registry configured, every message is framed with the id the registry holds for its
writer's schema version under the topic's subject (TopicNameStrategy: `<topic>-value`), so
registry-aware consumers (kcat `-r`, ksqlDB, Kafka Connect's AvroConverter) decode our topics;
and an id a consumer does not know yet is looked up there (`GET /schemas/ids/{id}`), whoever
wrote it. Talks to the registry through `confluent_kafka.schema_registry.SchemaRegistryClient`.

- **Writing** a version: looked up under each subject of its topics (`POST /subjects/{s}`);
  if a subject lacks it, every version of the schema is registered there oldest first
  (`POST /subjects/{s}/versions`, idempotent), so the subject's version order is ours, as
  `shipledger schemas register` leaves it. Once per version and process.
- **Reading** an id: the registry's schema for it, matched to our version of the same
  canonical form (else read as a foreign writer schema, resolved to our reader by fastavro).
  An id the registry does not know is read as the catalog's (messages framed before the
  registry was configured); the registry is asked first because its ids may collide with
  the catalog's. Answers are kept for the process's life (a registry id never changes).
- A registry that cannot answer raises `RegistryUnavailable`: consumers stop and retry
  rather than dead-letter good messages.

`use_schema_registry` binds this (or the catalog) as the process's ids; entry points call it.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from shipledger.schemas.registry import (
    Catalog,
    RegistryUnavailable,
    SchemaVersion,
    bind_schema_ids,
    catalog,
)
from shipledger.startup import AVRO_CONTAINER_CODECS, without

with without(*AVRO_CONTAINER_CODECS):
    import fastavro
    from fastavro.schema import to_parsing_canonical_form

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

#: The registry's "not found" answers (subject, version or schema).
_NOT_FOUND = 404


def use_schema_registry(url: str | None, topic_prefix: str) -> None:
    """Frame and resolve this process's messages with the registry at `url` (None: the
    catalog's ids). Called once at every entry point, from the settings."""
    bind_schema_ids(None if url is None else RegistryIds(url, topic_prefix))


def subject(topic_prefix: str, topic: str) -> str:
    """The value subject of `topic` under TopicNameStrategy: `<full topic name>-value`."""
    return f"{topic_prefix}{topic}-value"


def _client(url: str) -> SchemaRegistryClient:
    try:
        from confluent_kafka.schema_registry import SchemaRegistryClient
    except ImportError as exc:
        raise RegistryUnavailable(
            f"SHIPLEDGER_SCHEMA_REGISTRY_URL is set but the registry client is not installed "
            f"({exc.name} missing): pip install 'shipledger[registry]'"
        ) from exc
    return SchemaRegistryClient({"url": url})


def _canonical(raw: Any) -> str:
    return str(to_parsing_canonical_form(raw))


class RegistryIds:
    """`SchemaIds` from a Confluent-compatible Schema Registry (thread-safe)."""

    def __init__(
        self,
        url: str,
        topic_prefix: str,
        cat: Catalog | None = None,
        client: SchemaRegistryClient | None = None,
    ) -> None:
        self.url = url
        self._prefix = topic_prefix
        self._catalog = cat or catalog()
        self._client = client or _client(url)
        self._lock = threading.Lock()
        self._ids: dict[tuple[str, int], int] = {}
        self._by_id: dict[int, SchemaVersion | None] = {}
        self._canonical = {_canonical(v.raw): v for v in self._catalog.by_id.values()}

    def writer_id(self, version: SchemaVersion) -> int:
        """The registry's id of `version` under its topics' subjects (looked up, registered
        with its older versions where missing)."""
        key = (version.name, version.version)
        found = self._ids.get(key)
        if found is not None:
            return found
        with self._lock:
            if key not in self._ids:
                self._ids[key] = self._resolve(version)
            return self._ids[key]

    def _resolve(self, version: SchemaVersion) -> int:
        subjects = [
            subject(self._prefix, topic.name)
            for topic in self._catalog.topics.values()
            if topic.value_schema == version.name
        ]
        if not subjects:
            raise RegistryUnavailable(f"{version.name}: no topic of the catalog carries it")
        # One global id per schema text: the same under every subject that carries it.
        schema_id = 0
        for name in subjects:
            found = self._lookup(name, version)
            if found is None:
                upto = [
                    v for v in self._catalog.versions(version.name) if v.version <= version.version
                ]
                found = [self._register(name, v) for v in upto][-1]  # oldest first
            schema_id = found
        self._by_id[schema_id] = _as(version, schema_id)
        return schema_id

    def _lookup(self, name: str, version: SchemaVersion) -> int | None:
        from confluent_kafka.schema_registry import Schema
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            found = self._client.lookup_schema(name, Schema(json.dumps(version.raw), "AVRO"))
        except SchemaRegistryError as exc:
            if exc.http_status_code == _NOT_FOUND:
                return None
            doing = f"looking up {version.name} v{version.version} in {name}"
            raise self._unavailable(doing, exc) from exc
        except Exception as exc:  # httpx raises many types when the registry is unreachable
            raise self._unavailable(f"looking up {version.name} in {name}", exc) from exc
        return int(found.schema_id) if found.schema_id is not None else None

    def _register(self, name: str, version: SchemaVersion) -> int:
        from confluent_kafka.schema_registry import Schema

        try:
            return int(self._client.register_schema(name, Schema(json.dumps(version.raw), "AVRO")))
        except Exception as exc:
            raise self._unavailable(
                f"registering {version.name} v{version.version} under {name}", exc
            ) from exc

    def writer(self, schema_id: int) -> SchemaVersion | None:
        """The version id `schema_id` names: the registry's schema, else the catalog's id."""
        if schema_id in self._by_id:
            return self._by_id[schema_id]
        with self._lock:
            if schema_id not in self._by_id:
                self._by_id[schema_id] = self._fetch(schema_id)
            return self._by_id[schema_id]

    def _fetch(self, schema_id: int) -> SchemaVersion | None:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            schema = self._client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == _NOT_FOUND:
                return self._catalog.by_id.get(schema_id)
            raise self._unavailable(f"fetching schema id {schema_id}", exc) from exc
        except Exception as exc:
            raise self._unavailable(f"fetching schema id {schema_id}", exc) from exc
        if schema.schema_type not in (None, "AVRO") or schema.schema_str is None:
            return None  # a JSON or Protobuf schema: no message of ours
        try:
            raw = json.loads(schema.schema_str)
            ours = self._canonical.get(_canonical(raw))
            if ours is not None:
                return _as(ours, schema_id)
            full = f"{raw['namespace']}.{raw['name']}" if "namespace" in raw else raw["name"]
            return SchemaVersion(schema_id, full, 0, raw, fastavro.parse_schema(raw))
        except (ValueError, KeyError, TypeError, fastavro.schema.SchemaParseException):
            return None

    def _unavailable(self, doing: str, exc: BaseException) -> RegistryUnavailable:
        parts = urlsplit(self.url)  # never the credentials a URL may carry
        where = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return RegistryUnavailable(f"schema registry {where}: {doing}: {exc}")


def _as(version: SchemaVersion, schema_id: int) -> SchemaVersion:
    """`version` under the registry's id."""
    return SchemaVersion(schema_id, version.name, version.version, version.raw, version.parsed)
