"""From a request's JSON objects to encoded, keyed Kafka messages, or per-field errors (pure).

An object's fields are those of its family's model, plus an optional `family` (default
`deployment`). What the API fills in:

- `tenant`, when absent: the token's tenant (an operator token's `*` leaves the model default);
- `occurred_at`, when absent: now;
- `event_id`, when absent: derived from the object's content, `occurred_at` included (UUIDv5).
  So a retried body that names its `occurred_at` (or its `event_id` and `occurred_at`) carries
  the same id and time, and the sink drops the copy; a body without `occurred_at` is a new
  event each time it is sent.
- `source`, when the family's model has it and it is absent: the ingest channel (`api`,
  `upload`).

What it refuses, each as a FieldError naming the field: anything the family's model refuses
(with the settings' time window for `occurred_at`), an event whose encoded size is over
`Settings.max_event_bytes` (Kafka would refuse it on every retry), `missing_metadata`
from any channel but a webhook (API and upload callers can give the field itself), and a
verified approval from any channel but the approvals route (`claims_verification`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import ValidationError

from shipledger.producers.api.auth import ANY_TENANT, Principal
from shipledger.schemas.families import Family, UnknownFamily, family_of, scoped_key
from shipledger.schemas.family_models import APPROVAL_SOURCE
from shipledger.schemas.models import Alert, Model, TimeWindow, utcnow
from shipledger.schemas.registry import AvroCodec, EncodeError, topic_codec
from shipledger.schemas.topics import ALERTS
from shipledger.schemas.validation import field_errors, size_problem
from shipledger.settings import Settings

DEFAULT_FAMILY = "deployment"
_ID_NAMESPACE = uuid.UUID("0b7a4f0e-5d3c-4c1e-9a57-5f1d2e3c4b6a")


@cache
def _codec(schema: str) -> AvroCodec:
    return AvroCodec(schema)


@dataclass(frozen=True)
class FieldError:
    """One reason an input item was refused: which item, which field, why."""

    index: int
    field: str
    reason: str


@dataclass(frozen=True)
class Prepared:
    """A valid event, ready to produce."""

    event_id: str
    tenant: str
    topic: str
    key: bytes
    value: bytes
    #: The validated event (None: a message the API built itself, e.g. a gate decision).
    event: Model | None = None


class Forbidden(Exception):
    """An event for a tenant the token may not write (HTTP 403)."""

    def __init__(self, error: FieldError) -> None:
        super().__init__(error.reason)
        self.error = error


#: `json.dumps` with these options builds an encoder per call; one serves every event.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def derived_event_id(obj: dict[str, Any]) -> str:
    """A stable id from an object's content: the same object always gets the same id."""
    return str(uuid.uuid5(_ID_NAMESPACE, _CANONICAL.encode(obj)))


def validated_event(
    item: object,
    index: int,
    settings: Settings,
    channel: str,
    tenant: str | None,
    context: dict[str, Any] | None = None,
) -> tuple[Family, Model] | list[FieldError]:
    """One input object validated as its family's event (the module docstring says what is
    filled in and refused; `tenant`: the default tenant, None for the model's); or its field
    errors. The ingest API and `shipledger import` both validate through it. `context`:
    `validation_context(settings)` made once by a caller validating many (an import)."""
    found = _filled(item, index, channel, tenant)
    if isinstance(found, list):
        return found
    family, obj = found
    return _validated(family, obj, index, context or validation_context(settings))


def validation_context(settings: Settings) -> dict[str, Any]:
    """The models' validation context at an edge: the time window `settings` accept."""
    return {"time_window": TimeWindow.from_settings(settings)}


def _filled(
    item: object, index: int, channel: str, tenant: str | None
) -> tuple[Family, dict[str, Any]] | list[FieldError]:
    """An input object's family and its fields with the API's fill-ins, before its model
    validates them; or why it cannot be one (see `validated_event`)."""
    if not isinstance(item, dict):
        return [FieldError(index, "event", f"must be a JSON object, got {type(item).__name__}")]
    obj = dict(item)
    family_name = obj.pop("family", DEFAULT_FAMILY)
    if not isinstance(family_name, str):
        return [FieldError(index, "family", "must be a string")]
    try:
        family = family_of(family_name)
    except UnknownFamily as exc:
        return [FieldError(index, "family", str(exc))]
    if obj.get("missing_metadata") and not channel.startswith("webhook:"):
        return [
            FieldError(
                index,
                "missing_metadata",
                "only webhook mappings of third-party systems may declare fields missing: "
                "give the fields themselves",
            )
        ]
    if channel != APPROVAL_SOURCE and claims_verification(obj):
        return [
            FieldError(
                index,
                "approvals",
                "verified approvals (source approval, approvals with groups or verified_by) "
                "are recorded only by POST /v1/approvals, which verifies the approver",
            )
        ]
    if obj.get("tenant") is None and tenant is not None:
        obj["tenant"] = tenant
    # The class's own field map: `model_fields` is a deprecated property, read per event.
    if "source" in family.model.__pydantic_fields__ and obj.get("source") is None:
        obj["source"] = channel
    if obj.get("occurred_at") is None:
        obj["occurred_at"] = utcnow().isoformat()
    if obj.get("event_id") is None:
        obj["event_id"] = derived_event_id({"family": family.name, **obj})
    return family, obj


