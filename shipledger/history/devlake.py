"""Apache DevLake exports (pure): rows of its domain-layer table `cicd_deployment_commits`
(backend/core/models/domainlayer/devops/cicd_deployment_commit.go: one row per commit a
deployment shipped to a repository) exported as CSV or NDJSON, as shipledger events.

Each row is one deployment (`id`; `cicd_deployment_id` is kept as an attribute): `started`
at `started_date` (else `created_date`), then, once `status` is `DONE`, `succeeded`
(`result` SUCCESS), `failed` (FAILURE) or `cancelled` (anything else) at `finished_date`.
`environment` is DevLake's (PRODUCTION, STAGING, TESTING: lower-cased; `--environment`
where it is empty), the service `--service` or the repository's name (`repo_url`), the
actor `devlake` (DevLake records no deployer). DevLake stores UTC without a zone.

A `cicd_deployments` row names no commit, which every shipledger deployment needs: it is
refused, naming `commit_sha` (export `cicd_deployment_commits` instead).
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

NAME = "devlake"
_RESULTS = {"SUCCESS": "succeeded", "FAILURE": "failed"}


def matches(row: Mapping[str, Any]) -> bool:
    """Whether `row` is a row of `cicd_deployment_commits` (or of `cicd_deployments`)."""
    return "cicd_scope_id" in row or "cicd_deployment_id" in row


def events(row: Mapping[str, Any], defaults: Defaults) -> list[EventObject]:
    """The shipledger events of one `cicd_deployment_commits` row."""
    row_id = required(row, "id")
    sha = text(row, "commit_sha")
    if sha is None:
        raise Refused(
            "commit_sha",
            "missing (a cicd_deployments row names no commit: export cicd_deployment_commits)",
        )
    repository = repository_of(row, "repo_url", defaults)
    environment = (text(row, "environment") or "").lower() or defaults.environment
    if environment is None:
        raise Refused("environment", "empty: give --environment")
    base: EventObject = {
        "deployment_id": f"{NAME}:{row_id}",
        "service": service_of(repository, defaults, "repo_url"),
        "environment": environment,
        "repository": repository,
        "commit_sha": sha,
        "actor": NAME,
        "pipeline_provider": NAME,
        "pipeline_run_id": text(row, "cicd_deployment_id"),
        "source": f"import:{NAME}",
        "attributes": attributes_of(
            row, NAME, ("cicd_deployment_id", "cicd_scope_id", "name", "ref_name")
        ),
    }
    started = provider_time(row, "started_date") or provider_time(row, "created_date")
    if started is None:
        raise Refused("started_date", "missing (and no created_date)")
    out = [
        {
            **base,
            "event_id": stable_id(NAME, row_id, "started"),
            "event_type": "started",
            "occurred_at": started,
        }
    ]
    if (text(row, "status") or "").upper() == "DONE":
        finished = provider_time(row, "finished_date")
        if finished is None:
            raise Refused("finished_date", "missing on a DONE deployment")
        kind = _RESULTS.get((text(row, "result") or "").upper(), "cancelled")
        out.append(
            {
                **base,
                "event_id": stable_id(NAME, row_id, kind),
                "event_type": kind,
                "occurred_at": finished,
                "duration_ms": _milliseconds(row.get("duration_sec")),
            }
        )
    return out


def _milliseconds(seconds: object) -> int | None:
    """DevLake's `duration_sec` (a float, or its text in CSV) in milliseconds; None if none."""
    if seconds is None or isinstance(seconds, bool):
        return None
    try:
        return round(float(str(seconds)) * 1000)
    except ValueError:
        return None
