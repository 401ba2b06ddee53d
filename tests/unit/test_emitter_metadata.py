"""Building an event from flags and CI detection, and the errors a CI log reader sees."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shipledger.producers.emitter.metadata import (
    MissingMetadata,
    build_event,
    envvar,
    format_validation_error,
    missing_message,
)

SHA = "0123456789abcdef0123456789abcdef01234567"
GIVEN = {"deployment_id": "d-1", "service": "checkout", "environment": "prod", "actor": "al"}


def test_missing_message_names_each_field_with_flag_and_variable() -> None:
    message = missing_message(["service", "environment", "commit_sha", "actor"])
    lines = message.splitlines()
    assert len(lines) == 5
    for field, flag, var in [
        ("service", "--service", "SHIPLEDGER_SERVICE"),
        ("environment", "--environment", "SHIPLEDGER_ENVIRONMENT"),
        ("commit_sha", "--commit-sha", "SHIPLEDGER_COMMIT_SHA"),
        ("actor", "--actor", "SHIPLEDGER_ACTOR"),
    ]:
        (line,) = [x for x in lines if x.strip().startswith(field + " ")]
        assert flag in line and var in line
    assert "GITHUB_SHA" in message and "GITLAB_USER_LOGIN" in message


def test_build_reports_every_missing_field_at_once() -> None:
    with pytest.raises(MissingMetadata) as err:
        build_event("started", {"pipeline_provider": "cli"}, {"deployment_id": "d", "actor": ""})
    assert err.value.fields == ["service", "environment", "commit_sha", "actor"]


def test_flags_override_detected_values() -> None:
    detected = {"commit_sha": SHA, "actor": "ci-bot", "pipeline_provider": "gitlab_ci"}
    event = build_event("succeeded", detected, {**GIVEN, "trigger": None})
    assert event.actor == "al"  # given wins
    assert event.commit_sha == SHA  # detected fills in
    assert event.pipeline_provider == "gitlab_ci"
    assert event.trigger == "automated"  # None means "not given"


def test_validation_errors_render_as_field_reason_lines() -> None:
    with pytest.raises(ValidationError) as err:
        build_event(
            "started",
            {},
            {
                **GIVEN,
                "commit_sha": "abc123",
                "artifact_digest": "md5:xyz",
                "occurred_at": "2026-01-01T10:00:00",
            },
        )
    lines = format_validation_error(err.value)
    assert lines == [
        "commit_sha: must be a full commit SHA (40 hex characters, or 64 for SHA-256)"
        " (got 'abc123')",
        "artifact_digest: must be a sha256 digest: sha256:<64 hex characters> (got 'md5:xyz')",
        "occurred_at: timestamp needs a time zone (e.g. 2026-11-26T10:00:00Z)"
        " (got '2026-01-01T10:00:00')",
    ]


def test_envvar_names() -> None:
    assert envvar("commit_sha") == "SHIPLEDGER_COMMIT_SHA"
    assert envvar("pipeline_run_url") == "SHIPLEDGER_PIPELINE_URL"
    assert envvar("pipeline_stage") == "SHIPLEDGER_STAGE"
