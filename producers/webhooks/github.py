"""GitHub webhooks: deployment, deployment_status, push, pull_request (merged), release, package
(published: a GitHub Packages container image, an artifact build; GitHub documents no action
for a deleted package version, so deletions cannot come from here).

Authenticated by ``X-Hub-Signature-256`` (HMAC-SHA256 of the raw body with the hook's secret).
The signature does not cover ``X-GitHub-Delivery``, so event ids derive from the ids in the
body: the deployment status id, the deployment id, the release id, a push's ref and SHAs.
"""

from __future__ import annotations

import re

from shipledger.producers.webhooks import contract
from shipledger.producers.webhooks.auth import verify_hmac_sha256
from shipledger.producers.webhooks.payload import (
    JSONObject,
    bounded_id,
    full_sha,
    is_zero_sha,
    millis_between,
    obj,
    opt_int,
    opt_obj,
    opt_str,
    opt_timestamp,
    parse_object,
    req_str,
    req_timestamp,
    required,
)
from shipledger.producers.webhooks.push import commits, pushed
from shipledger.producers.webhooks.result import (
    Identified,
    Outcome,
    Request,
    WebhookPayloadError,
)
from shipledger.producers.webhooks.route import ByHeader, Mapper
from shipledger.schemas.models import KINDS, is_digest, is_full_sha

_STATES: dict[str, contract.EventType] = {
    "queued": "started",
    "pending": "started",
    "in_progress": "started",
    "success": "succeeded",
    "failure": "failed",
    "error": "failed",
}
# A deployment ref names a version when it is a tag: refs/tags/... or looks like v1.2.3.
_VERSION_REF = re.compile(r"v?\d+(\.\d+)+([-+][0-9A-Za-z.-]+)?")


def verify(request: Request) -> None:
    """Check the HMAC signature of the raw body."""
    verify_hmac_sha256(request, "github", "X-Hub-Signature-256")


def _ping(data: JSONObject, request: Request) -> Outcome:
    return "ping: the webhook is configured; nothing to record"


def _deployment_payload(data: JSONObject) -> JSONObject:
    # deployment.payload is free-form: an object, or a JSON string of one.
    payload = obj(data, "deployment").get("payload")
    if isinstance(payload, str):
        try:
            payload = parse_object(payload.encode(), "deployment.payload")
        except WebhookPayloadError:
            return {}
    return payload if isinstance(payload, dict) else {}


def _deployment(
    data: JSONObject,
    *,
    object_id: str,
    event_type: contract.EventType,
    occurred_at: str,
    duration_ms: int | None = None,
    run_url: str | None = None,
    status: str | None = None,
) -> Outcome:
    repository = req_str(data, "repository.full_name")
    number = req_str(data, "deployment.id")
    payload = _deployment_payload(data)
    kind = opt_str(payload, "kind") or "release"
    if kind not in KINDS:
        raise WebhookPayloadError(
            f"deployment.payload.kind: {kind!r} is not one of {', '.join(KINDS)}"
        )
    # The deployer is the deployment's creator; the sender of a status is whoever reported it.
    who = opt_obj(data, "deployment.creator") or obj(data, "sender")
    actor = required(opt_str(who, "login"), "deployment.creator.login")
    ref = opt_str(data, "deployment.ref")
    run = opt_obj(data, "workflow_run") or {}
    via_actions = bool(run) or opt_str(data, "deployment.performed_via_github_app.slug") == (
        "github-actions"
    )
    return Identified(
        f"{object_id}@{repository}",
        [
            contract.deployment(
                deployment_id=bounded_id("github", repository, number),
                event_type=event_type,
                kind=kind,
                service=opt_str(payload, "service") or req_str(data, "repository.name"),
                environment=req_str(data, "deployment.environment"),
                commit_sha=full_sha(opt_str(data, "deployment.sha"), "deployment.sha"),
                actor=actor,
                trigger="automated" if opt_str(who, "type") == "Bot" else "manual",
                repository=repository,
                version=_version(ref),
                change_id=opt_str(payload, "change_id"),
                pipeline_provider="github_actions" if via_actions else "github_deployments",
                pipeline_run_id=opt_str(run, "id"),
                pipeline_run_url=run_url or opt_str(run, "html_url"),
                duration_ms=duration_ms,
                occurred_at=occurred_at,
                attributes={
                    "github.deployment_id": number,
                    "github.task": opt_str(data, "deployment.task"),
                    "github.ref": ref,
                    "github.deployment_status": status,
                },
            )
        ],
    )


