"""GitHub deployments (pure): the objects of `GET /repos/{owner}/{repo}/deployments`, each
with the answer of its `statuses_url` (`GET .../deployments/{id}/statuses`) saved beside it
as `statuses`, as shipledger events (docs/import.md shows how to save them).

A deployment is `started` at its `created_at` by its `creator`, shipping `sha` of the
repository its `repository_url` names to its `environment`; its statuses, oldest first,
finish it: `success` → `succeeded`, `failure` and `error` → `failed`, `inactive` after a
success (a later deployment replaced it) and the waiting states (`queued`, `pending`,
`in_progress`) add nothing. The service is `payload.service` when the deployment's payload
names one, else `--service`, else the repository's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shipledger.history.mapping import (
    Defaults,
    EventObject,
    Refused,
    attributes_of,
    provider_time,
    repository_of,
    required,
    service_of,
    stable_id,
    text,
)

NAME = "github"
_FINISHING = {"success": "succeeded", "failure": "failed", "error": "failed"}


def matches(row: Mapping[str, Any]) -> bool:
    """Whether `row` is a GitHub deployment object."""
    return "statuses_url" in row or ("sha" in row and "task" in row and "environment" in row)


def events(row: Mapping[str, Any], defaults: Defaults) -> list[EventObject]:
    """The shipledger events of one deployment object and its `statuses`."""
    deployment = required(row, "id")
    repository = repository_of(row, "repository_url", defaults)
    if repository is None:
        raise Refused("repository_url", "missing: give --repository")
    creator = row.get("creator")
    actor = text(creator, "login") if isinstance(creator, Mapping) else None
    payload = row.get("payload")
    named = text(payload, "service") if isinstance(payload, Mapping) else None
    statuses = row.get("statuses", [])
    if not isinstance(statuses, list) or not all(isinstance(s, Mapping) for s in statuses):
        raise Refused("statuses", "must be the array GET .../statuses answers")
    base: EventObject = {
        "deployment_id": f"{NAME}:{repository}:{deployment}",
        "service": named or service_of(repository, defaults, "repository_url"),
        "environment": required(row, "environment"),
        "repository": repository,
        "commit_sha": required(row, "sha"),
        "actor": actor or NAME,
        "pipeline_provider": NAME,
        "source": f"import:{NAME}",
        "attributes": attributes_of(row, NAME, ("ref", "task", "description")),
    }
    created = provider_time(row, "created_at")
    if created is None:
        raise Refused("created_at", "missing")
    out = [
        {
            **base,
            "event_id": stable_id(NAME, repository, deployment, "created"),
            "event_type": "started",
            "occurred_at": created,
        }
    ]
    ordered = sorted(
        statuses, key=lambda s: (provider_time(s, "created_at") or "", text(s, "id") or "")
    )
    for index, status in enumerate(ordered):
        kind = _FINISHING.get(text(status, "state") or "")
        if kind is None:
            continue
        at = provider_time(status, "created_at")
        if at is None:
            raise Refused(f"statuses[{index}].created_at", "missing")
        by = status.get("creator")
        out.append(
            {
                **base,
                "event_id": stable_id(NAME, repository, deployment, "status", text(status, "id")),
                "event_type": kind,
                "occurred_at": at,
                "actor": (text(by, "login") if isinstance(by, Mapping) else None) or base["actor"],
                "pipeline_run_url": text(status, "log_url") or text(status, "target_url"),
            }
        )
    return out
