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
    JSONObject,
    bounded_id,
    full_sha,
    millis_between,
    opt_str,
    opt_timestamp,
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
#: The `event` of the drift template (docs/verification.md).
OUT_OF_SYNC = "out_of_sync"


def _where(data: JSONObject) -> tuple[str, str, str]:
    """(app, service, environment) of a notification: the labels, else the app and the
    destination namespace."""
    app = req_str(data, "app")
    environment = opt_str(data, "environment") or opt_str(data, "destination_namespace")
    if environment is None:
        raise WebhookPayloadError("environment: required (or destination_namespace)")
    return app, opt_str(data, "service") or app, environment


def verify(request: Request) -> None:
    """Check the shared secret header."""
    verify_token(request, "argocd", SHARED_TOKEN_HEADER)


def parse(request: Request) -> Parsed:
    """Map one Argo CD sync notification, or an out-of-sync one (`event: out_of_sync`)."""
    data = {k: v for k, v in parse_object(request.body).items() if v != _NO_VALUE}
    if opt_str(data, "event") == OUT_OF_SYNC:
        return _out_of_sync(data, request)
    phase = req_str(data, "phase")
    event_type = _PHASES.get(phase)
    if event_type is None:
        return Parsed.of(f"sync {phase}", None, f"sync phase {phase!r} is not recorded")
    app, service, environment = _where(data)
    started_at = req_timestamp(data, "started_at")
    finished_at = None if event_type == "started" else req_timestamp(data, "finished_at")
    initiated_by = opt_str(data, "initiated_by")
    automated = opt_str(data, "automated") == "true" or initiated_by is None
    # One sync operation = one deployment: its start time tells operations apart.
    deployment_id = bounded_id("argocd", opt_str(data, "app_namespace") or "-", app, started_at)
    revision = full_sha(opt_str(data, "revision"), "revision")
    event = contract.deployment(
        deployment_id=deployment_id,
        event_type=event_type,
        service=service,
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


def _out_of_sync(data: JSONObject, request: Request) -> Parsed:
    """An application out of sync: a drift report naming its resources whose `status` is
    `OutOfSync` (all listed ones when none says)."""
    status = req_str(data, "sync_status")
    if status != "OutOfSync":
        return Parsed.of(OUT_OF_SYNC, None, f"sync status {status!r} is no drift")
    app, service, environment = _where(data)
    listed = data.get("resources") or []
    if not isinstance(listed, list) or not all(isinstance(r, dict) for r in listed):
        raise WebhookPayloadError("resources: must be an array of objects")
    drifting = [r for r in listed if r.get("status") == "OutOfSync"] or listed
    resources = [
        {
            "address": "/".join(
                str(part) for part in (r.get("kind"), r.get("namespace"), r.get("name")) if part
            ),
            "kind": str(r.get("kind") or ""),
            "actions": str(r.get("status") or "OutOfSync"),
        }
        for r in drifting
    ] or [{"address": f"Application/{app}", "kind": "Application", "actions": "OutOfSync"}]
    revision = opt_str(data, "revision") or "-"
    at = opt_timestamp(data, "reported_at") or request.received_at.isoformat()
    event = contract.drift_report(
        tool="argocd",
        service=service,
        environment=environment,
        occurred_at=at,
        resources=resources,
        url=opt_str(data, "app_url"),
        attributes={"argocd.app": app, "argocd.revision": opt_str(data, "revision")},
    )
    identity = f"out_of_sync:{opt_str(data, 'app_namespace') or '-'}:{app}:{revision}:{at}"
    return Parsed.of(OUT_OF_SYNC, None, Identified(identity, [event]))
