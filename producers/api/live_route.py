"""The live dashboard: the page (`GET /`, its assets under `/static/`), its live stream
(`GET /v1/stream`, Server-Sent Events), its first state (`GET /v1/dashboard/state`) and the
service map (`GET /v1/topology`).

The page and its assets are public (they hold no data); everything else takes a token with
the `read` scope as `Authorization: Bearer`, the page's too: it keeps the token the user
enters in the tab's sessionStorage and reads the stream with `fetch` (which, unlike
`EventSource`, can send that header), so a token never travels in a URL or a cookie. Every
event and row served passes the token's `Principal.sees`.

The stream depends on Kafka only, the state and the map on ClickHouse only: with the ledger
unreachable the stream goes on (state and map answer 503), with the broker unreachable the
state is served and the stream says since when it is stale (`status` events).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from shipledger.logging import get_logger
from shipledger.producers.api.auth import Principal
from shipledger.producers.api.bodies import TOKEN_ERRORS, problems
from shipledger.producers.api.context import ApiContext, ApiError, ContextDep, ReadPrincipal
from shipledger.producers.api.dashboard_state import Reads
from shipledger.producers.api.stream_events import HEARTBEAT, StreamFilter
from shipledger.producers.api.stream_hub import CLOSED, StreamHub, Subscription

router = APIRouter()
log = get_logger("api.live")

#: The page's files: name -> media type (nothing else under /static/ is served).
ASSETS = {
    "app.js": "text/javascript",
    "sse.js": "text/javascript",
    "topology.js": "text/javascript",
    "style.css": "text/css",
}
#: The page loads its own files only: no inline script, nothing from elsewhere.
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

_Filter = Annotated[str | None, Query(max_length=200)]


def _asset(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


@router.get("/", include_in_schema=False)
async def page() -> Response:
    """The dashboard page."""
    return Response(_asset("index.html"), media_type="text/html", headers=_HEADERS)


@router.get("/static/{name}", include_in_schema=False)
async def asset(name: str) -> Response:
    """One of the page's files."""
    media = ASSETS.get(name)
    if media is None:
        raise ApiError(404, f"no asset {name!r}")
    return Response(_asset(name), media_type=media, headers=_HEADERS)


def _wanted(
    team: _Filter = None, environment: _Filter = None, service: _Filter = None
) -> StreamFilter:
    """The team, environment and service the client asks for (blank or absent: any)."""
    return StreamFilter(team=team or None, environment=environment or None, service=service or None)


#: The query's `team`, `environment` and `service` filters, as one StreamFilter.
Wanted = Annotated[StreamFilter, Depends(_wanted)]


def _reads(ctx: ApiContext, principal: Principal) -> Reads:
    tenant = principal.own_tenant
    return Reads(
        ctx.require_ledger(),
        ctx.settings,
        tenant,
        principal,
        teams=frozenset(principal.teams),
        environments=frozenset(principal.environments),
    )


async def _read_ledger(what: str, call: Any, *args: Any) -> Any:
    """Run a ledger read off the event loop; 503 saying so when ClickHouse does not answer."""
    try:
        return await run_in_threadpool(call, *args)
    except ApiError:
        raise
    except Exception as exc:  # the server's or the client's error: the ledger is unreachable
        log.warning("dashboard_ledger_unreachable", what=what, error=str(exc)[:300])
        raise ApiError(503, f"the ledger did not answer ({what}): {str(exc)[:200]}") from exc


_READ_ERRORS = {
    **TOKEN_ERRORS,
    **problems({503: "This API has no ledger, or ClickHouse did not answer."}),
}


