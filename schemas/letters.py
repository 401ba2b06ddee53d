"""The dead-letter contract: `DeadLetter`, the one type that writes and reads the headers every
dead letter carries, and the letter's stable id. Pure.

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
The escalator letters alerts the sink stored fine (it never letters one the sink rejects), so
their ids cannot meet; it letters an alert once, naming every receiver that refused it.

Nothing else builds or parses these headers: the processors, the sink and the escalator make
letters with `DeadLetter.rejecting`, the sink's ledger row and `shipledger dlq` read them with
`DeadLetter.read`, and `dlq replay` marks what it sends with `replay_headers`.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

_REASON = "reason"
_FIELD = "field"
_SOURCE_TOPIC = "source_topic"
_SOURCE_PARTITION = "source_partition"
_SOURCE_OFFSET = "source_offset"
_STAGE = "stage"
REPLAYED_FROM = "replayed_from"

_NAMESPACE = uuid.UUID("3c1f7b52-9a0e-4d6b-8f2a-6e5d4c3b2a19")

#: Who dead-letters: the processors (raw deployment events), the sink (any message that does
#: not fit its table) or the escalator (an alert it could not deliver to a receiver).
Stage = Literal["processors", "sink", "escalation"]
STAGES: tuple[Stage, ...] = ("processors", "sink", "escalation")

#: Kafka headers as producers take them.
Headers = list[tuple[str, str | bytes | None]]
#: Kafka headers as consumers (and the journal) give them: pairs or a mapping.
RawHeaders = Iterable[tuple[str, Any]] | Mapping[str, Any] | None


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


def header_text(raw: RawHeaders) -> dict[str, str]:
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


def replayed_from(raw: RawHeaders) -> str:
    """The letter a message was replayed from (`PARTITION:OFFSET`), or "" if it was not."""
    return header_text(raw).get(REPLAYED_FROM, "")


def replay_headers(origin: str) -> tuple[tuple[str, bytes], ...]:
    """The headers of a message `dlq replay` sends again from letter `origin` (its id)."""
    return ((REPLAYED_FROM, origin.encode()),)


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


@dataclass(frozen=True)
class DeadLetter:
    """What a dead letter's headers say: why the message was rejected (`reason`, `field`),
    where it was read (`source_*`; None when a header is missing or unreadable) and by whom
    (`stage`, as written: a letter made by hand may name none)."""

    reason: str
    field: str | None
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    stage: str
    replayed_from: str | None = None

    @classmethod
    def rejecting(
        cls,
        stage: Stage,
        reason: str,
        field: str | None,
        *,
        topic: str,
        partition: int,
        offset: int,
        headers: RawHeaders,
    ) -> DeadLetter:
        """The letter of a message `stage` rejects now; `headers` are the message's own (a
        replayed message's letter names its replay origin)."""
        return cls(
            reason=reason,
            field=field or None,
            source_topic=topic,
            source_partition=partition,
            source_offset=offset,
            stage=stage,
            replayed_from=replayed_from(headers) or None,
        )

    @classmethod
    def read(cls, raw: RawHeaders) -> DeadLetter:
        """The letter a DLQ message's headers describe (missing headers read as empty/None)."""
        headers = header_text(raw)
        return cls(
            reason=headers.get(_REASON, ""),
            field=headers.get(_FIELD) or None,
            source_topic=headers.get(_SOURCE_TOPIC) or None,
            source_partition=_int_or_none(headers.get(_SOURCE_PARTITION)),
            source_offset=_int_or_none(headers.get(_SOURCE_OFFSET)),
            stage=headers.get(_STAGE, ""),
            replayed_from=headers.get(REPLAYED_FROM) or None,
        )

    def headers(self) -> Headers:
        """The letter's Kafka headers (`replayed_from` only when the message had one)."""
        headers: Headers = [
            (_REASON, self.reason.encode()),
            (_FIELD, (self.field or "").encode()),
            (_SOURCE_TOPIC, (self.source_topic or "").encode()),
            (_SOURCE_PARTITION, _text(self.source_partition).encode()),
            (_SOURCE_OFFSET, _text(self.source_offset).encode()),
            (_STAGE, self.stage.encode()),
        ]
        if self.replayed_from:
            headers.append((REPLAYED_FROM, self.replayed_from.encode()))
        return headers

    def id(self, key: bytes | None, value: bytes | None) -> str:
        """The stable id of this letter of the message (`key`, `value`), see `letter_id`."""
        return letter_id(self.source_topic or "", key, value, self.replayed_from or "")

    @property
    def source(self) -> str:
        """`topic/partition/offset` where the original was read (`?` for an unknown part)."""
        parts = (self.source_topic, self.source_partition, self.source_offset)
        return "/".join("?" if part is None else str(part) for part in parts)


def _text(number: int | None) -> str:
    return "" if number is None else str(number)
