"""Routing by the event type a delivery names: in a header (GitHub, GitLab), or in a field of
its body (the incident and monitoring providers: one signal per delivery)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from shipledger.producers.webhooks.payload import JSONObject, parse_object, req_str
from shipledger.producers.webhooks.result import (
    Event,
    Identified,
    Outcome,
    Parsed,
    Request,
    WebhookPayloadError,
)

Mapper = Callable[[JSONObject, Request], Outcome]
KindT = TypeVar("KindT")


@dataclass(frozen=True)
class ByHeader:
    """How `provider`, which names a delivery's event type in the header `header`, is read:
    its delivery id is the first of `delivery_headers` it sends, its body is mapped by the
    mapper of its event type (a type `mappers` does not map is ignored)."""

    provider: str
    header: str
    delivery_headers: tuple[str, ...]
    mappers: Mapping[str, Mapper]

    def parse(self, request: Request) -> Parsed:
        """Map the body with the mapper the event header names."""
        event = request.headers.get(self.header)
        if event is None:
            raise WebhookPayloadError(f"missing {self.header} header")
        delivery_id = next(
            (found for name in self.delivery_headers if (found := request.headers.get(name))),
            None,
        )
        mapper = self.mappers.get(event)
        if mapper is None:
            return Parsed.of(event, delivery_id, f"{self.provider} event {event!r} is not recorded")
        return Parsed.of(event, delivery_id, mapper(parse_object(request.body), request))


@dataclass(frozen=True)
class Typed(Generic[KindT]):
    """A delivery whose type is one recorded: its provider, its body, the name of its type's
    field, its type, its id and the kind of event its type maps to."""

    provider: str
    data: JSONObject
    field: str
    event: str
    id: str
    kind: KindT

    def attributes(self, **more: str | None) -> dict[str, str | None]:
        """The signal's attributes: its type, then `more`, each as `<provider>.<name>`."""
        named = {self.field: self.event, **more}
        return {f"{self.provider}.{name}": value for name, value in named.items()}


@dataclass(frozen=True)
class ByField(Generic[KindT]):
    """How `provider`, which names a delivery's type in its body and sends one signal per
    delivery, is read: its type at `event_field` (a type `kinds` does not map is ignored),
    its id at `id_field`, which with the type names the signal's object through `identity`
    (`{id}`, `{event}`); `mapper` makes the signal."""

    provider: str
    event_field: str
    id_field: str
    identity: str
    kinds: Mapping[str, KindT]
    mapper: Callable[[Typed[KindT]], Event]

    def parse(self, request: Request) -> Parsed:
        """The delivery's one signal, or why it is not recorded."""
        data = parse_object(request.body)
        event = req_str(data, self.event_field)
        object_id = req_str(data, self.id_field)
        field = self.event_field.rsplit(".", 1)[-1]
        kind = self.kinds.get(event)
        if kind is None:
            # `event.event_type` is an "event type", `transition` a "transition".
            what = field.replace("_", " ")
            return Parsed.of(event, object_id, f"{what} {event!r} is not recorded")
        mapped = self.mapper(Typed(self.provider, data, field, event, object_id, kind))
        found = Identified(self.identity.format(id=object_id, event=event), [mapped])
        return Parsed.of(event, object_id, found)
