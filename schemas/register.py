"""Register the catalog's schemas in a Confluent-compatible Schema Registry (REST API).

Subjects follow TopicNameStrategy: `<full topic name>-value`, one per topic that has a
schema. Each subject gets every version of its schema, oldest first, so the registry's
version order matches ours. The registry assigns its own global ids; where they differ from
the catalog's, messages framed with catalog ids (what shipledger writes without a registry)
name other schemas to registry-aware consumers: the report says so per version.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from shipledger.schemas.registry import Catalog, SchemaVersion

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryError(RuntimeError):
    """The registry refused a schema or could not be reached; the message says which and why."""


@dataclass(frozen=True)
class Planned:
    """One schema version to register under one subject."""

    subject: str
    schema: SchemaVersion


@dataclass(frozen=True)
class Registered:
    """What the registry answered for one planned version."""

    planned: Planned
    registry_id: int

    @property
    def differs(self) -> bool:
        """Whether the registry's id is not the catalog's."""
        return self.registry_id != self.planned.schema.id


def plan(cat: Catalog, topic_prefix: str) -> list[Planned]:
    """Every (subject, version) to register, in catalog topic order, versions oldest first."""
    out: list[Planned] = []
    for topic in cat.topics.values():
        if topic.value_schema is None:
            continue
        subject = f"{topic_prefix}{topic.name}-value"
        out.extend(Planned(subject, version) for version in cat.versions(topic.value_schema))
    return out


def _error_message(response: httpx.Response) -> str:
    """The registry's `message` (Confluent error body), or the raw text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300]
    if isinstance(body, dict) and "message" in body:
        return str(body["message"])
    return json.dumps(body)[:300]


def register_one(client: httpx.Client, item: Planned) -> Registered:
    """POST one version to `/subjects/{subject}/versions`; RegistryError on any failure."""
    label = f"{item.subject} ({item.schema.name} v{item.schema.version})"
    path = f"/subjects/{quote(item.subject, safe='')}/versions"
    body = {"schema": json.dumps(item.schema.raw), "schemaType": "AVRO"}
    try:
        response = client.post(path, json=body, headers={"Content-Type": CONTENT_TYPE})
    except httpx.HTTPError as exc:
        raise RegistryError(f"{label}: cannot reach the registry: {exc}") from exc
    if response.status_code == 409:
        raise RegistryError(
            f"{label}: the registry rejects it as incompatible with the subject's existing "
            f"versions (HTTP 409): {_error_message(response)}"
        )
    if response.status_code >= 400:
        raise RegistryError(
            f"{label}: HTTP {response.status_code} from the registry: {_error_message(response)}"
        )
    try:
        registry_id = int(response.json()["id"])
    except (ValueError, KeyError, TypeError) as exc:
        raise RegistryError(f"{label}: unexpected registry answer {response.text[:200]!r}") from exc
    return Registered(item, registry_id)


def register_all(
    base_url: str, items: list[Planned], timeout_s: float = 10.0
) -> Iterator[Registered]:
    """Register `items` in order, yielding each answer as it comes (so a caller can report
    what was registered before a failure); stops at the first RegistryError."""
    with httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s) as client:
        for item in items:
            yield register_one(client, item)
