"""Typed reads from a provider's JSON: every failure is a WebhookPayloadError naming the field."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from types import UnionType
from typing import Any, TypeVar

from shipledger.producers.webhooks.result import WebhookPayloadError
from shipledger.schemas.models import is_full_sha, sha256_digest
from shipledger.schemas.untrusted import BadJSON, loads

JSONObject = dict[str, Any]
_T = TypeVar("_T")

_ZERO_SHA = re.compile(r"0{40}|0{64}")
#: Deployment ids are at most this long (DeploymentEvent.deployment_id).
MAX_ID = 128
# Forms providers use besides ISO-8601: GitLab's "2021-04-28 21:50:00 +0200" and "... UTC".
_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M:%S UTC")


def parse_object(body: bytes, what: str = "body") -> JSONObject:
    """The body as a JSON object (bounded: see `shipledger.schemas.untrusted`)."""
    try:
        data = loads(body, what)
    except BadJSON as exc:
        raise WebhookPayloadError(str(exc)) from None
    if not isinstance(data, dict):
        raise WebhookPayloadError(f"{what}: must be a JSON object, got {type(data).__name__}")
    return data


def _walk(data: JSONObject, path: str) -> Any:
    node: Any = data
    walked: list[str] = []
    for key in path.split("."):
        if not isinstance(node, dict):
            raise WebhookPayloadError(f"{'.'.join(walked)}: must be an object")
        walked.append(key)
        node = node.get(key)
        if node is None:
            return None
    return node


def required(value: _T | None, path: str, what: str = "field is missing") -> _T:
    """`value`, read at `path`; None is an error saying the `what` there is required."""
    if value is None:
        raise WebhookPayloadError(f"{path}: required {what}")
    return value


def _opt(data: JSONObject, path: str, kind: type | UnionType, what: str) -> Any:
    """The value at dotted `path`, None when absent or null; a value not of `kind` (never a
    bool) is an error saying it must be `what`."""
    value = _walk(data, path)
    if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
        raise WebhookPayloadError(f"{path}: must be {what}, got {type(value).__name__}")
    return value


def opt_obj(data: JSONObject, path: str) -> JSONObject | None:
    """The object at dotted `path`, or None when absent or null."""
    value: JSONObject | None = _opt(data, path, dict, "an object")
    return value


def obj(data: JSONObject, path: str) -> JSONObject:
    """The object at dotted `path`; missing is an error."""
    return required(opt_obj(data, path), path)


def objects(data: JSONObject, path: str) -> list[JSONObject]:
    """The non-empty array of objects at dotted `path`; anything else is an error naming it."""
    value = _walk(data, path)
    if not isinstance(value, list) or not value:
        raise WebhookPayloadError(f"{path}: must be a non-empty array of objects")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise WebhookPayloadError(f"{path}.{i}: must be an object, got {type(item).__name__}")
    return value


def opt_str(data: JSONObject, path: str) -> str | None:
    """The string at `path` stripped; absent, null or blank is None. Numbers are accepted."""
    value = _opt(data, path, str | int, "a string")
    return None if value is None else str(value).strip() or None


def req_str(data: JSONObject, path: str) -> str:
    """The non-blank string at `path`; missing is an error."""
    return required(opt_str(data, path), path, "field is missing or empty")


def opt_int(data: JSONObject, path: str) -> int | None:
    """The integer at `path` (a numeric string is accepted); absent or null is None."""
    value = _walk(data, path)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,18}", value.strip()):
        return int(value)
    raise WebhookPayloadError(f"{path}: must be an integer, got {value!r:.40}")


def is_zero_sha(value: str | None) -> bool:
    """Whether `value` is git's all-zero SHA (the 'before' of a new ref, 'after' of a deleted)."""
    return value is not None and _ZERO_SHA.fullmatch(value) is not None


def full_sha(value: str | None, path: str) -> str:
    """`value` as a lowercase full SHA; anything else is an error naming `path`."""
    value = required(value, path, "commit SHA is missing")
    if not is_full_sha(value):
        raise WebhookPayloadError(
            f"{path}: must be a full commit SHA (40 or 64 hex characters), got {value!r:.80}"
        )
    return value.lower()


def digest(value: str | None, path: str) -> str:
    """`value` as a `sha256:<64 hex>` digest (a bare 64-hex checksum gets the prefix);
    missing or anything else is an error naming `path`."""
    value = required(value, path, "digest is missing")
    try:
        return sha256_digest(value)
    except ValueError as exc:
        raise WebhookPayloadError(f"{path}: {exc}, got {value!r:.80}") from None


def parent_sha(value: str | None, path: str) -> str | None:
    """A push's `before`: None for a new ref (absent or all zeros), else a full SHA."""
    return None if value is None or is_zero_sha(value) else full_sha(value, path)


def timestamp(value: Any, path: str) -> str:
    """`value` (ISO-8601, GitLab's formats, or epoch seconds/millis) as ISO-8601 UTC."""
    try:
        if isinstance(value, int) and not isinstance(value, bool):
            # Epoch millis (Jenkins) are beyond 1e11; GitHub's pushed_at is seconds.
            when = datetime.fromtimestamp(value / 1000 if value > 10**11 else value, UTC)
        elif isinstance(value, str):
            when = _parse_time(value.strip())
        else:
            raise WebhookPayloadError(f"{path}: must be a timestamp, got {type(value).__name__}")
    except (ValueError, OverflowError, OSError):
        raise WebhookPayloadError(f"{path}: not a valid timestamp: {value!r:.60}") from None
    if when.tzinfo is None:
        raise WebhookPayloadError(f"{path}: timestamp needs a time zone: {value!r:.60}")
    return when.astimezone(UTC).isoformat()


def _parse_time(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    for fmt in _TIME_FORMATS:
        try:
            parsed = datetime.strptime(text, fmt)
        except ValueError:
            continue
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise ValueError(text)


def opt_timestamp(data: JSONObject, path: str) -> str | None:
    """The timestamp at `path` as ISO-8601 UTC, or None when absent, null or blank."""
    value = _walk(data, path)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return timestamp(value, path)


def req_timestamp(data: JSONObject, path: str) -> str:
    """The timestamp at `path` as ISO-8601 UTC; missing is an error."""
    return required(opt_timestamp(data, path), path, "timestamp is missing")


def millis_between(start: str, end: str) -> int:
    """Milliseconds from ISO timestamp `start` to `end` (as `timestamp` returns), at least 0."""
    delta = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    return max(0, int(delta.total_seconds() * 1000))


def bounded_id(*parts: str) -> str:
    """Join `parts` with ':'; an id over MAX_ID characters keeps its first part plus a hash."""
    joined = ":".join(parts)
    if len(joined) <= MAX_ID:
        return joined
    return f"{parts[0][:40]}:{hashlib.sha256(joined.encode()).hexdigest()[:64]}"


def last_segment(path: str) -> str:
    """'acme/payments' -> 'payments'; 'service/myapp' -> 'myapp'."""
    return path.rstrip("/").rsplit("/", 1)[-1] or path
