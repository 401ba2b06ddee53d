"""What the routes share (one per app), the error they raise, and the auth dependency."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shipledger.identities import KnownIdentities
from shipledger.metrics import RecordingMetrics
from shipledger.producers.api.auth import ANY_TENANT, AuthError, AuthStore, Principal
from shipledger.producers.api.limits import RateLimiter, retry_after
from shipledger.producers.api.query_slots import QuerySlots
from shipledger.producers.api.recent_commits import RecentCommits
from shipledger.producers.approvals.credentials import Authenticator
from shipledger.settings import Settings

if TYPE_CHECKING:
    from shipledger.producers.api.bridge import KafkaBridge
    from shipledger.producers.api.stream_hub import StreamHub
    from shipledger.schemas.governance import Governance
    from shipledger.schemas.residency import Residency
    from shipledger.sinks.ledger.reader import LedgerReads


class SafeJSONResponse(JSONResponse):
    """Every JSON answer of the API: ASCII-escaped, so a hostile string echoed in an error (a
    lone surrogate, a control character) is written as an escape instead of failing to encode
    (which was a 500)."""

    def render(self, content: Any) -> bytes:
        """The body: compact JSON, non-ASCII escaped, NaN refused."""
        return json.dumps(
            content, ensure_ascii=True, allow_nan=False, separators=(",", ":")
        ).encode("ascii")


class ApiError(Exception):
    """An HTTP error answered as `{"error": message, **extra}`."""

    def __init__(
        self,
        status: int,
        message: str,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra or {}
        self.headers = headers


@dataclass
class ApiContext:
    """The app's parts: settings, token store, Kafka bridge, ledger reads (inside `up`)."""

    settings: Settings
    auth: AuthStore
    bridge: KafkaBridge | None = None
    #: The ledger's read door, given by whoever owns the ledger (`up`); None: no reads here.
    ledger: LedgerReads | None = None
    #: The gate's and the approvals' judgement under the running policy, given by `up`.
    governance: Governance | None = None
    #: The live stream's one Kafka consumer (`GET /v1/stream`); None: no broker to read.
    stream: StreamHub | None = None
    #: Webhook deliveries per (tenant, provider, event type, outcome) since the app started.
    webhook_deliveries: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    #: Full SHAs of recent pushes and merges, to resolve a provider's abbreviated ones.
    recent_commits: RecentCommits = field(default_factory=RecentCommits)
    #: The API's metrics, served as `/metrics` (`shipledger.metrics`).
    metrics: RecordingMetrics = field(default_factory=RecordingMetrics)
    #: Which region's ledger holds each tenant's rows (docs/sovereignty.md), given by `up`;
    #: None: no tenant is refused for living elsewhere.
    residency: Residency | None = None

    def __post_init__(self) -> None:
        self.limiter = RateLimiter(self.settings.api_rate_per_s, self.settings.api_rate_burst)
        self.query_slots = QuerySlots(
            self.settings.query_max_concurrent_per_token, self.settings.query_max_concurrent
        )
        #: Webhook requests refused authentication, per client address and provider: apart
        #: from `limiter`, so they cannot spend the rate of authenticated deliveries.
        self.refused_limiter = RateLimiter(
            self.settings.api_refused_rate_per_s, self.settings.api_refused_rate_burst
        )
        #: Who approvers are (OIDC, LDAP), as the settings configure: checked at start.
        self.authenticator = Authenticator.from_settings(self.settings)
        #: Which manual deployers the directory knows (the gate); None: no directory to ask.
        self.identities = KnownIdentities.from_settings(self.settings)

    def require_bridge(self) -> KafkaBridge:
        """The Kafka bridge; 503 when this app has none."""
        if self.bridge is None:
            raise ApiError(503, "no Kafka broker configured for this API")
        return self.bridge

    def require_ledger(self) -> LedgerReads:
        """The ledger's reads; 503 when this app has none (only the API inside `up`, or one
        given a ClickHouse server, can read the ledger)."""
        if self.ledger is None:
            raise ApiError(503, "reads need the ledger: use the API of `shipledger up`")
        return self.ledger

    def require_governance(self) -> tuple[Governance, LedgerReads]:
        """The gate's judgement and the ledger it reads; 503 when this app has either not
        (the API of `shipledger up` has both)."""
        if self.governance is None or self.ledger is None:
            raise ApiError(
                503,
                "the gate and approvals need the policy and the ledger: use the API of "
                "`shipledger up`",
            )
        return self.governance, self.ledger

    def require_resident(self, tenant: str | None) -> None:
        """403 when `tenant`'s rows live in another region's ledger than the one this API
        reads (`Settings.region`): its answer would be empty, and wrong."""
        if tenant is None or tenant == ANY_TENANT or self.residency is None:
            return
        refusal = self.residency.refusal(tenant, self.settings.region)
        if refusal is not None:
            raise ApiError(403, refusal, {"regions": list(self.residency.regions_of(tenant))})

    def throttle(self, key: str, limiter: RateLimiter | None = None) -> None:
        """429 with Retry-After once `key` is over its rate (in `limiter`, default the
        authenticated requests' one)."""
        limiter = limiter or self.limiter
        wait_s = limiter.acquire(key)
        if wait_s > 0:
            raise ApiError(
                429,
                f"rate limit of {limiter.rate:g} requests/s (burst {limiter.burst}) exceeded; "
                f"retry in {wait_s:.2f}s",
                headers={"Retry-After": retry_after(wait_s)},
            )


async def context(request: Request) -> ApiContext:
    """The app's context (a FastAPI dependency)."""
    # async: FastAPI runs a plain function dependency on its thread pool, a thread hop per
    # request for an attribute read.
    ctx: ApiContext = request.app.state.ctx
    return ctx


#: A route's parameter for the app's context.
ContextDep = Annotated[ApiContext, Depends(context)]

_bearer = HTTPBearer(auto_error=False, description="An API token: `shipledger tokens create`.")


class Authorized:
    """Dependency: a valid bearer token with `scope`, within its rate. 401/403/429 otherwise."""

    def __init__(self, scope: str) -> None:
        self.scope = scope

    def __call__(
        self,
        request: Request,
        ctx: ContextDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        challenge = {"WWW-Authenticate": "Bearer"}
        if credentials is None:
            raise ApiError(
                401, "missing bearer token: Authorization: Bearer <token>", None, challenge
            )
        try:
            principal = ctx.auth.verify(credentials.credentials)
        except AuthError as exc:
            raise ApiError(401, str(exc), None, challenge) from exc
        if self.scope not in principal.scopes:
            raise ApiError(
                403,
                f"token {principal.token_id} lacks the {self.scope!r} scope "
                f"(has: {', '.join(sorted(principal.scopes))})",
            )
        ctx.throttle(principal.token_id)
        if self.scope == "read":  # writes travel by the shared Kafka to the right region
            ctx.require_resident(principal.tenant)
            ctx.require_resident(request.query_params.get("tenant"))
        return principal


#: A route's parameter for the caller, holding a token with the `ingest` scope.
IngestPrincipal = Annotated[Principal, Depends(Authorized("ingest"))]
#: A route's parameter for the caller, holding a token with the `read` scope.
ReadPrincipal = Annotated[Principal, Depends(Authorized("read"))]


def readable_tenant(principal: Principal, tenant: str | None) -> str | None:
    """The tenant a read asks for, checked against its token: the token's own tenant (403
    naming it when another is asked), or the one asked (None: every tenant) for an
    operator's."""
    own = principal.own_tenant
    if own is not None and tenant not in (None, own):
        raise ApiError(403, f"tenant: this token reads tenant {own!r} only")
    return own or tenant
