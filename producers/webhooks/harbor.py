"""Harbor project webhooks (Default payload format): pushed, deleted and retention-deleted
artifacts (https://goharbor.io/docs/main/working-with-projects/project-configuration/configure-webhooks/).

- `PUSH_ARTIFACT`: one `published` artifact event per resource (digest and tag); the
  pusher (`operator`) is the builder, so only pushes by a trusted builder count as builds
  (`trusted_builders`, docs/artifacts.md);
- `DELETE_ARTIFACT`: one `deleted` event per resource;
- `TAG_RETENTION`: one `retention_deleted` event per artifact the retention run deleted
  (`deleted_artifact[].name_tag`, status SUCCESS): Harbor reports the tag, not the digest;
- any other type (pulls, scans, quotas, replication) is acknowledged and not recorded.

The artifact name is the repository's full name (`project/repository`), as `docker pull`
names it after the registry host. Authenticated by the webhook's "Auth Header", which Harbor
sends as the `Authorization` header: set it to the tenant's secret. Event ids derive from the
type, repository and `occur_at`: Harbor's retries are the same event.
"""

from __future__ import annotations

from shipledger.producers.webhooks import contract
from shipledger.producers.webhooks.auth import verify_token
from shipledger.producers.webhooks.payload import (
    JSONObject,
    bounded_id,
    digest,
    objects,
    opt_str,
    parse_object,
    req_str,
    required,
    timestamp,
)
from shipledger.producers.webhooks.result import (
    Event,
    Identified,
    Parsed,
    Request,
    WebhookPayloadError,
)

_ACTIONS: dict[str, contract.ArtifactAction] = {
    "PUSH_ARTIFACT": "published",
    "DELETE_ARTIFACT": "deleted",
}


def verify(request: Request) -> None:
    """Check the webhook's auth header (`Authorization`) against the tenant's secret."""
    verify_token(request, "harbor", "Authorization")


def parse(request: Request) -> Parsed:
    """Map one Harbor notification (see the module docstring)."""
    data = parse_object(request.body)
    event_type = req_str(data, "type")
    occurred_at = timestamp(data.get("occur_at"), "occur_at")
    operator = opt_str(data, "operator")
    if event_type == "TAG_RETENTION":
        return _retention(data, occurred_at, operator)
    action = _ACTIONS.get(event_type)
    if action is None:
        return Parsed.of(event_type, None, f"event type {event_type!r} is not recorded")
    name = req_str(data, "event_data.repository.repo_full_name")
    events: list[Event] = []
    for i, resource in enumerate(objects(data, "event_data.resources")):
        path = f"event_data.resources.{i}"
        sha = digest(opt_str(resource, "digest"), f"{path}.digest")
        tag = opt_str(resource, "tag")
        url = opt_str(resource, "resource_url")
        events.append(
            contract.artifact(
                action=action,
                artifact_name=name,
                occurred_at=occurred_at,
                # An untagged push names the digest as its tag: no version then.
                version=None if tag is None or tag == sha else tag,
                digest=sha,
                builder=operator if action == "published" else None,
                url=url,
                registry=url.split("/", 1)[0] if url and "/" in url else None,
                attributes={"harbor.operator": operator, "harbor.type": event_type},
            )
        )
    object_id = bounded_id(event_type, name, str(data.get("occur_at")))
    return Parsed.of(event_type, None, Identified(object_id, events))


def _retention(data: JSONObject, occurred_at: str, operator: str | None) -> Parsed:
    retention = "event_data.retention"
    project = req_str(data, f"{retention}.project_name")
    host = opt_str(data, f"{retention}.harbor_hostname")
    events: list[Event] = []
    for i, item in enumerate(objects(data, f"{retention}.deleted_artifact")):
        if opt_str(item, "status") != "SUCCESS":
            continue  # not deleted: nothing happened to it
        path = f"{retention}.deleted_artifact.{i}.name_tag"
        name_tag = required(opt_str(item, "name_tag"), path)
        name, sep, tag = name_tag.rpartition(":")
        if not sep or not name or not tag:
            raise WebhookPayloadError(f"{path}: must be <repository>:<tag>, got {name_tag!r:.80}")
        events.append(
            contract.artifact(
                action="retention_deleted",
                artifact_name=f"{project}/{name}",
                occurred_at=occurred_at,
                version=tag,
                registry=host,
                attributes={
                    "harbor.operator": operator,
                    "harbor.type": "TAG_RETENTION",
                    "harbor.retention_policy_id": opt_str(data, f"{retention}.retention_policy_id"),
                },
            )
        )
    if not events:
        return Parsed.of("TAG_RETENTION", None, "the retention run deleted no artifact")
    object_id = bounded_id("TAG_RETENTION", project, str(data.get("occur_at")))
    return Parsed.of("TAG_RETENTION", None, Identified(object_id, events))
