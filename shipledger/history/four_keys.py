"""Four Keys exports (pure): rows of its BigQuery tables `four_keys.deployments` and
`four_keys.changes` (dora-team/fourkeys, queries/deployments.sql and changes.sql), exported
as newline-delimited JSON or CSV, as shipledger events.

- A `deployments` row (`source`, `deploy_id`, `time_created`, `main_commit`, `changes`: the
  commit ids it shipped; `repository` where the export added it) is one successful
  deployment (Four Keys keeps only those): a `succeeded` event at `time_created`, shipping
  `main_commit` (else the first of `changes`). Four Keys has no environment, service or
  deployer: the environment is `--environment` (default `production`, the only deployments
  it counts), the service `--service` or the repository's name, the actor its `source`.
- A `changes` row (`source`, `event_type`, `change_id`: a commit SHA, `time_created`: the
  commit's time) of a `push` is a source event (a push of that commit) of `repository`
  (the row's, else `--repository`); other event types carry no commit and are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shipledger.history.mapping import (
    Defaults,
    EventObject,
    Refused,
    provider_time,
    required,
    service_of,
    stable_id,
    text,
)

NAME = "four-keys"
#: Four Keys counts production deployments only.
ENVIRONMENT = "production"


def matches(row: Mapping[str, Any]) -> bool:
    """Whether `row` is a row of either Four Keys table."""
    return "time_created" in row and ("deploy_id" in row or "change_id" in row)


def events(row: Mapping[str, Any], defaults: Defaults) -> list[EventObject]:
    """The shipledger events of one row of `four_keys.deployments` or `four_keys.changes`."""
    if "deploy_id" in row:
        return [_deployment(row, defaults)]
    return [_change(row, defaults)]


def _shipped(row: Mapping[str, Any]) -> tuple[str, list[str]]:
    changes = row.get("changes")
    if changes is None:
        changes = []
    if not isinstance(changes, list) or not all(isinstance(c, str) for c in changes):
        raise Refused("changes", "must be an array of commit ids")
    main = text(row, "main_commit") or (changes[0] if changes else None)
    if main is None:
        raise Refused("main_commit", "missing, and no changes to take the commit from")
    return main, changes


def _deployment(row: Mapping[str, Any], defaults: Defaults) -> EventObject:
    source = required(row, "source")
    deploy_id = required(row, "deploy_id")
    main, changes = _shipped(row)
    repository = text(row, "repository") or defaults.repository
    return {
        "event_id": stable_id(NAME, "deployment", source, deploy_id),
        "deployment_id": f"{NAME}:{source}:{deploy_id}",
        "event_type": "succeeded",
        "service": service_of(repository, defaults, "repository"),
        "environment": defaults.environment or ENVIRONMENT,
        "repository": repository,
        "commit_sha": main,
        "actor": source,
        "pipeline_provider": source,
        "occurred_at": provider_time(row, "time_created") or required(row, "time_created"),
        "source": f"import:{NAME}",
        "attributes": {"four_keys.changes": str(len(changes))},
    }


def _change(row: Mapping[str, Any], defaults: Defaults) -> EventObject:
    kind = required(row, "event_type")
    if kind != "push":
        raise Refused("event_type", f"{kind!r}: only push changes name a commit")
    sha = required(row, "change_id")
    repository = text(row, "repository") or defaults.repository
    if repository is None:
        raise Refused("repository", "Four Keys changes name no repository: give --repository")
    return {
        "family": "source",
        "event_id": stable_id(NAME, "change", required(row, "source"), sha),
        "kind": "push",
        "repository": repository,
        "commit_sha": sha,
        "commit_shas": [sha],
        "occurred_at": provider_time(row, "time_created") or required(row, "time_created"),
    }
