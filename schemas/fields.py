"""The field dictionary's executable part: canonical names, the aliases normalized at the edge,
and each field's OpenTelemetry semantic-convention name (rendered into docs/fields.md).

Aliases are rewritten to their canonical field before validation and never stored.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
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
    "ref": "vcs.ref.head.name",
    "pull_request_number": "vcs.change.id",
    "pull_request_title": "vcs.change.title",
}

#: Per schema (record name), fields whose OpenTelemetry name differs from `OTEL_NAMES`'s: an
#: artifact's own version and digest are `artifact.*`, not the deployed service's.
OTEL_NAMES_BY_SCHEMA: dict[str, dict[str, str]] = {
    "ArtifactEvent": {"version": "artifact.version", "digest": "artifact.hash"},
}


def otel_name(schema: str, field: str) -> str | None:
    """The OpenTelemetry attribute of `field` in the record named `schema`, if there is one."""
    return OTEL_NAMES_BY_SCHEMA.get(schema, {}).get(field) or OTEL_NAMES.get(field)


class UnknownFieldError(ValueError):
    """Keys that are neither canonical fields nor aliases. Each is named, with the canonical
    field it nearly matches as a suggestion; nothing is ever mapped by guessing."""

    def __init__(self, keys: list[str], known: Collection[str]) -> None:
        self.keys = keys
        super().__init__("; ".join(_unknown_reason(key, known) for key in keys))


def _unknown_reason(key: str, known: Collection[str]) -> str:
    import difflib  # here: only a refused field needs it, and every `emit` imports this module

    candidates = {**{name: name for name in known}, **ALIASES}
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.75)
    if not close:
        return f"unknown field {key!r}"
    return f"unknown field {key!r} (did you mean {candidates[close[0]]!r}?)"


def apply_aliases(data: Mapping[str, Any], known: Collection[str] | None = None) -> dict[str, Any]:
    """Rename aliased keys to canonical ones; a key given both ways is an error naming both.

    With `known` (the canonical field names), a key that is neither known nor an alias raises
    UnknownFieldError naming it (and the near-miss canonical name, if any) instead of passing
    it on.
    """
    if known is not None:
        unknown = [k for k in data if k not in known and k not in ALIASES]
        if unknown:
            raise UnknownFieldError(unknown, known)
    if ALIASES.keys().isdisjoint(data):  # the usual case: nothing to rename, nothing twice
        return dict(data)
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


#: Fields that name a person, per record (schema name): the ledger stores them pseudonymised
#: when privacy is on (docs/privacy.md; `sinks.ledger.pseudonyms`). `approvals.approver` is
#: the `approver` of each record of the `approvals` array. The processors still judge on the
#: names (four eyes, directory groups): only what the sink stores is pseudonymised.
PERSONAL_FIELDS: dict[str, tuple[str, ...]] = {
    "DeploymentEvent": ("actor", "approvers"),
    "DeploymentRecord": ("actor", "approvers"),
    "ChangeEvent": ("actor", "requested_by", "approvals.approver"),
    "SourceEvent": ("author", "merged_by"),
    "GateDecision": ("actor",),
    "Alert": ("actor",),
}

#: Free text that may mention a person by name (an alert's message names the deployer and the
#: approvers): every name of the tenant's lookup is replaced by its pseudonym there.
PERSONAL_TEXT: dict[str, tuple[str, ...]] = {
    "Alert": ("message", "evidence"),
    "GateDecision": ("reasons", "emergency_reason"),
    "ChangeEvent": ("approvals.comment",),
}
