"""The field dictionary's executable part: canonical names, the aliases normalized at the edge,
and each field's OpenTelemetry semantic-convention name (rendered into docs/fields.md).

Aliases are rewritten to their canonical field before validation and never stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: alias -> canonical field name
ALIASES: dict[str, str] = {
    "target_env": "environment",
    "env": "environment",
    "environment_name": "environment",
    "deployment.environment.name": "environment",
    "app": "service",
    "service_name": "service",
    "service.name": "service",
    "sha": "commit_sha",
    "git_sha": "commit_sha",
    "commit": "commit_sha",
    "vcs.ref.head.revision": "commit_sha",
    "deployer": "actor",
    "user": "actor",
    "triggered_by": "actor",
    "change_ticket": "change_id",
    "ticket": "change_id",
    "change_request": "change_id",
    "repo": "repository",
    "tag": "version",
    "image_digest": "artifact_digest",
    "digest": "artifact_digest",
    "image": "artifact_name",
    "deployment.id": "deployment_id",
    "status": "event_type",
    "type": "kind",
}


#: canonical field name -> OpenTelemetry semantic-convention attribute with the same meaning.
#: Only attributes that exist in the conventions' registry; a field without one stays unmapped
#: rather than getting an invented name. Most of these are still "development" stability there.
OTEL_NAMES: dict[str, str] = {
    "deployment_id": "deployment.id",
    "environment": "deployment.environment.name",
    "status": "deployment.status",
    "service": "service.name",
    "version": "service.version",
    "region": "cloud.region",
    "repository": "vcs.repository.url.full",
    "commit_sha": "vcs.ref.head.revision",
    "artifact_digest": "artifact.hash",
    "actor": "enduser.id",
    "pipeline_run_id": "cicd.pipeline.run.id",
    "pipeline_run_url": "cicd.pipeline.run.url.full",
    "pipeline_stage": "cicd.pipeline.task.name",
    "exit_code": "process.exit.code",
}


def apply_aliases(data: Mapping[str, Any]) -> dict[str, Any]:
    """Rename aliased keys to canonical ones; a key given both ways is an error naming both."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        canonical = ALIASES.get(key, key)
        if canonical in out and canonical != key:
            raise ValueError(
                f"field {canonical!r} given twice (as {canonical!r} and alias {key!r})"
            )
        if canonical in out:
            raise ValueError(f"field {canonical!r} given twice (directly and through an alias)")
        out[canonical] = value
    return out
