"""Routing by an event-type header, for providers that name the event in one (GitHub, GitLab)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from shipledger.producers.webhooks.payload import JSONObject, parse_object
from shipledger.producers.webhooks.result import Outcome, Parsed, Request, WebhookPayloadError

Mapper = Callable[[JSONObject, Request], Outcome]


def by_event_header(
    request: Request,
    *,
    provider: str,
    header: str,
    delivery_id: str | None,
    mappers: Mapping[str, Mapper],
) -> Parsed:
    """Map the body with the mapper `header` names; an unmapped event type is ignored."""
    event = request.headers.get(header)
    if event is None:
        raise WebhookPayloadError(f"missing {header} header")
    mapper = mappers.get(event)
    if mapper is None:
        return Parsed.of(event, delivery_id, f"{provider} event {event!r} is not recorded")
    return Parsed.of(event, delivery_id, mapper(parse_object(request.body), request))
