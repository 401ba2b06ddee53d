"""JFrog Artifactory webhooks, domain `docker`: tags pushed and deleted
(https://jfrog.com/help/r/jfrog-platform-administration-documentation/domain-docker).

- `pushed`: a `published` artifact event (the image name, its tag, the manifest's sha256);
  the pushing user (`source`) is the builder, so only pushes by a trusted builder count as
  builds (`trusted_builders`, docs/artifacts.md);
- `deleted`: a `deleted` event of the same image, tag and digest;
- any other event (`promoted`) or domain is acknowledged and not recorded.

Authenticated by the webhook's secret, which Artifactory sends in `X-JFrog-Event-Auth`
(without payload signing). Event ids derive from the event type, repository key, path and
checksum: Artifactory's retries are the same event.
"""

from __future__ import annotations

from shipledger.producers.webhooks import contract
from shipledger.producers.webhooks.auth import verify_token
from shipledger.producers.webhooks.payload import (
    bounded_id,
    digest,
    obj,
    opt_str,
    parse_object,
    req_str,
)
from shipledger.producers.webhooks.result import Identified, Parsed, Request

_ACTIONS: dict[str, contract.ArtifactAction] = {"pushed": "published", "deleted": "deleted"}


def verify(request: Request) -> None:
    """Check `X-JFrog-Event-Auth` against the tenant's secret."""
    verify_token(request, "artifactory", "X-JFrog-Event-Auth")


def parse(request: Request) -> Parsed:
    """Map one Artifactory webhook (see the module docstring)."""
    body = parse_object(request.body)
    domain = req_str(body, "domain")
    event_type = req_str(body, "event_type")
    name = f"{domain}.{event_type}"
    action = _ACTIONS.get(event_type) if domain == "docker" else None
    if action is None:
        return Parsed.of(name, None, f"event {name!r} is not recorded")
    obj(body, "data")
    sha = digest(opt_str(body, "data.sha256"), "data.sha256")
    repo_key = req_str(body, "data.repo_key")
    origin = opt_str(body, "jpd_origin")
    user = opt_str(body, "source")
    event = contract.artifact(
        action=action,
        artifact_name=req_str(body, "data.image_name"),
        # Artifactory's payload has no time: the moment the delivery arrived stands in.
        occurred_at=request.received_at.isoformat(),
        version=opt_str(body, "data.tag"),
        digest=sha,
        builder=user.rsplit("/", 1)[-1] if action == "published" and user else None,
        registry=origin.split("://", 1)[-1] if origin else repo_key,
        attributes={
            "artifactory.repo_key": repo_key,
            "artifactory.path": opt_str(body, "data.path"),
        },
    )
    object_id = bounded_id(name, repo_key, req_str(body, "data.path"), sha)
    return Parsed.of(name, None, Identified(object_id, [event]))
