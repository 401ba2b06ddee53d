"""The field dictionary's executable part: canonical names and the aliases normalized at the edge.

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
