"""The dead-letter contract: the headers every dead letter carries and its stable id. Pure.

A dead letter is the original message (key and value, untouched) on the DLQ topic, with
headers saying why it was rejected (`reason`, `field`), where it was read (`source_topic`,
`source_partition`, `source_offset`) and by whom (`stage`). A message sent again by
`shipledger dlq replay` carries `replayed_from=<partition>:<offset>` of its letter, and a
stage that rejects it again copies that header onto the new letter.

`letter_id` names a letter by what was rejected, not by where it sits in the DLQ topic: the
same message rejected again (a replay after a crash, a client's retry) gets the same id, so
the ledger's `dead_letters` table keeps it once. Each topic's rejects belong to one stage (the
processors for raw deployment events, the sink for everything else), so the stage is not
part of the id; a replayed letter rejected again is a new letter (its `replayed_from` is).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

REASON = "reason"
FIELD = "field"
SOURCE_TOPIC = "source_topic"
SOURCE_PARTITION = "source_partition"
SOURCE_OFFSET = "source_offset"
STAGE = "stage"
REPLAYED_FROM = "replayed_from"

_NAMESPACE = uuid.UUID("3c1f7b52-9a0e-4d6b-8f2a-6e5d4c3b2a19")

#: Kafka headers as producers take them.
Headers = list[tuple[str, str | bytes | None]]


def letter_id(source_topic: str, key: bytes | None, value: bytes | None, replayed_from: str) -> str:
    """The stable id of the letter made of this message (UUIDv5 over its topic, key, value and
    replay origin; `None` and empty bytes differ)."""
    digest = hashlib.sha256()
    for part in (source_topic.encode(), key, value, replayed_from.encode()):
        if part is None:
            digest.update(b"\xff")
        else:
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    return str(uuid.uuid5(_NAMESPACE, digest.hexdigest()))


def header_text(raw: Iterable[tuple[str, Any]] | Mapping[str, Any] | None) -> dict[str, str]:
    """Kafka headers (pairs or a mapping; values bytes, str or None) as text; undecodable bytes
    are replaced rather than failing, and a repeated header keeps its last value."""
    if not raw:
        return {}
    pairs: Iterable[tuple[str, Any]] = raw.items() if isinstance(raw, Mapping) else raw
    out: dict[str, str] = {}
    for key, value in pairs:
        if value is None:
            out[key] = ""
        elif isinstance(value, bytes | bytearray):
            out[key] = bytes(value).decode("utf-8", errors="replace")
        else:
            out[key] = str(value)
    return out


def letter_headers(
    *,
    reason: str,
    field: str | None,
    source_topic: str,
    source_partition: int,
    source_offset: int,
    stage: str,
    replayed_from: str = "",
) -> Headers:
    """The headers of a new dead letter (`replayed_from` only when the message had one)."""
    headers: Headers = [
        (REASON, reason.encode()),
        (FIELD, (field or "").encode()),
        (SOURCE_TOPIC, source_topic.encode()),
        (SOURCE_PARTITION, str(source_partition).encode()),
        (SOURCE_OFFSET, str(source_offset).encode()),
        (STAGE, stage.encode()),
    ]
    if replayed_from:
        headers.append((REPLAYED_FROM, replayed_from.encode()))
    return headers
