"""The API's request and response bodies, as pydantic models (they make the OpenAPI document)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shipledger.schemas.models import DeploymentEvent

_EXAMPLE_EVENT: dict[str, Any] = {
    "event_id": "7d9c1a52-3b1e-4f0a-9d2c-1e5b6a7c8d90",
    "deployment_id": "checkout-2026-11-26-1",
    "event_type": "succeeded",
    "service": "checkout",
    "environment": "production",
    "commit_sha": "0123456789abcdef0123456789abcdef01234567",
    "actor": "alice",
    "occurred_at": "2026-11-26T10:00:00Z",
}


class EventIn(DeploymentEvent):
    """One event: its family's fields (here the default family's, `deployment`) plus `family`.

    Absent `tenant` is the token's; absent `occurred_at` is now; absent `event_id` is derived
    from the content (with `occurred_at`), so a retried body keeps its id.
    """

    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE_EVENT]})

    family: str = Field(
        default="deployment",
        description="Event family: deployment, change, source, artifact, signal, catalog.",
    )


class EventsEnvelope(BaseModel):
    """`{"events": [...]}`: the same as a bare array."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"events": [_EXAMPLE_EVENT, _EXAMPLE_EVENT]}]}
    )

    events: list[EventIn]


IngestBody = EventIn | list[EventIn] | EventsEnvelope


class Accepted(BaseModel):
    """Every event was acknowledged by Kafka (in the request's order)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"count": 1, "event_ids": [_EXAMPLE_EVENT["event_id"]]}]}
    )

    count: int
    event_ids: list[str]
    ignored: str | None = Field(
        default=None, description="Why a webhook delivery produced no events (it is counted)."
    )


class Problem(BaseModel):
    """An error: what went wrong, in words."""

    error: str


def problems(descriptions: Mapping[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for error statuses: each answers a Problem, described as given."""
    return {
        status: {"model": Problem, "description": text} for status, text in descriptions.items()
    }


#: What every route taking a bearer token can answer besides its own (OpenAPI `responses`).
TOKEN_ERRORS = problems(
    {
        400: "Malformed request (parameters or body).",
        401: "Missing, unknown, expired or revoked token.",
        403: "The token lacks the scope, or the tenant.",
        429: "Rate limit; see Retry-After.",
    }
)


def ledger_read_errors(descriptions: Mapping[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` of a route reading the ledger: TOKEN_ERRORS, the route's own
    `descriptions`, then 503 for an API started without a ledger store."""
    return {**TOKEN_ERRORS, **problems({**descriptions, 503: "This API has no ledger store."})}


class FieldProblem(BaseModel):
    """Why one event (by its index in the request) was refused."""

    index: int
    field: str
    reason: str


class Invalid(BaseModel):
    """Events refused (422: invalid; 403: another tenant's). Nothing of the request was
    published."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": "1 of 2 events invalid: nothing was published",
                    "errors": [
                        {
                            "index": 1,
                            "field": "commit_sha",
                            "reason": "must be a full commit SHA (40 hex characters, or 64 "
                            "for SHA-256) (got 'abc')",
                        }
                    ],
                }
            ]
        }
    )

    error: str
    errors: list[FieldProblem] = Field(default_factory=list)


class LineProblem(BaseModel):
    """Why one upload record (by the line it starts on) was refused."""

    line: int
    field: str
    reason: str


class UploadReport(BaseModel):
    """The result of an upload. Every record not listed in `errors` was published and
    acknowledged by Kafka (`accepted`). `errors` lists at most the first 1000 refusals."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "format": "ndjson",
                    "records": 3,
                    "accepted": 2,
                    "rejected": 1,
                    "errors": [{"line": 2, "field": "event_type", "reason": "Field required"}],
                    "errors_truncated": False,
                }
            ]
        }
    )

    format: str
    records: int = 0
    accepted: int = 0
    rejected: int = 0
    errors: list[LineProblem] = Field(default_factory=list)
    errors_truncated: bool = False
    error: str | None = Field(
        default=None, description="Why the upload stopped early (413, 408, 503); else absent."
    )
