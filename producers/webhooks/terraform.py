"""Terraform plans as drift reports: the body is `terraform show -json <planfile>` as is, sent
after a deployment by a scheduled plan job (docs/verification.md).

A plan whose `resource_changes` hold an action other than `no-op` (or `read`, a data source),
or whose `resource_drift` lists anything (changed outside Terraform), says the
infrastructure differs from the code: one drift report (`contract.drift_report`) naming each
such resource by address, type and actions. A plan without any is acknowledged and not
recorded. The plan names no service: the job sends `X-Shipledger-Service` and
`X-Shipledger-Environment`, and the shared secret in `X-Shipledger-Token`. The plan's
`timestamp` (Terraform 1.5+) is when; without one, when it was received. Event ids derive
from the plan body's SHA-256: the same plan sent twice is one report.
"""

from __future__ import annotations

import hashlib

from shipledger.producers.webhooks import contract
from shipledger.producers.webhooks.auth import SHARED_TOKEN_HEADER, verify_token
from shipledger.producers.webhooks.payload import (
    JSONObject,
    opt_str,
    opt_timestamp,
    parse_object,
    req_str,
)
from shipledger.producers.webhooks.result import Identified, Parsed, Request, WebhookPayloadError

SERVICE_HEADER = "X-Shipledger-Service"
ENVIRONMENT_HEADER = "X-Shipledger-Environment"
#: Actions that leave a resource as the code says.
_IN_SYNC = ({"no-op"}, {"read"})
#: The most resources one report names (a plan of thousands is summarized by its count).
MAX_RESOURCES = 200


def verify(request: Request) -> None:
    """Check the shared secret header."""
    verify_token(request, "terraform", SHARED_TOKEN_HEADER)


def _header(request: Request, name: str) -> str:
    value = (request.headers.get(name) or "").strip()
    if not value:
        raise WebhookPayloadError(f"{name}: header required (the plan names no service)")
    return value


def _address(item: JSONObject, path: str) -> str:
    address = item.get("address")
    if not isinstance(address, str) or not address.strip():
        raise WebhookPayloadError(f"{path}: required string")
    return address.strip()


def _changes(data: JSONObject, key: str) -> list[dict[str, str]]:
    listed = data.get(key)
    if listed is None:
        return []
    if not isinstance(listed, list):
        raise WebhookPayloadError(f"{key}: must be an array, got {type(listed).__name__}")
    found = []
    for i, item in enumerate(listed):
        if not isinstance(item, dict):
            raise WebhookPayloadError(f"{key}[{i}]: must be an object")
        change = item.get("change")
        actions = change.get("actions") if isinstance(change, dict) else None
        if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
            raise WebhookPayloadError(f"{key}[{i}].change.actions: must be an array of strings")
        if key == "resource_changes" and set(actions) in _IN_SYNC:
            continue
        found.append(
            {
                "address": _address(item, f"{key}[{i}].address"),
                "kind": opt_str(item, "type") or "",
                "actions": "+".join(actions),
                "found_in": key,
            }
        )
    return found


def parse(request: Request) -> Parsed:
    """Map one `terraform show -json` plan."""
    data = parse_object(request.body)
    version = req_str(data, "format_version")
    if not version.startswith(("0.", "1.")):
        raise WebhookPayloadError(f"format_version: {version!r:.20} is not supported (0.x, 1.x)")
    resources = _changes(data, "resource_drift") + _changes(data, "resource_changes")
    service = _header(request, SERVICE_HEADER)
    environment = _header(request, ENVIRONMENT_HEADER)
    digest = hashlib.sha256(request.body).hexdigest()
    if not resources:
        return Parsed.of("plan", digest, "the plan changes nothing: no drift")
    at = opt_timestamp(data, "timestamp") or request.received_at.isoformat()
    event = contract.drift_report(
        tool="terraform",
        service=service,
        environment=environment,
        occurred_at=at,
        resources=resources[:MAX_RESOURCES],
        attributes={
            "terraform.version": opt_str(data, "terraform_version"),
            "terraform.resource_count": str(len(resources)),
        },
    )
    return Parsed.of("plan", digest, Identified(f"plan:{digest}", [event]))
