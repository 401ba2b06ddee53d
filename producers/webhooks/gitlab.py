"""GitLab webhooks: Deployment Hook, Merge Request Hook (merged), Push Hook, Tag Push Hook.

Authenticated by ``X-Gitlab-Token`` (the hook's secret token, sent as is). Event ids derive
from the ids in the body (project and deployment id with its status, merge request iid, a
push's ref and SHAs), not from ``Idempotency-Key`` / ``X-Gitlab-Event-UUID``: a body sent
again under a new delivery id is the same event.
"""

from __future__ import annotations

import re

from shipledger.producers.webhooks import contract
from shipledger.producers.webhooks.auth import verify_token
from shipledger.producers.webhooks.payload import (
    JSONObject,
    bounded_id,
    full_sha,
    is_zero_sha,
    last_segment,
    opt_int,
    opt_str,
    req_str,
    req_timestamp,
    timestamp,
)
from shipledger.producers.webhooks.push import commits, pushed
from shipledger.producers.webhooks.result import (
    Identified,
    Outcome,
    Request,
    WebhookPayloadError,
)
from shipledger.producers.webhooks.route import ByHeader, Mapper
from shipledger.schemas.models import is_full_sha

_STATUSES: dict[str, contract.EventType] = {
    "running": "started",
    "success": "succeeded",
    "failed": "failed",
    "canceled": "cancelled",
}
_COMMIT_URL = re.compile(r"/commit/([0-9a-fA-F]{40}|[0-9a-fA-F]{64})/?$")


def verify(request: Request) -> None:
    """Check the secret token header."""
    verify_token(request, "gitlab", "X-Gitlab-Token")


def _deployment(data: JSONObject, request: Request) -> Outcome:
    status = req_str(data, "status")
    event_type = _STATUSES.get(status)
    if event_type is None:
        return f"deployment status {status!r} is not a deployment stage"
    project = req_str(data, "project.path_with_namespace")
    number = req_str(data, "deployment_id")
    return Identified(
        f"deployment:{project}:{number}:{status}",
        [
            contract.deployment(
                deployment_id=bounded_id("gitlab", project, number),
                event_type=event_type,
                service=last_segment(project),
                environment=req_str(data, "environment"),
                commit_sha=_full_commit(data, project, request),
                actor=opt_str(data, "user.username") or req_str(data, "user.name"),
                repository=project,
                pipeline_provider="gitlab_ci",
                pipeline_run_id=opt_str(data, "deployable_id"),
                pipeline_run_url=opt_str(data, "deployable_url"),
                occurred_at=req_timestamp(data, "status_changed_at"),
                attributes={
                    "gitlab.environment_tier": opt_str(data, "environment_tier"),
                    "gitlab.environment_url": opt_str(data, "environment_external_url"),
                    "gitlab.deployment_status": status,
                },
            )
        ],
    )


def _full_commit(data: JSONObject, project: str, request: Request) -> str:
    """The deployed commit's full SHA: the hook sends `short_sha`, and the full one in a URL."""
    short = req_str(data, "short_sha").lower()
    url = opt_str(data, "commit_url")
    match = _COMMIT_URL.search(url or "")
    if match and match[1].lower().startswith(short):
        return match[1].lower()
    if request.resolve_sha is not None:
        resolved = request.resolve_sha(project, short)
        if resolved is not None and is_full_sha(resolved) and resolved.lower().startswith(short):
            return resolved.lower()
    raise WebhookPayloadError(
        f"commit_url: cannot resolve short_sha {short!r} to a full commit SHA (commit_url "
        f"{url!r} carries none and no resolver knew it); an abbreviated SHA is not stored"
    )


def _merge_request(data: JSONObject, request: Request) -> Outcome:
    action = opt_str(data, "object_attributes.action")
    if action != "merge":
        return f"merge request action {action!r}: only merges are recorded"
    # A fast-forward merge has no merge commit: the target then points at the last commit.
    merge_sha = opt_str(data, "object_attributes.merge_commit_sha")
    sha_field = "object_attributes.merge_commit_sha"
    if merge_sha is None:
        sha_field = "object_attributes.last_commit.id"
        merge_sha = opt_str(data, sha_field)
    url = opt_str(data, "object_attributes.url")
    project = req_str(data, "project.path_with_namespace")
    return Identified(
        f"merge_request:{project}!{req_str(data, 'object_attributes.iid')}:merge",
        [
            contract.source(
                kind="pull_request_merged",
                repository=project,
                ref=opt_str(data, "object_attributes.target_branch"),
                commit_sha=full_sha(merge_sha, sha_field),
                pull_request_number=opt_int(data, "object_attributes.iid"),
                pull_request_title=opt_str(data, "object_attributes.title"),
                pull_request_url=url,
                merged_by=opt_str(data, "user.username"),
                url=url,
                occurred_at=req_timestamp(data, "object_attributes.updated_at"),
            )
        ],
    )


def _push(data: JSONObject, request: Request) -> Outcome:
    ref = req_str(data, "ref")
    after = opt_str(data, "after")
    if is_zero_sha(after):
        return f"push deleted {ref}; nothing was shipped"
    # For an annotated tag `after` is the tag object; checkout_sha is the commit.
    head = opt_str(data, "checkout_sha") or after
    pushed_commits = commits(data)
    # The payload has no push time; the head commit's time is the best it offers.
    head_commit = next((c for c in pushed_commits if opt_str(c, "id") == head), None)
    occurred_at = (
        timestamp(head_commit.get("timestamp"), "commits[].timestamp")
        if head_commit is not None and head_commit.get("timestamp")
        else request.received_at.isoformat()
    )
    return pushed(
        data,
        repository=req_str(data, "project.path_with_namespace"),
        ref=ref,
        head=full_sha(head, "checkout_sha"),
        pushed_commits=pushed_commits,
        author=opt_str(data, "user_username") or opt_str(data, "user_name"),
        url=opt_str(head_commit, "url") if head_commit is not None else None,
        occurred_at=occurred_at,
    )


_MAPPERS: dict[str, Mapper] = {
    "Deployment Hook": _deployment,
    "Merge Request Hook": _merge_request,
    "Push Hook": _push,
    "Tag Push Hook": _push,
}

#: How dispatch reads a delivery (`route.ByHeader`): its id is its Idempotency-Key header,
#: else its X-Gitlab-Event-UUID.
ROUTE = ByHeader("GitLab", "X-Gitlab-Event", ("Idempotency-Key", "X-Gitlab-Event-UUID"), _MAPPERS)
