"""GitLab webhooks: deployments (full SHA resolution), merged MRs, pushes, tags, the token."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from shipledger.producers.webhooks import WebhookPayloadError, dispatch
from tests.webhook_kit import SECRET, Check, Deliver, RawRequest

FULL = "279484c09fbe69ededfced8c1bb6e6d24616b468"


@pytest.mark.parametrize(
    ("fixture", "event_type", "occurred_at"),
    [
        ("deployment_running", "started", "2021-04-28T19:48:12+00:00"),
        ("deployment_success", "succeeded", "2021-04-28T19:50:00+00:00"),
    ],
)
def test_deployment(
    deliver: Deliver, check_contract: Check, fixture: str, event_type: str, occurred_at: str
) -> None:
    result = deliver("gitlab", fixture)
    assert result.event_type == "Deployment Hook"
    [mapped] = result.events
    event = check_contract(mapped)
    assert event["deployment_id"] == "gitlab:shop/checkout-service:15"
    assert event["event_type"] == event_type
    assert (event["service"], event["environment"]) == ("checkout-service", "staging")
    assert event["commit_sha"] == FULL  # from commit_url, not the short_sha
    assert (event["actor"], event["pipeline_provider"]) == ("jsmith", "gitlab_ci")
    assert (
        event["pipeline_run_url"] == "https://gitlab.acme.example/shop/checkout-service/-/jobs/796"
    )
    assert mapped.event["occurred_at"] == occurred_at
    assert event["source"] == "webhook:gitlab"


@pytest.mark.parametrize(
    ("status", "event_type"), [("failed", "failed"), ("canceled", "cancelled")]
)
def test_deployment_end_states(
    deliver: Deliver, check_contract: Check, status: str, event_type: str
) -> None:
    def end(body: dict[str, Any]) -> None:
        body["status"] = status

    [mapped] = deliver("gitlab", "deployment_success", end).events
    assert check_contract(mapped)["event_type"] == event_type


def test_deployment_status_created_ignored(deliver: Deliver) -> None:
    def created(body: dict[str, Any]) -> None:
        body["status"] = "created"

    result = deliver("gitlab", "deployment_success", created)
    assert result.events == [] and result.ignored is not None and "'created'" in result.ignored


def _without_commit_url(body: dict[str, Any]) -> None:
    del body["commit_url"]


def test_short_sha_resolved_by_the_callers_resolver(
    deliver: Deliver, check_contract: Check
) -> None:
    asked: list[tuple[str, str]] = []

    def resolve(repository: str, short_sha: str) -> str | None:
        asked.append((repository, short_sha))
        return FULL.upper()

    [mapped] = deliver(
        "gitlab", "deployment_success", _without_commit_url, resolve_sha=resolve
    ).events
    assert check_contract(mapped)["commit_sha"] == FULL
    assert asked == [("shop/checkout-service", "279484c0")]


@pytest.mark.parametrize(
    "resolved",
    [None, "279484c0", "0" * 40],  # unknown, still short, and not the commit short_sha names
)
def test_unresolvable_short_sha_rejected(deliver: Deliver, resolved: str | None) -> None:
    with pytest.raises(
        WebhookPayloadError, match=r"commit_url: cannot resolve short_sha '279484c0'"
    ):
        deliver(
            "gitlab", "deployment_success", _without_commit_url, resolve_sha=lambda r, s: resolved
        )
    with pytest.raises(WebhookPayloadError, match="commit_url"):
        deliver("gitlab", "deployment_success", _without_commit_url)


def test_commit_url_of_another_commit_is_not_trusted(deliver: Deliver) -> None:
    def mismatch(body: dict[str, Any]) -> None:
        body["commit_url"] = body["commit_url"].replace(FULL, "a" * 40)

    with pytest.raises(WebhookPayloadError, match="commit_url"):
        deliver("gitlab", "deployment_success", mismatch)


def test_merged_merge_request(deliver: Deliver, check_contract: Check) -> None:
    [mapped] = deliver("gitlab", "merge_request_merged").events
    event = check_contract(mapped)
    assert event["kind"] == "pull_request_merged"
    assert (event["repository"], event["ref"]) == ("shop/checkout-service", "main")
    assert (event["commit_sha"], event["pull_request_number"]) == (FULL, 42)
    assert event["pull_request_title"] == "Fix rounding of basket totals"
    assert event["merged_by"] == "jsmith"


def test_fast_forward_merge_uses_the_last_commit(deliver: Deliver, check_contract: Check) -> None:
    def fast_forward(body: dict[str, Any]) -> None:
        body["object_attributes"]["merge_commit_sha"] = None

    [mapped] = deliver("gitlab", "merge_request_merged", fast_forward).events
    assert check_contract(mapped)["commit_sha"] == "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"


@pytest.mark.parametrize("action", ["open", "update", "close", "approved"])
def test_other_merge_request_actions_ignored(deliver: Deliver, action: str) -> None:
    def change(body: dict[str, Any]) -> None:
        body["object_attributes"]["action"] = action

    result = deliver("gitlab", "merge_request_merged", change)
    assert result.events == [] and result.ignored is not None


def test_push(deliver: Deliver, check_contract: Check) -> None:
    [mapped] = deliver("gitlab", "push").events
    event = check_contract(mapped)
    assert (event["kind"], event["ref"], event["commit_sha"]) == ("push", "refs/heads/main", FULL)
    assert event["previous_sha"] == "95790bf891e76fee5e1747ab589903a6a1f80f22"
    assert event["commit_shas"] == ["da1560886d4f094c3e6c9ef40349f7d38b5d27d7", FULL]
    assert event["author"] == "jsmith"
    assert mapped.event["occurred_at"] == "2021-04-28T19:40:02+00:00"  # the head commit's time


def test_tag_push(deliver: Deliver, check_contract: Check) -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    [mapped] = deliver("gitlab", "tag_push", received_at=when).events
    event = check_contract(mapped)
    assert (event["kind"], event["ref"]) == ("tag", "refs/tags/v1.0.0")
    assert event["commit_sha"] == FULL  # checkout_sha: the commit, not the annotated tag object
    assert event["previous_sha"] is None
    assert mapped.event["occurred_at"] == "2026-01-02T03:04:05+00:00"  # none in the payload


def test_deleted_branch_and_other_hooks_ignored(deliver: Deliver) -> None:
    def delete(body: dict[str, Any]) -> None:
        body["after"] = "0" * 40

    assert deliver("gitlab", "push", delete).ignored
    result = deliver("gitlab", "pipeline")
    assert result.events == [] and result.ignored == "GitLab event 'Pipeline Hook' is not recorded"


def test_redelivery_has_the_same_ids(webhook_request: RawRequest) -> None:
    headers, body = webhook_request("gitlab", "deployment_success")
    first = dispatch("gitlab", headers, body, secret=SECRET, tenant="acme")
    again = dispatch("gitlab", headers, body, secret=SECRET, tenant="acme")
    assert first.delivery_id == "8a5b0c77-2f8d-4e3c-9b33-6a1d2f6c0002"
    assert first.events[0].event["event_id"] == again.events[0].event["event_id"]