@router.get(
    "/v1/dashboard/state",
    responses=_READ_ERRORS,
    summary="The live dashboard's first state, from the ledger",
)
async def dashboard_state(
    ctx: ContextDep,
    principal: ReadPrincipal,
    wanted: Wanted,
) -> dict[str, Any]:
    """`current` (the latest deployment of each service in each environment), `timeline`
    (the newest deployment records) and `alerts` (open ones), newest first, as the token
    may see them and filtered by team, environment and service; plus `stream`, the live
    stream's status (`kafka`: `live`, or `down` with `since`, epoch seconds) and where to
    read it from: `last_event_id`, sent as `Last-Event-ID` to `GET /v1/stream`, replays
    every event the ledger may not hold yet (the sink is a moment behind the stream; some
    are in this state too: drop repeats by `deployment_id` and `seq`, or `alert_id`);
    `complete` is false when some of them are no longer kept for replay (read the state
    again in a moment, once the sink has stored them)."""
    hub = ctx.stream
    # Before the ledger read: an event stored meanwhile is replayed too, never skipped.
    position = hub.position() if hub is not None else None
    reads = _reads(ctx, principal)
    state: dict[str, Any] = await _read_ledger("state", reads.state, wanted)
    if hub is None or position is None:
        state["stream"] = {"kafka": "none"}
        return state
    if not position["complete"]:
        log.warning("dashboard_replay_incomplete", **position)
    state["stream"] = {**hub.status(), **position}
    return state


@router.get(
    "/v1/topology",
    responses=_READ_ERRORS,
    summary="The service map: dependencies from the catalog and each service's blast radius",
)
async def topology(
    ctx: ContextDep,
    principal: ReadPrincipal,
    team: _Filter = None,
    environment: _Filter = None,
) -> dict[str, Any]:
    """`nodes`: each service the token may see (from the catalog, and services seen only in
    deployments), with its `dependencies` (services it depends on) and `blast_radius`
    (every service that depends on it, directly or not: what a bad deployment of it can
    hurt). Overlay the `current` deployments and open `alerts` of the state route on it."""
    reads = _reads(ctx, principal)
    nodes = await _read_ledger("topology", reads.topology, _wanted(team, environment, None))
    return {"nodes": nodes}


async def _frames(hub: StreamHub, sub: Subscription, heartbeat_s: float) -> AsyncIterator[bytes]:
    """The client's frames as they come (what is queued at once written at once), a
    keep-alive comment when idle; ends when the hub closes or drops the client."""
    try:
        yield b"retry: 2000\n\n"
        while True:
            try:
                first = await asyncio.wait_for(sub.queue.get(), heartbeat_s)
            except TimeoutError:
                yield HEARTBEAT
                continue
            batch = [first]
            while not sub.queue.empty():
                batch.append(sub.queue.get_nowait())
            ended = CLOSED in batch
            yield b"".join(batch)
            if ended:
                return
    finally:
        hub.unsubscribe(sub)


@router.get(
    "/v1/stream",
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "Server-Sent Events: `deployment`, `alert`, `status`, `reset`, "
            "`dropped`.",
        },
        **TOKEN_ERRORS,
        **problems({503: "This API has no Kafka broker to stream from."}),
    },
    response_class=StreamingResponse,
    summary="Live deployments and alerts (Server-Sent Events)",
)
async def stream(
    ctx: ContextDep,
    principal: ReadPrincipal,
    wanted: Wanted,
    last_event_id: Annotated[str | None, Header(max_length=100)] = None,
) -> StreamingResponse:
    """Deployment records (`event: deployment`, the deployment's new state) and alerts
    (`event: alert`, every field of the alert; `kind` `resolution` closes the alert it
    `resolves`) as the pipeline
    writes them to Kafka, only those the token may see, filtered by team, environment and
    service. First a `status` event (`kafka`: `live`, or `down` with `since`), again on every
    change. Each event has an `id:`: reconnect with `Last-Event-ID` to get what was missed
    (or `reset`: reload the state). A client too slow to keep up gets `dropped` and the
    stream ends. Send the token as `Authorization: Bearer` (read it with `fetch`, or any SSE
    client that sets headers)."""
    hub = ctx.stream
    if hub is None:
        raise ApiError(503, "no Kafka broker configured for this API: nothing to stream")
    sub = hub.subscribe(principal, wanted, last_event_id)
    return StreamingResponse(
        _frames(hub, sub, ctx.settings.stream_heartbeat_s),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
