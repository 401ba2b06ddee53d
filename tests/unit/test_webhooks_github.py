"""GitHub webhooks: each documented event maps to exactly the expected contract events."""

from __future__ import annotations

from typing import Any

import pytest

from shipledger.producers.webhooks import WebhookAuthError, WebhookPayloadError, dispatch
from tests.webhook_kit import SECRET, Check, Deliver, Mutate, RawRequest

SHA = "f95f852bd8fca8fcc58a9a2d6c842781e32a215e"
DEPLOYMENT_ID = "github:acme/payments-api:145988746"


def test_deployment_created_is_started(deliver: Deliver, check_contract: Check) -> None:
    result = deliver("github", "deployment")
    assert (result.provider, result.event_type, result.ignored) == ("github", "deployment", None)
    assert result.delivery_id == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    [mapped] = result.events
    assert mapped.family == "deployment"
    event = check_contract(mapped)
    assert event["deployment_id"] == DEPLOYMENT_ID
    assert event["event_type"] == "started"
    assert event["service"] == "payments"  # deployment.payload.service
    assert event["environment"] == "production"
    assert event["commit_sha"] == SHA
    assert event["version"] == "v2.4.0"  # the deployed ref is a tag
    assert (event["actor"], event["trigger"]) == ("octocat", "manual")
    assert event["pipeline_provider"] == "github_deployments"
    assert event["source"] == "webhook:github"
    assert event["tenant"] == "acme"


@pytest.mark.parametrize(
    ("state", "event_type"),
    [("in_progress", "started"), ("success", "succeeded"), ("failure", "failed")],
)
def test_deployment_status_outcome(
    deliver: Deliver, check_contract: Check, state: str, event_type: str
) -> None:
    [mapped] = deliver("github", f"deployment_status_{state}").events
    event = check_contract(mapped)
    assert event["event_type"] == event_type
    # Same deployment as the `deployment` event; the deployer stays the deployment's creator.
    assert event["deployment_id"] == DEPLOYMENT_ID
    assert (event["actor"], event["trigger"]) == ("octocat", "manual")
    run = "https://github.com/acme/payments-api/actions/runs/8151239842/job/22279108537"
    assert event["pipeline_run_url"] == run
    assert event["attributes"]["github.deployment_status"] == state
    if event_type == "started":
        assert event["duration_ms"] is None
    else:
        assert event["duration_ms"] == 282_000  # status updated_at - deployment created_at


def test_deployment_status_error_is_failed(deliver: Deliver, check_contract: Check) -> None:
    def error(body: dict[str, Any]) -> None:
        body["deployment_status"]["state"] = "error"

    [mapped] = deliver("github", "deployment_status_failure", error).events
    assert check_contract(mapped)["event_type"] == "failed"


def test_bot_creator_is_automated_and_workflow_run_is_the_pipeline(
    deliver: Deliver, check_contract: Check
) -> None:
    def by_actions(body: dict[str, Any]) -> None:
        body["deployment"]["creator"] = {"login": "github-actions[bot]", "type": "Bot"}
        body["deployment"]["ref"] = "main"
        body["deployment"]["payload"] = '{"kind": "hotfix"}'  # the API allows a JSON string
        body["workflow_run"] = {"id": 8151239842, "html_url": "https://github.com/r/runs/1"}

    [mapped] = deliver("github", "deployment", by_actions).events
    event = check_contract(mapped)
    assert (event["actor"], event["trigger"]) == ("github-actions[bot]", "automated")
    assert event["pipeline_provider"] == "github_actions"
    assert (event["pipeline_run_id"], event["pipeline_run_url"]) == (
        "8151239842",
        "https://github.com/r/runs/1",
    )
    assert event["version"] is None  # a branch is not a version
    assert event["kind"] == "hotfix"
    assert event["service"] == "payments-api"  # no payload.service: the repository's name


