"""RecentCommits: short SHAs resolve only to a unique remembered full SHA of the same tenant
and repository."""

from __future__ import annotations

from shipledger.producers.api.recent_commits import RecentCommits

A = "279484c09fbe69ededfced8c1bb6e6d24616b468"
B = "279484c0aaaa69ededfced8c1bb6e6d24616b468"
C = "0123456789abcdef0123456789abcdef01234567"


def test_resolves_a_unique_prefix_within_tenant_and_repository() -> None:
    commits = RecentCommits()
    commits.remember("acme", [{"repository": "shop/app", "commit_sha": A, "commit_shas": [C]}])
    assert commits.resolve("acme", "shop/app", "279484C0") == A
    assert commits.resolve("acme", "shop/app", "01234567") == C
    assert commits.resolve("acme", "shop/other", "279484c0") is None
    assert commits.resolve("globex", "shop/app", "279484c0") is None


def test_an_ambiguous_prefix_resolves_to_nothing() -> None:
    commits = RecentCommits()
    commits.remember("acme", [{"repository": "shop/app", "commit_shas": [A, B]}])
    assert commits.resolve("acme", "shop/app", "279484c0") is None
    assert commits.resolve("acme", "shop/app", "279484c09") == A


def test_the_oldest_are_forgotten_beyond_capacity() -> None:
    commits = RecentCommits(capacity=1)
    commits.remember("acme", [{"repository": "shop/app", "commit_sha": A}])
    commits.remember("acme", [{"repository": "shop/app", "commit_sha": C}])
    assert commits.resolve("acme", "shop/app", "279484c0") is None
    assert commits.resolve("acme", "shop/app", "0123") == C
