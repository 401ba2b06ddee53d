"""What every provider's mapping shares (pure): the refusal naming a field, the defaults the
command line gives for what an export does not carry, stable ids and provider timestamps.

A provider row becomes shipledger event objects (the objects `POST /v1/events` takes, with
`family`); validation is the ingest API's own (`producers.api.events.validated_event`)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_ID_NAMESPACE = uuid.UUID("3d0f2b8e-61c4-4e57-a4f1-7c2d9e8b5a13")
#: A timestamp that names its offset (`+02:00`, `-0500`).
_OFFSET = re.compile(r"T.*[+-]\d\d:?\d\d$")

EventObject = dict[str, Any]


class Refused(ValueError):
    """A row that cannot become events: the field at fault and why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Defaults:
    """What the command line fills in where an export has no column for it (`--environment`,
    `--service`, `--repository`); None: the row must carry it, or it is refused."""

    environment: str | None = None
    service: str | None = None
    repository: str | None = None


def stable_id(*parts: object) -> str:
    """A deterministic event id from a provider's own identifiers: the same row always makes
    the same id, so a second import of it is dropped by the ledger's dedup."""
    return str(uuid.uuid5(_ID_NAMESPACE, "\x1f".join(str(p) for p in parts)))


def text(row: Mapping[str, Any], name: str) -> str | None:
    """The row's non-blank value of `name` as text (numbers too: ids are often integers)."""
    value = row.get(name)
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def required(row: Mapping[str, Any], name: str, what: str = "") -> str:
    """`text(row, name)`, or Refused naming `name` (`what`: why the export should have it)."""
    value = text(row, name)
    if value is None:
        raise Refused(name, f"missing{what}")
    return value


def provider_time(row: Mapping[str, Any], name: str) -> str | None:
    """The row's timestamp `name` as ISO 8601 with its zone: BigQuery's `2024-05-01 10:00:00
    UTC`, DevLake's zone-less `2024-05-01 10:00:00.000` (stored in UTC) and GitHub's
    `2024-05-01T10:00:00Z` alike; None when absent."""
    value = text(row, name)
    if value is None:
        return None
    iso = value.replace(" ", "T", 1)
    if iso.endswith(" UTC"):
        return iso.removesuffix(" UTC") + "+00:00"
    if iso.endswith(("Z", "z")):
        return iso[:-1] + "+00:00"
    return iso if _OFFSET.search(iso) else iso + "+00:00"


def repository_name(url: str) -> str:
    """`owner/name` of a repository URL (`https://github.com/o/n.git`,
    `https://api.github.com/repos/o/n`); the text itself when it is no URL."""
    path = url.split("://", 1)[-1].rstrip("/").removesuffix(".git")
    parts = path.split("/")
    if len(parts) >= 3:
        return "/".join(parts[-2:])
    return url


def repository_of(row: Mapping[str, Any], name: str, defaults: Defaults) -> str | None:
    """`owner/name` of the repository URL at `name`, else `--repository` (None: neither)."""
    url = text(row, name)
    return repository_name(url) if url else defaults.repository


def attributes_of(row: Mapping[str, Any], provider: str, names: tuple[str, ...]) -> dict[str, str]:
    """`<provider>.<name>` of each of `names` the row has a value for (attributes hold no
    nulls)."""
    return {f"{provider}.{name}": value for name in names if (value := text(row, name)) is not None}


def service_of(repository: str | None, defaults: Defaults, field: str) -> str:
    """The service a provider row is about: `--service`, else its repository's name."""
    if defaults.service:
        return defaults.service
    if repository:
        return repository.rsplit("/", 1)[-1]
    raise Refused(field, "no repository to name the service after: give --service")
