"""Argo CD notifications: the webhook template of docs/webhooks.md, one body per sync phase.

Argo CD has no request signature; the notifications webhook service sends the shared secret
in ``X-Shipledger-Token``. Event ids derive from the application, the sync operation (its
start time), the phase and the revision: two triggers notifying the same phase of the same
sync are one event.
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

_PHASES: dict[str, contract.EventType] = {
    "Running": "started",
    "Succeeded": "succeeded",
    "Failed": "failed",
    "Error": "failed",
}
# Go templates render a missing map key as this; it means the field is absent.
_NO_VALUE = "<no value>"


def verify(request: Request) -> None:
    """Check the shared secret header."""
    verify_token(request, "argocd", SHARED_TOKEN_HEADER)


def parse(request: Request) -> Parsed:
    """Map one Argo CD sync notification."""
    data = {k: v for k, v in parse_object(request.body).items() if v != _NO_VALUE}
    phase = req_str(data, "phase")
    event_type = _PHASES.get(phase)
    if event_type is None:
        return Parsed.of(f"sync {phase}", None, f"sync phase {phase!r} is not recorded")
    app = req_str(data, "app")
    started_at = req_timestamp(data, "started_at")
    finished_at = None if event_type == "started" else req_timestamp(data, "finished_at")
    environment = opt_str(data, "environment") or opt_str(data, "destination_namespace")
    if environment is None:
        raise WebhookPayloadError("environment: required (or destination_namespace)")
    initiated_by = opt_str(data, "initiated_by")
    automated = opt_str(data, "automated") == "true" or initiated_by is None
    # One sync operation = one deployment: its start time tells operations apart.
    deployment_id = bounded_id("argocd", opt_str(data, "app_namespace") or "-", app, started_at)
    revision = full_sha(opt_str(data, "revision"), "revision")
    event = contract.deployment(
        deployment_id=deployment_id,
        event_type=event_type,
        service=opt_str(data, "service") or app,
        environment=environment,
        commit_sha=revision,
        actor=initiated_by or "argocd-automation",
        trigger="automated" if automated else "manual",
        repository=opt_str(data, "repo_url"),
        pipeline_provider="argocd",
        pipeline_run_url=opt_str(data, "app_url"),
        duration_ms=millis_between(started_at, finished_at) if finished_at else None,
        occurred_at=finished_at or started_at,
        attributes={
            "argocd.app": app,
            "argocd.project": opt_str(data, "project"),
            "argocd.sync_status": opt_str(data, "sync_status"),
            "argocd.health": opt_str(data, "health"),
            "argocd.destination_server": opt_str(data, "destination_server"),
            "argocd.destination_namespace": opt_str(data, "destination_namespace"),
        },
    )
    identity = f"sync:{deployment_id}:{phase}:{revision}"
    return Parsed.of(f"sync {phase}", None, Identified(identity, [event]))