def test_push(deliver: Deliver, check_contract: Check) -> None:
    [mapped] = deliver("github", "push").events
    assert mapped.family == "source"
    event = check_contract(mapped)
    assert event["kind"] == "push"
    assert (event["repository"], event["ref"]) == ("acme/payments-api", "refs/heads/main")
    assert event["commit_sha"] == SHA
    assert event["previous_sha"] == "9049f1265b7d61be4a8904a9a27120d2064dab3b"
    assert event["commit_shas"] == ["6dcb09b5b57875f334f61aebed695e2e4193db5e", SHA]
    assert event["author"] == "monalisa"


def test_tag_push_and_deleted_branch(deliver: Deliver, check_contract: Check) -> None:
    def tag(body: dict[str, Any]) -> None:
        body["ref"] = "refs/tags/v2.4.0"
        body["before"] = "0" * 40

    [mapped] = deliver("github", "push", tag).events
    event = check_contract(mapped)
    assert (event["kind"], event["previous_sha"]) == ("tag", None)

    def delete(body: dict[str, Any]) -> None:
        body["deleted"], body["after"] = True, "0" * 40

    result = deliver("github", "push", delete)
    assert result.events == [] and result.ignored is not None and "deleted" in result.ignored


def test_merged_pull_request(deliver: Deliver, check_contract: Check) -> None:
    [mapped] = deliver("github", "pull_request_closed").events
    event = check_contract(mapped)
    assert event["kind"] == "pull_request_merged"
    assert event["commit_sha"] == SHA  # merge_commit_sha
    assert (event["pull_request_number"], event["ref"]) == (1347, "main")
    assert event["pull_request_title"] == "Retry card authorisation on 503"
    assert event["pull_request_url"] == "https://github.com/acme/payments-api/pull/1347"
    assert (event["author"], event["merged_by"]) == ("monalisa", "octocat")


@pytest.mark.parametrize(
    ("action", "merged"), [("closed", False), ("opened", False), ("synchronize", False)]
)
def test_other_pull_request_actions_ignored(deliver: Deliver, action: str, merged: bool) -> None:
    def change(body: dict[str, Any]) -> None:
        body["action"], body["pull_request"]["merged"] = action, merged

    result = deliver("github", "pull_request_closed", change)
    assert result.events == []
    assert result.ignored is not None and repr(action) in result.ignored


def test_release_published_with_a_digest_asset(deliver: Deliver, check_contract: Check) -> None:
    result = deliver("github", "release_published")
    source, artifact = result.events
    assert (source.family, artifact.family) == ("source", "artifact")
    release = check_contract(source)
    assert release["kind"] == "release_published"
    assert (release["release_tag"], release["ref"]) == ("v2.4.0", "refs/tags/v2.4.0")
    assert release["commit_sha"] is None  # target_commitish is a branch name
    assert release["author"] == "octocat"
    asset = check_contract(artifact)
    assert asset["artifact_name"] == "payments-api-2.4.0.tar.gz"
    assert asset["version"] == "v2.4.0"
    assert asset["digest"] == (
        "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
    )
    # The SBOM asset has no digest: no artifact event for it.
    assert len(result.events) == 2


def test_release_other_actions_ignored(deliver: Deliver) -> None:
    def created(body: dict[str, Any]) -> None:
        body["action"] = "created"

    result = deliver("github", "release_published", created)
    assert result.events == [] and result.ignored is not None


@pytest.mark.parametrize("fixture", ["ping", "deployment_status_inactive"])
def test_ignored(deliver: Deliver, fixture: str) -> None:
    result = deliver("github", fixture)
    assert result.events == []
    assert result.ignored


def test_unknown_event_type_ignored(webhook_request: RawRequest) -> None:
    headers, body = webhook_request("github", "ping")
    headers["X-GitHub-Event"] = "star"
    result = dispatch("github", headers, body, secret=SECRET, tenant="acme")
    assert (result.event_type, result.events) == ("star", [])
    assert result.ignored == "GitHub event 'star' is not recorded"


