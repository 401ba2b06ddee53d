"""`POST /v1/approvals`: an authenticated person approves (or rejects) a change request.

Not an API token: the person proves who they are (`Authorization: Bearer <OIDC token>`, or
`Basic` username:password bound against LDAP, accepted over TLS or from loopback only), the
policy of the request's tenant says which groups approve it (for the environments it
covers), and four eyes refuses whoever raised it. The approval is then published on the
`changes` topic as a ChangeEvent with source `approval` carrying the one decision, its
groups and its provider (`verified_by`): the stream and the ledger fold it like any other.

Refusals say why and record nothing: 401 (credentials: bad password, expired token, wrong
audience or issuer...), 403 (not in an approving group, their own change), 404 (no such
change request); 503 when an identity provider (or Kafka) cannot answer: never a refusal.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shipledger.logging import get_logger
from shipledger.producers.api.auth import Principal
from shipledger.producers.api.bodies import Problem
from shipledger.producers.api.context import ApiContext, ApiError, ContextDep
from shipledger.producers.api.events import Prepared, prepare
from shipledger.producers.api.ingest import publish
from shipledger.producers.api.limits import check_declared_length, read_capped
from shipledger.producers.approvals.identity import (
    Identity,
    IdentityRefused,
    IdentityUnavailable,
    authorize_approval,
    is_loopback,
)
from shipledger.schemas.family_models import APPROVAL_SOURCE, ApprovalDecision
from shipledger.schemas.governance import ApprovalTarget
from shipledger.schemas.models import Name, utcnow
from shipledger.schemas.untrusted import BadJSON, loads
from shipledger.schemas.validation import field_errors

log = get_logger("api.approvals")
router = APIRouter(prefix="/v1")
_MAX_BODY = 16 * 1024


class ApprovalIn(BaseModel):
    """A decision on a change request; who decides is the request's credentials."""

    model_config = ConfigDict(extra="forbid")

    tenant: Name = Field(min_length=1, max_length=100)
    change_id: Name = Field(min_length=1, max_length=128)
    decision: ApprovalDecision = "approved"
    comment: str | None = Field(default=None, max_length=2000)


class ApprovalRecorded(BaseModel):
    """The approval as recorded (acknowledged by Kafka: it reaches the ledger shortly)."""

    event_id: str
    tenant: str
    change_id: str
    approver: str
    decision: str
    groups: list[str]
    verified_by: str
    state: str


async def _read(request: Request) -> ApprovalIn:
    check_declared_length(request.headers.get("content-length"), _MAX_BODY, "approval")
    try:
        obj = loads(await read_capped(request.stream(), _MAX_BODY, "approval"), "body")
        return ApprovalIn.model_validate(obj)
    except BadJSON as exc:
        raise ApiError(400, str(exc)) from exc
    except ValidationError as exc:
        raise ApiError(400, "; ".join(f"{f}: {r}" for f, r in field_errors(exc))) from exc


def _protected(request: Request) -> bool:
    """Whether a password sent on this request was protected: TLS, or a loopback client."""
    client = request.client.host if request.client else ""
    return request.url.scheme == "https" or is_loopback(client)


async def _identify(request: Request, ctx: ApiContext) -> Identity:
    """The person the request's credentials prove (401 refused, 503 provider down)."""
    authenticator = ctx.authenticator
    try:
        return await run_in_threadpool(
            authenticator.identify, request.headers.get("authorization"), _protected(request)
        )
    except IdentityUnavailable as exc:
        raise ApiError(503, f"cannot verify the approver now: {exc}") from exc
    except IdentityRefused as exc:
        # Password guessing is throttled per client, apart from the accepted requests' rate.
        ctx.throttle(
            f"approvals:{request.client.host if request.client else ''}", ctx.refused_limiter
        )
        challenge = ", ".join(authenticator.schemes) or "Bearer"
        raise ApiError(401, exc.reason, headers={"WWW-Authenticate": challenge}) from exc


def approval_event(
    body: ApprovalIn, target: ApprovalTarget, identity: Identity, groups: tuple[str, ...]
) -> dict[str, Any]:
    """The ChangeEvent (as the `change` family's input object) recording one approval."""
    now = utcnow().isoformat()
    return {
        "family": "change",
        "tenant": body.tenant,
        "change_id": target.change_id,
        "system": target.system,
        "state": target.state,
        "occurred_at": now,
        "actor": identity.username,
        "approvals": [
            {
                "approver": identity.username,
                "decision": body.decision,
                "decided_at": now,
                "groups": list(groups),
                "verified_by": identity.verified_by,
                "comment": body.comment,
            }
        ],
    }


@router.post(
    "/approvals",
    status_code=201,
    response_model=ApprovalRecorded,
    responses={
        400: {"model": Problem, "description": "Malformed body."},
        401: {"model": Problem, "description": "Credentials refused (says why)."},
        403: {"model": Problem, "description": "Not in an approving group, or their own change."},
        404: {"model": Problem, "description": "No such change request for the tenant."},
        429: {"model": Problem, "description": "Too many refused attempts from this client."},
        503: {"model": Problem, "description": "An identity provider or Kafka did not answer."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": ApprovalIn.model_json_schema(),
                    "example": {"tenant": "retail", "change_id": "CHG0042", "comment": "ok"},
                }
            },
        }
    },
    summary="Approve or reject a change request as an authenticated person",
)
async def post_approval(request: Request, ctx: ContextDep) -> ApprovalRecorded:
    """Record `decision` (default `approved`) on change request `change_id` of `tenant` by
    the person the `Authorization` header proves: `Bearer <OIDC token>` or `Basic` (LDAP
    username:password, over TLS or from loopback only). They must be in a group the tenant's
    policy names for the request's environments (`approvals:`), and must not have raised it.
    """
    governance, ledger = ctx.require_governance()
    identity = await _identify(request, ctx)
    ctx.throttle(f"approver:{identity.verified_by}:{identity.username}")
    body = await _read(request)
    events = await run_in_threadpool(ledger.change_events, body.tenant, body.change_id)
    target = governance.approval_target(body.tenant, events)
    if target is None:
        raise ApiError(404, f"no change request {body.change_id!r} for tenant {body.tenant!r}")
    try:
        groups = authorize_approval(identity, target.approving_groups, target.requested_by)
    except IdentityRefused as exc:
        raise ApiError(403, exc.reason) from exc
    principal = Principal(f"approver:{identity.username}", body.tenant, frozenset())
    prepared = prepare(
        approval_event(body, target, identity, groups), 0, principal, ctx.settings, APPROVAL_SOURCE
    )
    if not isinstance(prepared, Prepared):  # what the approver typed: the comment
        raise ApiError(400, "; ".join(f"{e.field}: {e.reason}" for e in prepared))
    await publish(ctx, [prepared])
    recorded = ApprovalRecorded(
        event_id=prepared.event_id,
        tenant=body.tenant,
        change_id=target.change_id,
        approver=identity.username,
        decision=body.decision,
        groups=list(groups),
        verified_by=identity.verified_by,
        state=target.state,
    )
    log.info("approval_recorded", **recorded.model_dump(exclude={"event_id", "state"}))
    return recorded
