"""Edge validation shared by the processors and the sink: bytes → a valid DeploymentEvent, or
`Rejected` naming the field and the reason (what goes into dead-letter headers)."""

from __future__ import annotations

from pydantic import ValidationError

from shipledger.schemas.models import DeploymentEvent
from shipledger.schemas.registry import AvroCodec, DecodeError, catalog
from shipledger.schemas.topics import RAW
from shipledger.schemas.untrusted import printable

#: Full name of the deployment event schema: the raw topic's value schema in the catalog.
EVENT_SCHEMA = catalog().topic(RAW).schema_name


class Rejected(ValueError):
    """A message the pipeline cannot accept; `reason` (and `field`) go to the DLQ headers."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


def field_errors(exc: ValidationError) -> list[tuple[str, str]]:
    """(field, reason) per pydantic error, the offending value quoted where it helps (cut
    short, control characters and surrogates escaped: the reason is safe to print)."""
    out = []
    for err in exc.errors():
        loc = ".".join(_part(part) for part in err["loc"]) or "event"
        reason = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        # Once: a validator's own message may already quote the value.
        if err["type"] != "missing" and err["loc"] and "(got " not in reason:
            if isinstance(value, str) and printable(value) not in reason:
                reason += f" (got {printable(value)})"
            elif isinstance(value, int):
                reason += f" (got {value})"
        out.append((loc, reason))
    return out


def settings_problems(exc: ValidationError) -> str:
    """Settings that do not validate, each named by its environment variable."""
    lines = (f"  SHIPLEDGER_{name.upper()}: {reason}" for name, reason in field_errors(exc))
    return "invalid setting(s):\n" + "\n".join(lines)


def _part(part: str | int) -> str:
    # A map key is user input: keep it readable but escaped and short.
    text = str(part)
    return text if text.isprintable() and len(text) <= 80 else printable(text)


def size_problem(encoded: bytes, limit: int) -> str | None:
    """Why an encoded event is too large to send (None when it fits): one Kafka would refuse
    on every retry (`Settings.max_event_bytes` stays below its message.max.bytes)."""
    if len(encoded) <= limit:
        return None
    return (
        f"encoded event is {len(encoded)} bytes, over the limit of {limit} "
        "(SHIPLEDGER_MAX_EVENT_BYTES): shorten its attributes or free-text fields"
    )


def validation_reason(exc: ValidationError) -> tuple[str, str | None]:
    """`field: reason; ...` from a pydantic error, and the first field named."""
    errors = field_errors(exc)
    return "; ".join(f"{f}: {r}" for f, r in errors), errors[0][0] if errors else None


def decode_event(codec: AvroCodec, data: bytes | None) -> DeploymentEvent:
    """Bytes → validated event, or Rejected naming the field and reason."""
    try:
        decoded = codec.decode(data)
    except DecodeError as exc:
        raise Rejected(exc.reason, exc.field) from exc
    try:
        return DeploymentEvent.model_validate(decoded)
    except ValidationError as exc:
        reason, field = validation_reason(exc)
        raise Rejected(reason, field) from exc