def test_redelivery_has_the_same_ids(deliver: Deliver) -> None:
    first = deliver("github", "release_published")
    again = deliver("github", "release_published")
    ids = [m.event["event_id"] for m in first.events]
    assert ids == [m.event["event_id"] for m in again.events]
    assert len(set(ids)) == len(ids)
    other_tenant = deliver("github", "release_published", tenant="globex")
    assert not set(ids) & {m.event["event_id"] for m in other_tenant.events}


@pytest.mark.parametrize("name", ["deployment", "deployment_status_success", "push"])
def test_replayed_body_under_another_delivery_has_the_same_ids(
    webhook_request: RawRequest, name: str
) -> None:
    """The signature covers the body only: a captured body replayed with a new
    X-GitHub-Delivery must not become a second event (ids come from the body's own ids)."""
    headers, body = webhook_request("github", name)
    first = dispatch("github", headers, body, secret=SECRET, tenant="acme")
    headers["X-GitHub-Delivery"] = "another-delivery"
    second = dispatch("github", headers, body, secret=SECRET, tenant="acme")
    assert [m.event["event_id"] for m in first.events] == [
        m.event["event_id"] for m in second.events
    ]


def test_another_status_of_one_deployment_has_other_ids(webhook_request: RawRequest) -> None:
    def bump(body: dict[str, Any]) -> None:
        body["deployment_status"]["id"] += 1

    ids = []
    for mutate in (None, bump):
        headers, body = webhook_request("github", "deployment_status_success", mutate)
        result = dispatch("github", headers, body, secret=SECRET, tenant="acme")
        ids.append(result.events[0].event["event_id"])
    assert ids[0] != ids[1]


def test_signature_checks(webhook_request: RawRequest) -> None:
    headers, body = webhook_request("github", "deployment")
    with pytest.raises(WebhookAuthError, match="does not match"):
        dispatch("github", headers, body + b" ", secret=SECRET, tenant="acme")
    with pytest.raises(WebhookAuthError, match="does not match"):
        dispatch("github", headers, body, secret="another-secret", tenant="acme")
    # No secret set: the answer of a wrong signature (the set-up is not revealed).
    with pytest.raises(WebhookAuthError, match="does not match"):
        dispatch("github", headers, body, secret=None, tenant="acme")
    headers["X-Hub-Signature-256"] = "sha1=abc"
    with pytest.raises(WebhookAuthError, match="sha256="):
        dispatch("github", headers, body, secret=SECRET, tenant="acme")
    del headers["X-Hub-Signature-256"]
    with pytest.raises(WebhookAuthError, match="missing X-Hub-Signature-256"):
        dispatch("github", headers, body, secret=SECRET, tenant="acme")


def test_headers_are_case_insensitive(webhook_request: RawRequest) -> None:
    headers, body = webhook_request("github", "deployment")
    lower = {k.lower(): v for k, v in headers.items()}
    result = dispatch("github", lower, body, secret=SECRET, tenant="acme")
    assert result.delivery_id == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    assert len(result.events) == 1


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b["deployment"].update(sha="f95f852"), "deployment.sha"),
        (lambda b: b["deployment"].pop("sha"), "deployment.sha"),
        (lambda b: b["deployment"].pop("environment"), "deployment.environment"),
        (lambda b: b["deployment"].update(payload={"kind": "yolo"}), "deployment.payload.kind"),
        (lambda b: b["deployment"].update(created_at="yesterday"), "deployment.created_at"),
        (lambda b: b.pop("repository"), "repository.full_name"),
    ],
)
def test_missing_or_bad_fields_are_named(deliver: Deliver, mutate: Mutate, field: str) -> None:
    with pytest.raises(WebhookPayloadError, match=field.replace(".", r"\.")):
        deliver("github", "deployment", mutate)


def test_pushed_commits_must_be_objects(deliver: Deliver) -> None:
    def strings(body: dict[str, Any]) -> None:
        body["commits"] = [SHA]

    with pytest.raises(WebhookPayloadError, match=r"^commits: must be an array of objects$"):
        deliver("github", "push", strings)
