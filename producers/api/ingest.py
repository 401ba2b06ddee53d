"""`POST /v1/events` and `POST /v1/uploads`.

Events: all or nothing per request. Every event is validated first; if any is invalid (422)
or of another tenant (403), nothing is published. Otherwise all are produced and the answer,
202 with the ids, comes only once Kafka acknowledged every one. If Kafka does not (503), some
may have been written: retry the same body; the ids make the copies disappear downstream.

Uploads: per record. The file is streamed; valid records are published in batches of
`api_upload_batch_lines`, each acknowledged before the next is read. The report lists the
refused records by line. 200: all accepted; 207: some refused (the rest published); 422:
none accepted; 413/408/503: stopped early, the report says how far it got (what it counts as
accepted is acknowledged; re-uploading the file is safe when the records carry ids or times).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from shipledger import metrics as m
from shipledger.fields import picked
from shipledger.logging import get_logger
from shipledger.producers.api.auth import Principal
from shipledger.producers.api.bodies import (
    TOKEN_ERRORS,
    Accepted,
    Invalid,
    LineProblem,
    UploadReport,
    problems,
)
from shipledger.producers.api.bridge import PublishFailed
from shipledger.producers.api.context import (
    ApiContext,
    ApiError,
    ContextDep,
    IngestPrincipal,
    SafeJSONResponse,
)
from shipledger.producers.api.events import (
    FieldError,
    Forbidden,
    Prepared,
    prepare,
    prepare_many,
    unwrap,
)
from shipledger.producers.api.lifecycle import deletion_alerts
from shipledger.producers.api.limits import (
    Stalled,
    TooLarge,
    capped,
    check_declared_length,
    read_capped,
)
from shipledger.producers.api.uploads import BadFormat, records, upload_format
from shipledger.schemas.untrusted import BadJSON, loads

log = get_logger("api")
router = APIRouter(prefix="/v1")
MAX_REPORTED_ERRORS = 1000

_ERRORS = {
    **TOKEN_ERRORS,
    **problems(
        {
            400: "Body is not JSON (or out of bounds: huge numbers, deep nesting, invalid "
            "Unicode), or has no events.",
            413: "Body or batch over its limit.",
            503: "Kafka did not acknowledge every event: retry.",
        }
    ),
}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _upload_body() -> dict[str, Any]:
    ndjson = '{"deployment_id":"d1","event_type":"started","service":"checkout",...}\n'
    csv = "deployment_id,event_type,service,environment,commit_sha,actor\nd1,started,...\n"
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/x-ndjson": {"schema": {"type": "string"}, "example": ndjson},
                "text/csv": {"schema": {"type": "string"}, "example": csv},
            },
        }
    }


async def publish(ctx: ApiContext, events: list[Prepared]) -> None:
    """Publish and await the acks; 503 naming how many were acknowledged otherwise. A
    registry's deletion of an artifact still running raises its alert once published
    (`producers.api.lifecycle`)."""
    try:
        await ctx.require_bridge().publish(events)
    except PublishFailed as exc:
        raise ApiError(503, f"{exc.reason}; retrying the same request is safe") from exc
    count_published(ctx, events)
    alerts = await deletion_alerts(ctx, events)
    if alerts:
        await publish(ctx, alerts)


def count_published(ctx: ApiContext, events: list[Prepared]) -> None:
    """Count events Kafka acknowledged, by topic (`api.events_published`)."""
    for topic, count in Counter(event.topic for event in events).items():
        ctx.metrics.increment(m.API_EVENTS_PUBLISHED, count, tags={"topic": topic})


def prepare_all(
    ctx: ApiContext, items: list[object], principal: Principal, channel: str
) -> list[Prepared]:
    """Every item prepared, or 403 (another tenant's) / 422 (invalid) listing each problem."""
    prepared: list[Prepared] = []
    invalid: list[FieldError] = []
    forbidden: list[FieldError] = []
    for result in prepare_many(items, principal, ctx.settings, channel):
        if isinstance(result, Prepared):
            prepared.append(result)
        elif isinstance(result, Forbidden):
            forbidden.append(result.error)
        else:
            invalid.extend(result)
    if forbidden:
        raise ApiError(
            403,
            f"{len(forbidden)} of {len(items)} events belong to another tenant: "
            "nothing was published",
            {"errors": [vars(e) for e in forbidden]},
        )
    if invalid:
        bad = len({e.index for e in invalid})
        raise ApiError(
            422,
            f"{bad} of {len(items)} events invalid: nothing was published",
            {"errors": [vars(e) for e in invalid]},
        )
    return prepared


@router.post(
    "/events",
    status_code=202,
    response_model=Accepted,
    responses={**_ERRORS, 403: {"model": Invalid}, 422: {"model": Invalid}},
    openapi_extra=_json_body({"$ref": "#/components/schemas/IngestBody"}),
    summary="Publish events (all or nothing)",
)
async def post_events(
    request: Request,
    ctx: ContextDep,
    principal: IngestPrincipal,
) -> SafeJSONResponse:
    """Publish one event, an array of events, or `{"events": [...]}`.

    All or nothing: if any event is invalid (422) or another tenant's (403), none is
    published; each problem is listed with the event's index, the field and the reason.
    202 comes once Kafka acknowledged every event. Retrying a request is safe: the ids
    (given, or derived from the content) let the ledger drop the copies.
    """
    limit = ctx.settings.api_max_body_bytes
    check_declared_length(request.headers.get("content-length"), limit, "request body")
    body = await read_capped(request.stream(), limit, "request body")
    try:
        payload = loads(body, "request body")
    except BadJSON as exc:
        raise ApiError(400, str(exc)) from exc
    items = unwrap(payload)
    if not items:
        raise ApiError(400, 'no events: send an object, an array, or {"events": [...]}')
    if len(items) > ctx.settings.api_max_batch_events:
        raise ApiError(
            413,
            f"{len(items)} events in one request, over the limit of "
            f"{ctx.settings.api_max_batch_events}: split the batch",
        )
    prepared = prepare_all(ctx, items, principal, "api")
    await publish(ctx, prepared)
    log.info("events_accepted", count=len(prepared), tenant=principal.tenant)
    # A response, not the model: FastAPI would validate the returned model again (a tenth
    # of the route's CPU per event with a hundred ids).
    accepted = Accepted(count=len(prepared), event_ids=[p.event_id for p in prepared])
    return SafeJSONResponse(accepted.model_dump(mode="json"), 202)


class _Upload:
    """An upload's running report and its batch of prepared records."""

    def __init__(self, fmt: str) -> None:
        self.report = UploadReport(format=fmt)
        self.batch: list[Prepared] = []

    def refuse(self, line: int, field: str, reason: str) -> None:
        self.report.rejected += 1
        if len(self.report.errors) < MAX_REPORTED_ERRORS:
            self.report.errors.append(LineProblem(line=line, field=field, reason=reason))
        else:
            self.report.errors_truncated = True

    async def flush(self, ctx: ApiContext) -> None:
        if self.batch:
            await ctx.require_bridge().publish(self.batch)
            count_published(ctx, self.batch)
            self.report.accepted += len(self.batch)
            self.batch = []

    def answer(self, status: int, error: str | None = None) -> SafeJSONResponse:
        self.report.error = error
        return SafeJSONResponse(self.report.model_dump(mode="json", exclude_none=True), status)


@router.post(
    "/uploads",
    response_model=UploadReport,
    responses={
        **_ERRORS,
        207: {"model": UploadReport, "description": "Some records refused, the rest published."},
        **problems({415: "Unknown upload format."}),
        422: {"model": UploadReport, "description": "No record accepted."},
    },
    openapi_extra=_upload_body(),
    summary="Upload a file of events (NDJSON or CSV), streamed",
)
async def post_upload(
    request: Request,
    ctx: ContextDep,
    principal: IngestPrincipal,
    format: Annotated[
        str | None, Query(description="ndjson or csv; overrides the Content-Type.")
    ] = None,
) -> SafeJSONResponse:
    """Publish a backfill or a legacy system's export: one event per NDJSON line or CSV row.

    Streamed (the file is never held in memory); valid records are published in batches,
    each acknowledged by Kafka before more is read. Per record: the report lists every
    refused one by line, field and reason, and counts the accepted.
    """
    try:
        fmt = upload_format(format, request.headers.get("content-type"))
    except BadFormat as exc:
        raise ApiError(415, str(exc)) from exc
    limit = ctx.settings.api_max_upload_bytes
    check_declared_length(request.headers.get("content-length"), limit, "upload")
    ctx.require_bridge()
    upload = _Upload(fmt)
    chunks: AsyncIterator[bytes] = capped(request.stream(), limit, "upload")
    try:
        async for record in records(fmt, chunks):
            upload.report.records += 1
            if record.error is not None:
                upload.refuse(record.line, record.field, record.error)
                continue
            try:
                result = prepare(record.obj, record.line, principal, ctx.settings, "upload")
            except Forbidden as exc:
                upload.refuse(record.line, exc.error.field, exc.error.reason)
                continue
            if isinstance(result, Prepared):
                upload.batch.append(result)
                if len(upload.batch) >= ctx.settings.api_upload_batch_lines:
                    await upload.flush(ctx)
            else:
                for error in result:
                    upload.refuse(record.line, error.field, error.reason)
        await upload.flush(ctx)
    except TooLarge as exc:
        await upload.flush(ctx)
        return upload.answer(413, str(exc))
    except Stalled as exc:  # what arrived before is published: the report says how far
        await upload.flush(ctx)
        return upload.answer(408, str(exc))
    except PublishFailed as exc:
        return upload.answer(503, f"{exc.reason}; records after the last accepted one were not")
    report = upload.report
    log.info(
        "upload_done",
        tenant=principal.tenant,
        **picked(report, "records", "accepted", "rejected"),
    )
    status = 200 if not report.rejected else 207 if report.accepted else 422
    return upload.answer(status)
