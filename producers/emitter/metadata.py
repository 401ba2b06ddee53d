"""From command-line values and CI detection to a validated DeploymentEvent, with errors a CI
log reader can act on: every missing field named with the flag and variable that provides it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from shipledger.producers.emitter.ci_detect import DETECTED_FROM, strip_credentials
from shipledger.schemas.models import MANDATORY_METADATA, DeploymentEvent, TimeWindow
from shipledger.schemas.validation import field_errors

#: event field -> command-line flag (the env var is SHIPLEDGER_ + the flag's name, upper-cased)
FLAGS: dict[str, str] = {
    "service": "--service",
    "environment": "--environment",
    "region": "--region",
    "tenant": "--tenant",
    "repository": "--repository",
    "commit_sha": "--commit-sha",
    "version": "--version",
    "artifact_name": "--artifact-name",
    "artifact_digest": "--artifact-digest",
    "actor": "--actor",
    "trigger": "--trigger",
    "kind": "--kind",
    "change_id": "--change-id",
    "pipeline_run_url": "--pipeline-url",
    "pipeline_stage": "--stage",
    "deployment_id": "--deployment-id",
    "occurred_at": "--occurred-at",
    "attributes": "--attr",
}


def envvar(field: str) -> str:
    """The environment variable behind a field's flag (`--commit-sha` -> SHIPLEDGER_COMMIT_SHA)."""
    return "SHIPLEDGER_" + FLAGS[field].removeprefix("--").replace("-", "_").upper()


class MissingMetadata(ValueError):
    """Mandatory fields neither given nor detected; the message names each and its source."""

    def __init__(self, fields: list[str]) -> None:
        self.fields = fields
        super().__init__(missing_message(fields))


def missing_message(fields: list[str]) -> str:
    """One error naming every missing field with the flag / variable that provides it."""
    width = max(len(f) for f in fields)
    lines = [f"missing deployment metadata ({len(fields)} field(s)):"]
    for name in fields:
        hint = f"pass {FLAGS[name]} or set {envvar(name)}"
        if name in DETECTED_FROM:
            hint += f" (detected in CI from {DETECTED_FROM[name]})"
        lines.append(f"  {name:<{width}}  {hint}")
    return "\n".join(lines)


def format_validation_error(exc: ValidationError) -> list[str]:
    """pydantic errors as `field: reason` lines (flag names where the user typed one)."""
    return [f"{field}: {reason}" for field, reason in field_errors(exc)]


def build_event(
    event_type: str,
    detected: Mapping[str, str],
    given: Mapping[str, Any],
    window: TimeWindow | None = None,
) -> DeploymentEvent:
    """Merge CI-detected values with given ones (given win; None means not given) and validate
    (`occurred_at` inside `window` when given: `TimeWindow.from_settings(settings)`).

    A repository URL loses its user-info, whoever gave it (`--repository "$GIT_URL"` too).
    Raises MissingMetadata naming every absent mandatory field, else pydantic's ValidationError.
    """
    data: dict[str, Any] = dict(detected)
    data.update({key: value for key, value in given.items() if value is not None})
    if isinstance(data.get("repository"), str):
        data["repository"] = strip_credentials(data["repository"])
    data["event_type"] = event_type
    missing = [
        name
        for name in MANDATORY_METADATA
        if not (isinstance(data.get(name), str) and data[name].strip())
    ]
    if missing:
        raise MissingMetadata(missing)
    return DeploymentEvent.model_validate(data, context={"time_window": window})
