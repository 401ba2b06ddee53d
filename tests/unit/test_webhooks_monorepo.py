"""Monorepo pushes (GitHub and GitLab documented push payloads, tests/fixtures/webhooks/README):
each pushed commit's changed paths reach the SourceEvent (v2 `changed_paths`), and the policy's
path map says which services the push touches (docs/changes.md)."""

from __future__ import annotations

from typing import Any

import pytest

from shipledger.producers.webhooks import WebhookPayloadError
from shipledger.schemas.monorepo import Monorepos, affected_services
from tests.webhook_kit import Check, Deliver

MAP = {
    "checkout": ["services/checkout/**", "libs/money/**"],
    "search": ["services/search/**"],
}
X1 = "4f0b6a1d2c3e4f5a6b7c8d9e0f1a2b3c4d5e6f70"
X2 = "8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a71"
X3 = "c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c172"
L1 = "e1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f901"
L2 = "f2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a012"


def test_github_monorepo_push(deliver: Deliver, check_contract: Check) -> None:
    [mapped] = deliver("github", "push_monorepo").events
    event = check_contract(mapped)
    assert event["commit_shas"] == [X1, X2, X3]
    assert event["changed_paths"] == {
        X1: ["services/checkout/app/authorise.py"],
        X2: [
            "services/search/ranking/__init__.py",
            "services/search/ranking/legacy.py",
            "services/search/ranking/sku.py",
        ],
        X3: ["libs/money/rounding.py", "services/checkout/pyproject.toml"],
    }
    repos = Monorepos.model_validate({"acme/platform": MAP})
    touched = affected_services(repos, event["repository"], event["changed_paths"])
    assert touched == {"checkout": [X1, X3], "search": [X2]}


def test_gitlab_monorepo_push(deliver: Deliver, check_contract: Check) -> None:
    [mapped] = deliver("gitlab", "push_monorepo").events
    event = check_contract(mapped)
    assert event["repository"] == "shop/platform"
    assert event["changed_paths"] == {
        L1: ["services/checkout/app/basket.rb", "services/checkout/spec/basket_spec.rb"],
        L2: ["services/search/config/index.yml", "services/search/lib/legacy_indexer.rb"],
    }
    repos = Monorepos.model_validate({"shop/platform": MAP})
    touched = affected_services(repos, event["repository"], event["changed_paths"])
    assert touched == {"checkout": [L1], "search": [L2]}


def test_commits_without_file_lists_have_no_paths(deliver: Deliver, check_contract: Check) -> None:
    def bare(body: dict[str, Any]) -> None:
        for commit in body["commits"]:
            for name in ("added", "modified", "removed"):
                commit.pop(name, None)

    [mapped] = deliver("github", "push_monorepo", bare).events
    assert check_contract(mapped)["changed_paths"] == {}


@pytest.mark.parametrize("provider", ["github", "gitlab"])
def test_bad_file_list_names_the_field(deliver: Deliver, provider: str) -> None:
    def bad(body: dict[str, Any]) -> None:
        body["commits"][1]["removed"] = "services/search/x.py"

    with pytest.raises(WebhookPayloadError, match=r"^commits\[1\]\.removed: must be an array"):
        deliver(provider, "push_monorepo", bad)