def _validated(
    family: Family, obj: dict[str, Any], index: int, context: dict[str, Any]
) -> tuple[Family, Model] | list[FieldError]:
    try:
        event = family.model.model_validate(obj, context=context)
    except ValidationError as exc:
        return [FieldError(index, field, reason) for field, reason in field_errors(exc)]
    return family, event


def _validated_all(
    items: Sequence[object], settings: Settings, channel: str, tenant: str | None
) -> list[tuple[Family, Model] | list[FieldError]]:
    """`validated_event` of each item, in order, the time window made once. One by one: each
    model's fast validator (`Model.model_validate`) costs less than pydantic's list validator
    of the models, which has none."""
    context = validation_context(settings)
    return [
        validated_event(item, index, settings, channel, tenant, context)
        for index, item in enumerate(items)
    ]


def prepare(
    item: object, index: int, principal: Principal, settings: Settings, channel: str
) -> Prepared | list[FieldError]:
    """Validate one input object as its family's event and encode it; or its field errors.

    Raises Forbidden for an event of another tenant than the token's.
    """
    validated = validated_event(item, index, settings, channel, _default_tenant(principal))
    if isinstance(validated, list):
        return validated
    return _encoded(*validated, index, principal, settings)


def prepare_many(
    items: Sequence[object], principal: Principal, settings: Settings, channel: str
) -> list[Prepared | list[FieldError] | Forbidden]:
    """`prepare` of each item, in order (a Forbidden returned, not raised)."""
    out: list[Prepared | list[FieldError] | Forbidden] = []
    validated_all = _validated_all(items, settings, channel, _default_tenant(principal))
    for index, validated in enumerate(validated_all):
        if isinstance(validated, list):
            out.append(validated)
            continue
        try:
            out.append(_encoded(*validated, index, principal, settings))
        except Forbidden as exc:
            out.append(exc)
    return out


def _default_tenant(principal: Principal) -> str | None:
    return None if principal.tenant == ANY_TENANT else principal.tenant


def _encoded(
    family: Family, event: Model, index: int, principal: Principal, settings: Settings
) -> Prepared | list[FieldError]:
    """A validated event encoded for its topic; its field errors; Forbidden (raised) for
    another tenant than the token's."""
    # The dict fastavro writes: the model's values as they are when nothing customises its
    # dump (a pydantic dump copied them all again, ~4 µs an event).
    record = event.to_avro()
    tenant = str(record["tenant"])
    if not principal.may_act_on(tenant):
        raise Forbidden(
            FieldError(
                index,
                "tenant",
                f"this token is for tenant {principal.tenant!r}, not {tenant!r}",
            )
        )
    try:
        value = _codec(family.schema).encode(record)
    except EncodeError as exc:  # the models carry the Avro bounds: a mismatch is named, not 500
        return [FieldError(index, "event", f"cannot be encoded: {exc}")]
    too_large = size_problem(value, settings.max_event_bytes)
    if too_large:
        return [FieldError(index, "event", too_large)]
    return Prepared(
        event_id=str(record["event_id"]),
        tenant=tenant,
        topic=settings.topic(family.topic),
        key=family.key(event),
        value=value,
        event=event,
    )


def message(
    settings: Settings, topic: str, event_id: str, tenant: str, keyed_by: str, event: Model
) -> Prepared:
    """A message the API builds itself (a gate decision, an alert) for logical `topic`,
    keyed like the topic's events by `tenant` and `keyed_by`."""
    return Prepared(
        event_id=event_id,
        tenant=tenant,
        topic=settings.topic(topic),
        key=scoped_key(tenant, keyed_by),
        value=topic_codec(topic).encode(event.to_avro()),
    )


def alert_messages(settings: Settings, alerts: Iterable[Alert]) -> list[Prepared]:
    """`alerts` as messages to the alerts topic (keyed by their deployment)."""
    return [
        message(settings, ALERTS, alert.alert_id, alert.tenant, alert.deployment_id, alert)
        for alert in alerts
    ]


def claims_verification(obj: dict[str, Any]) -> bool:
    """Whether an input object claims what only the approvals route may say: that it is a
    recorded approval, or that an approver was verified in groups by an identity provider."""
    if obj.get("source") == APPROVAL_SOURCE:
        return True
    approvals = obj.get("approvals")
    return isinstance(approvals, list) and any(
        isinstance(a, dict) and (a.get("groups") or a.get("verified_by")) for a in approvals
    )


def unwrap(payload: object) -> list[object] | None:
    """The event objects of a request body: an object, an array, or `{"events": [...]}`.

    None when the body has none of these shapes.
    """
    if isinstance(payload, list):
        return payload
    if isinstance(payload, dict):
        events = payload.get("events") if set(payload) == {"events"} else None
        if isinstance(events, list):
            return events
        return [payload]
    return None
