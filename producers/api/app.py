"""The ingest API's FastAPI app: `create_app(ctx)` wires the routes, errors and OpenAPI."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import TypeAdapter
from starlette.exceptions import HTTPException

from shipledger.producers.api import (
    approvals_route,
    artifacts_route,
    changes_route,
    gate_route,
    ingest,
    live_route,
    metrics_route,
    reads,
    suspects_route,
    verification_route,
    webhook_route,
)
from shipledger.producers.api.bodies import IngestBody
from shipledger.producers.api.context import ApiContext, ApiError, SafeJSONResponse
from shipledger.producers.api.limits import BodyDeadline, Stalled, TooLarge
from shipledger.sinks.ledger.reader import LedgerUnavailable

TITLE = "shipledger ingest API"
DESCRIPTION = """Publish deployment (and other family) events to the ledger.

Every `/v1` route but the webhooks takes `Authorization: Bearer <token>`; create a token with
`shipledger tokens create --tenant T --scope ingest`. A token acts only on its tenant (an
operator token of tenant `*` on all). Limits: body size and batch size (413), requests per
second per token (429 with Retry-After).
"""


def _error(exc: ApiError) -> SafeJSONResponse:
    return SafeJSONResponse({"error": exc.message, **exc.extra}, exc.status, headers=exc.headers)


async def _on_api_error(_request: Request, exc: Exception) -> SafeJSONResponse:
    assert isinstance(exc, ApiError)
    return _error(exc)


async def _on_too_large(_request: Request, exc: Exception) -> SafeJSONResponse:
    return _error(ApiError(413, str(exc)))


async def _on_stalled(_request: Request, exc: Exception) -> SafeJSONResponse:
    return _error(ApiError(408, str(exc)))


async def _on_ledger_unavailable(_request: Request, exc: Exception) -> SafeJSONResponse:
    # An API apart from the ledger (`ledger_link`): ClickHouse did not answer, try later.
    return _error(ApiError(503, f"the ledger is unavailable: {exc}", headers={"Retry-After": "5"}))


async def _on_http_error(_request: Request, exc: Exception) -> SafeJSONResponse:
    # FastAPI's own errors (a body it could not parse, an unknown route, a wrong method) in
    # the same shape as ours: {"error": ...}.
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers) if exc.headers else None
    return _error(ApiError(exc.status_code, str(exc.detail), headers=headers))


async def _on_bad_request(_request: Request, exc: Exception) -> SafeJSONResponse:
    assert isinstance(exc, RequestValidationError)
    reasons = "; ".join(
        f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
    )
    return _error(ApiError(400, reasons))


def create_app(ctx: ApiContext) -> FastAPI:
    """The app over `ctx` (a context without a bridge still serves the OpenAPI document)."""
    app = FastAPI(
        title=TITLE,
        description=DESCRIPTION,
        version="1",
        default_response_class=SafeJSONResponse,
    )
    app.state.ctx = ctx
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(TooLarge, _on_too_large)
    app.add_exception_handler(Stalled, _on_stalled)
    app.add_exception_handler(LedgerUnavailable, _on_ledger_unavailable)
    app.add_exception_handler(RequestValidationError, _on_bad_request)
    app.add_exception_handler(HTTPException, _on_http_error)
    app.add_middleware(BodyDeadline, idle_s=ctx.settings.api_body_idle_timeout_s)
    app.include_router(ingest.router)
    app.include_router(reads.router)
    app.include_router(webhook_route.router)
    app.include_router(gate_route.router)
    app.include_router(approvals_route.router)
    app.include_router(live_route.router)
    app.include_router(metrics_route.router)
    app.include_router(verification_route.router)
    app.include_router(changes_route.router)
    app.include_router(artifacts_route.router)
    app.include_router(suspects_route.router)

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        """200 while the process serves requests."""
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: the broker answers")
    async def readyz() -> SafeJSONResponse:
        """200 when the Kafka broker answers a metadata request, else 503 with why."""
        bridge = ctx.bridge
        problem = "no Kafka broker configured" if bridge is None else None
        if bridge is not None:
            problem = await run_in_threadpool(bridge.ready)
        if problem:
            return SafeJSONResponse({"status": "unready", "error": problem}, 503)
        return SafeJSONResponse({"status": "ready"})

    # Outside the OpenAPI document: Prometheus' text format, not a JSON route of the API.
    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        """The API's metrics in Prometheus' text format (no token: counts, no tenant data)."""
        return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, with the ingest body's schemas (the routes read their bodies
    themselves, streamed and size-capped, so FastAPI does not see them)."""
    doc = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    # FastAPI documents a 422 HTTPValidationError for parameter errors; ours answer 400 with a
    # Problem (`_on_bad_request`), which every route documents: drop the misleading entries.
    for item in doc["paths"].values():
        for operation in item.values():
            responses = operation.get("responses", {})
            if "HTTPValidationError" in json.dumps(responses.get("422", {})):
                del responses["422"]
    body = TypeAdapter(IngestBody).json_schema(ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = doc.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas.update(body.pop("$defs", {}))
    schemas["IngestBody"] = {
        **body,
        "title": "IngestBody",
        "description": 'One event, an array of events, or {"events": [...]}.',
    }
    return doc


def openapi_text(app: FastAPI) -> str:
    """The document as committed in docs/openapi.json (stable key order)."""
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"