def _version(ref: str | None) -> str | None:
    if ref is None:
        return None
    if ref.startswith("refs/tags/"):
        return ref.removeprefix("refs/tags/") or None
    return ref if _VERSION_REF.fullmatch(ref) else None


def _deployment_created(data: JSONObject, request: Request) -> Outcome:
    return _deployment(
        data,
        object_id=f"deployment:{req_str(data, 'deployment.id')}",
        event_type="started",
        occurred_at=req_timestamp(data, "deployment.created_at"),
    )


def _deployment_status(data: JSONObject, request: Request) -> Outcome:
    state = req_str(data, "deployment_status.state")
    event_type = _STATES.get(state)
    if event_type is None:
        return f"deployment_status state {state!r} is not a deployment outcome"
    occurred_at = opt_timestamp(data, "deployment_status.updated_at") or req_timestamp(
        data, "deployment_status.created_at"
    )
    started = opt_timestamp(data, "deployment.created_at")
    duration_ms = None
    if event_type != "started" and started is not None:
        duration_ms = millis_between(started, occurred_at)
    return _deployment(
        data,
        # Each status is its own object; its state is kept in the id for safety.
        object_id=f"deployment_status:{req_str(data, 'deployment_status.id')}:{state}",
        event_type=event_type,
        occurred_at=occurred_at,
        duration_ms=duration_ms,
        run_url=opt_str(data, "deployment_status.log_url")
        or opt_str(data, "deployment_status.target_url"),
        status=state,
    )


def _push(data: JSONObject, request: Request) -> Outcome:
    ref = req_str(data, "ref")
    after = opt_str(data, "after")
    if data.get("deleted") is True or is_zero_sha(after):
        return f"push deleted {ref}; nothing was shipped"
    occurred_at = (
        opt_timestamp(data, "head_commit.timestamp")
        or opt_timestamp(data, "repository.pushed_at")
        or request.received_at.isoformat()
    )
    return pushed(
        data,
        repository=req_str(data, "repository.full_name"),
        ref=ref,
        head=full_sha(after, "after"),
        pushed_commits=commits(data),
        author=opt_str(data, "pusher.name") or opt_str(data, "sender.login"),
        url=opt_str(data, "compare"),
        occurred_at=occurred_at,
    )


def _pull_request(data: JSONObject, request: Request) -> Outcome:
    action = req_str(data, "action")
    if action != "closed" or obj(data, "pull_request").get("merged") is not True:
        return f"pull_request action {action!r}: only merged pull requests are recorded"
    repository = req_str(data, "repository.full_name")
    return Identified(
        f"pull_request:{repository}#{req_str(data, 'pull_request.number')}:merged",
        [
            contract.source(
                kind="pull_request_merged",
                repository=repository,
                ref=opt_str(data, "pull_request.base.ref"),
                commit_sha=full_sha(
                    opt_str(data, "pull_request.merge_commit_sha"), "pull_request.merge_commit_sha"
                ),
                pull_request_number=opt_int(data, "pull_request.number"),
                pull_request_title=opt_str(data, "pull_request.title"),
                pull_request_url=opt_str(data, "pull_request.html_url"),
                author=opt_str(data, "pull_request.user.login"),
                merged_by=opt_str(data, "pull_request.merged_by.login"),
                url=opt_str(data, "pull_request.html_url"),
                occurred_at=req_timestamp(data, "pull_request.merged_at"),
                attributes={"github.head_sha": opt_str(data, "pull_request.head.sha")},
            )
        ],
    )


