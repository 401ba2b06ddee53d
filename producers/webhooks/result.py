"""What `dispatch` returns and raises, and the request it hands to each provider's mapper."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: ``resolve_sha(repository, short_sha) -> full SHA or None``, supplied by the caller (the API
#: can back it with recent pushes) for providers that only send an abbreviated SHA.
ShaResolver = Callable[[str, str], "str | None"]


class WebhookAuthError(Exception):
    """The request is not authenticated: signature or token missing, wrong, or no secret set.

    The caller answers HTTP 401. The message says what is missing or wrong, never the secret.
    """


class WebhookPayloadError(Exception):
    """The request is authenticated but malformed: bad JSON, a required field missing or invalid.

    The caller answers HTTP 400. The message names the field and the reason.
    """


@dataclass(frozen=True)
class Mapped:
    """One contract event: `family` (deployment, source, ...) and the dict its model validates."""

    family: str
    event: dict[str, Any]


@dataclass(frozen=True)
class WebhookResult:
    """The outcome of one webhook delivery.

    `events` is empty exactly when `ignored` says why (unsupported event type, action or state);
    the caller counts ignored deliveries and answers 2xx so the provider does not retry them.
    """

    provider: str
    event_type: str
    delivery_id: str | None
    events: list[Mapped] = field(default_factory=list)
    ignored: str | None = None


class Headers:
    """Case-insensitive, read-only view of request headers."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._items = {str(k).lower(): str(v) for k, v in headers.items()}

    def get(self, name: str) -> str | None:
        """The header's value stripped, or None when absent or blank."""
        value = self._items.get(name.lower())
        if value is None or not value.strip():
            return None
        return value.strip()

    def as_dict(self) -> dict[str, str]:
        """Every header, names lower-cased."""
        return dict(self._items)


@dataclass(frozen=True)
class Request:
    """Everything a provider mapper may look at (no I/O: the resolver is the caller's)."""

    headers: Headers
    body: bytes
    secret: str | None
    received_at: datetime
    resolve_sha: ShaResolver | None = None


#: (family, fields) of one contract event.
Event = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class Identified:
    """A mapper's events with the provider's own id of what they describe, read from the
    authenticated body (a deployment status id, a deployment id and status, a CDEvent's
    context id...). Event ids derive from it, not from a delivery header: a captured body
    replayed under a new delivery id yields the same event ids, and the copy is dropped."""

    object_id: str
    events: list[Event]


@dataclass(frozen=True)
class Parsed:
    """A provider's reading of a delivery, before ids, tenant and source are filled in.

    `groups` holds each described object's events (one group per delivery, several for a
    batch of CloudEvents) in a stable order: the position is part of each event id.
    """

    event_type: str
    delivery_id: str | None
    groups: list[Identified] = field(default_factory=list)
    ignored: str | None = None

    @classmethod
    def of(cls, event_type: str, delivery_id: str | None, outcome: Outcome) -> Parsed:
        """From a mapper's outcome: its events, or (a string) why the delivery is ignored."""
        if isinstance(outcome, str):
            return cls(event_type=event_type, delivery_id=delivery_id, ignored=outcome)
        return cls(event_type=event_type, delivery_id=delivery_id, groups=[outcome])


#: What a mapper returns: its events and their object's id, or why it produced none.
Outcome = Identified | str
