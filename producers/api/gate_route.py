"""`POST /v1/gate`: may this deployment start now? (`shipledger gate` asks it.)

The route does the I/O: the token (scope `ingest`: a pipeline's), the change request's events
from the ledger's door, a manual deployer looked up in the directory (`shipledger.identities`),
then the judgement it is given (`ApiContext.governance`, the processors' `Gatekeeper` under
the running policy), then the decision published to `gate.decisions` (and a break-glass
pass's critical alert to `alerts`) and acknowledged by Kafka before the answer: every answer
the gate gives is in the ledger, with who asked.
A decision Kafka does not take is not given (503): the pipeline cannot tell it from an outage.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ValidationError

from shipledger.fields import copied, picked
from shipledger.identities import actor_known
from shipledger.logging import get_logger
from shipledger.producers.api.auth import ANY_TENANT, Principal
from shipledger.producers.api.bodies import TOKEN_ERRORS, Problem
from shipledger.producers.api.context import ApiError, ContextDep, IngestPrincipal
from shipledger.producers.api.events import Prepared, alert_messages, message
from shipledger.producers.api.ingest import publish
from shipledger.producers.api.limits import check_declared_length, read_capped
from shipledger.schemas.family_models import ChangeEvent
from shipledger.schemas.governance import GateDecision, GateOutcome, GateQuestion, GateReason
from shipledger.schemas.models import utcnow
from shipledger.schemas.topics import GATE_DECISIONS
from shipledger.schemas.untrusted import BadJSON, loads
from shipledger.schemas.validation import field_errors
from shipledger.settings import Settings

log = get_logger("api.gate")
router = APIRouter(prefix="/v1")
_MAX_BODY = 64 * 1024


class GateAnswer(BaseModel):
    """The gate's answer: `allowed` (go), `blocked` (every reason listed) or `break_glass`
    (go, recorded, critical alert raised)."""

    decision: str
    passes: bool
    decision_id: str
    reasons: list[GateReason]
    alert_id: str | None = None
    policy_version: str


def _body() -> dict[str, Any]:
    example = {
        "service": "checkout",
        "environment": "prod",
        "change_id": "CHG0042",
        "actor": "ci-bot",
        "kind": "release",
    }
    schema = GateQuestion.model_json_schema()
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema, "example": example}},
        }
    }


async def read_question(request: Request, principal: Principal) -> GateQuestion:
    """The request's question, its tenant the token's (400 invalid, 403 another tenant's)."""
    check_declared_length(request.headers.get("content-length"), _MAX_BODY, "gate request")
    try:
        obj = loads(await read_capped(request.stream(), _MAX_BODY, "gate request"), "body")
    except BadJSON as exc:
        raise ApiError(400, str(exc)) from exc
    if not isinstance(obj, dict):
        raise ApiError(400, "body: must be a JSON object")
    tenant = obj.get("tenant")
    if tenant is None and principal.tenant != ANY_TENANT:
        obj["tenant"] = principal.tenant
    try:
        question = GateQuestion.model_validate(obj)
    except ValidationError as exc:
        raise ApiError(400, "; ".join(f"{f}: {r}" for f, r in field_errors(exc))) from exc
    if question.tenant is None:
        raise ApiError(400, "tenant: an operator token must name the tenant")
    if not principal.may_act_on(question.tenant):
        raise ApiError(403, f"tenant: this token is for tenant {principal.tenant!r} only")
    return question


def outcome_messages(settings: Settings, outcome: GateOutcome) -> list[Prepared]:
    """The decision and its alerts as messages to produce (keyed like their topics)."""
    decision = outcome.decision
    return [
        message(
            settings, GATE_DECISIONS, decision.event_id, decision.tenant, decision.service, decision
        ),
        *alert_messages(settings, outcome.alerts),
    ]


def answer(decision: GateDecision) -> GateAnswer:
    """The HTTP answer of a decision."""
    return copied(GateAnswer, decision, decision_id=decision.event_id)


@router.post(
    "/gate",
    response_model=GateAnswer,
    openapi_extra=_body(),
    responses={
        **TOKEN_ERRORS,
        413: {"model": Problem, "description": "Body over 64 KiB."},
        503: {
            "model": Problem,
            "description": "No policy or ledger here, or Kafka did not take the decision: no "
            "answer was given (retry).",
        },
    },
    summary="May this deployment start now? (the pre-deploy gate)",
)
async def post_gate(
    request: Request,
    ctx: ContextDep,
    principal: IngestPrincipal,
) -> GateAnswer:
    """Judge a deployment about to start against the live state: the policy's ticket, window
    and freeze rules, the change request it names (approved, in its window and scope, now),
    the approvals the policy requires (four eyes), a manual deployer's identity and, where the
    policy requires a digest, the artifact's digest against its builds (docs/artifacts.md).

    200 with `decision`: `allowed`, `blocked` (every reason in `reasons`) or `break_glass`
    (`emergency` with a `reason`: passes anyway, raises a critical `break_glass` alert). The
    decision is stored in the ledger (`gate_decisions`) with the asking token before the
    answer."""
    governance, ledger = ctx.require_governance()
    question = await read_question(request, principal)
    assert question.tenant is not None
    events: list[ChangeEvent] = []
    if question.change_id:
        events = await run_in_threadpool(ledger.change_events, question.tenant, question.change_id)
    builds = await run_in_threadpool(
        ledger.artifact_builds, question.tenant, question.artifact_name, question.digest
    )
    # Only a manual deployer is judged by who they are (`unattributed_manual_deploy`).
    known = question.trigger == "manual" and await run_in_threadpool(
        actor_known, ctx.identities, question.actor
    )
    outcome = governance.decide(question, events, principal.token_id, utcnow(), known, builds)
    await publish(ctx, outcome_messages(ctx.settings, outcome))
    decision = outcome.decision
    log.info(
        "gate_decided",
        **picked(decision, "tenant", "service", "environment", "change_id", "decision"),
        rules=[r.rule for r in decision.reasons],
        asked_by=decision.asked_by,
    )
    return answer(decision)
