"""Jenkins: the post-build JSON of docs/webhooks.md, posted by a Declarative Pipeline `post`.

Jenkins has no webhook signature of its own; the pipeline sends the shared secret (a Jenkins
credential) in ``X-Shipledger-Token``. Event ids derive from the deployment (given, or job and
build) and the result: ``curl --retry`` and a replayed body are one event.
"""

from __future__ import annotations

from shipledger.producers.webhooks import contract
from shipledger.producers.webhooks.auth import SHARED_TOKEN_HEADER, verify_token
from shipledger.producers.webhooks.payload import (
    bounded_id,
    full_sha,
    millis_between,
    opt_str,
    parse_object,
    req_str,
    req_timestamp,
)
from shipledger.producers.webhooks.result import Identified, Parsed, Request, WebhookPayloadError
from shipledger.schemas.models import KINDS

# currentBuild.currentResult values; STARTED is ours, for a notification before the deploy.
# UNSTABLE counts as failed: the ledger does not call a deploy clean that Jenkins did not.
_RESULTS: dict[str, contract.EventType] = {
    "STARTED": "started",
    "SUCCESS": "succeeded",
    "FAILURE": "failed",
    "UNSTABLE": "failed",
    "ABORTED": "cancelled",
}


def verify(request: Request) -> None:
    """Check the shared secret header."""
    verify_token(request, "jenkins", SHARED_TOKEN_HEADER)


def parse(request: Request) -> Parsed:
    """Map one Jenkins build notification."""
    data = parse_object(request.body)
    result = req_str(data, "result").upper()
    if result == "NOT_BUILT":
        return Parsed.of(result, None, "result NOT_BUILT: the deploy did not run")
    event_type = _RESULTS.get(result)
    if event_type is None:
        allowed = ", ".join([*_RESULTS, "NOT_BUILT"])
        raise WebhookPayloadError(f"result: {result!r} is not one of {allowed}")
    kind = opt_str(data, "kind") or "release"
    if kind not in KINDS:
        raise WebhookPayloadError(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
    trigger = opt_str(data, "trigger") or "automated"
    if trigger not in ("automated", "manual"):
        raise WebhookPayloadError(f"trigger: {trigger!r} is not automated or manual")
    job = req_str(data, "job_name")
    build = req_str(data, "build_number")
    started_at = req_timestamp(data, "started_at")
    finished_at = None if event_type == "started" else req_timestamp(data, "finished_at")
    deployment_id = opt_str(data, "deployment_id") or bounded_id("jenkins", job, build)
    event = contract.deployment(
        deployment_id=deployment_id,
        event_type=event_type,
        kind=kind,
        service=req_str(data, "service"),
        environment=req_str(data, "environment"),
        region=opt_str(data, "region"),
        commit_sha=full_sha(opt_str(data, "commit_sha"), "commit_sha"),
        actor=opt_str(data, "actor") or "jenkins",
        trigger="manual" if trigger == "manual" else "automated",
        repository=opt_str(data, "repository"),
        version=opt_str(data, "version"),
        artifact_name=opt_str(data, "artifact_name"),
        artifact_digest=opt_str(data, "artifact_digest"),
        change_id=opt_str(data, "change_id"),
        pipeline_provider="jenkins",
        pipeline_run_id=f"{job}#{build}",
        pipeline_run_url=opt_str(data, "build_url"),
        pipeline_stage=opt_str(data, "stage"),
        duration_ms=millis_between(started_at, finished_at) if finished_at else None,
        occurred_at=finished_at or started_at,
        attributes={"jenkins.result": result},
    )
    # One build may deploy several environments or stages: each is its own event.
    where = f"{event[1]['environment']}:{opt_str(data, 'stage') or ''}"
    identity = f"build:{deployment_id}:{job}#{build}:{where}:{result}"
    return Parsed.of(result, None, Identified(identity, [event]))