def _release(data: JSONObject, request: Request) -> Outcome:
    action = req_str(data, "action")
    if action != "published":
        return f"release action {action!r}: only published releases are recorded"
    repository = req_str(data, "repository.full_name")
    tag = req_str(data, "release.tag_name")
    target = opt_str(data, "release.target_commitish")
    # target_commitish is usually a branch name; only a full SHA identifies the commit.
    commit_sha = target.lower() if target is not None and is_full_sha(target) else None
    published_at = opt_timestamp(data, "release.published_at") or req_timestamp(
        data, "release.created_at"
    )
    events = [
        contract.source(
            kind="release_published",
            repository=repository,
            ref=f"refs/tags/{tag}",
            commit_sha=commit_sha,
            author=opt_str(data, "release.author.login"),
            release_tag=tag,
            url=opt_str(data, "release.html_url"),
            occurred_at=published_at,
            attributes={"github.release_name": opt_str(data, "release.name")},
        )
    ]
    assets = obj(data, "release").get("assets") or []
    if not isinstance(assets, list):
        raise WebhookPayloadError("release.assets: must be an array")
    for i, asset in enumerate(assets):
        if not isinstance(asset, dict):
            raise WebhookPayloadError(f"release.assets[{i}]: must be an object")
        # Only an asset with a digest is an identifiable artifact.
        digest = opt_str(asset, "digest")
        if digest is None or not is_digest(digest.lower()):
            continue
        events.append(
            contract.artifact(
                artifact_name=req_str(asset, "name"),
                version=tag,
                digest=digest.lower(),
                repository=repository,
                commit_sha=commit_sha,
                builder=opt_str(asset, "uploader.login"),
                url=opt_str(asset, "browser_download_url"),
                occurred_at=opt_timestamp(asset, "updated_at") or published_at,
            )
        )
    return Identified(f"release:{req_str(data, 'release.id')}:published", events)


def _package(data: JSONObject, request: Request) -> Outcome:
    action = req_str(data, "action")
    if action != "published":
        return f"package action {action!r} is not recorded (only published)"
    version = "package.package_version"
    # A container version is named by its manifest digest; its tag is the version people use.
    name = opt_str(data, f"{version}.name")
    sha = name.lower() if name and is_digest(name.lower()) else None
    if sha is None:
        return "package version is not named by a sha256 digest: not an identifiable image"
    tag = opt_str(data, f"{version}.container_metadata.tag.name")
    labels = f"{version}.container_metadata.labels"
    revision = opt_str(data, f"{labels}.revision")
    package_url = opt_str(data, f"{version}.package_url")
    event = contract.artifact(
        artifact_name=_image(package_url) if package_url else req_str(data, "package.name"),
        version=tag,
        digest=sha,
        repository=opt_str(data, "repository.full_name"),
        commit_sha=revision.lower() if revision and is_full_sha(revision) else None,
        builder=opt_str(data, "sender.login"),
        url=opt_str(data, f"{version}.html_url"),
        registry=opt_str(data, "package.registry.url"),
        occurred_at=opt_timestamp(data, f"{version}.created_at")
        or req_timestamp(data, "package.updated_at"),
        attributes={"github.package_type": opt_str(data, "package.package_type")},
    )
    return Identified(f"package:{req_str(data, f'{version}.id')}:published", [event])


def _image(url: str) -> str:
    """The image name `docker pull` uses: the package URL without registry host and tag
    (`ghcr.io/codertocat/hello-world:nightly` -> `codertocat/hello-world`)."""
    path = url.split("/", 1)[-1]
    return path.split("@", 1)[0].rsplit(":", 1)[0] or url


_MAPPERS: dict[str, Mapper] = {
    "ping": _ping,
    "deployment": _deployment_created,
    "deployment_status": _deployment_status,
    "push": _push,
    "pull_request": _pull_request,
    "release": _release,
    "package": _package,
}

#: How dispatch reads a delivery (`route.ByHeader`): its id is X-GitHub-Delivery.
ROUTE = ByHeader("GitHub", "X-GitHub-Event", ("X-GitHub-Delivery",), _MAPPERS)
