"""The commit range of a deployment (first deployment, rollback, divergence, late pushes)
and the monorepo path filter: pure logic of `sinks.ledger.commit_range` and
`schemas.monorepo`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shipledger.schemas.monorepo import Monorepos, affected_services, touches
from shipledger.schemas.policy import PolicyError, load_policy
from shipledger.sinks.ledger.change_sets import (
    SUMMARY_FIELDS,
    Deployed,
    StoredChangeSet,
    Succeeded,
    previous_of,
)
from shipledger.sinks.ledger.commit_range import History, SourceFact, commit_range

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def sha(n: int) -> str:
    return f"{n:040x}"


def push(prev: int | None, *commits: int, at: int = 0, **kw: object) -> SourceFact:
    return SourceFact(
        kind="push",
        occurred_at=T0 + timedelta(minutes=at),
        commit_sha=sha(commits[-1]),
        previous_sha=None if prev is None else sha(prev),
        commit_shas=tuple(sha(c) for c in commits),
        author="mona",
        **kw,  # type: ignore[arg-type]
    )


def merged(number: int, merge: int, *, at: int, author: str = "hubot") -> SourceFact:
    return SourceFact(
        kind="pull_request_merged",
        occurred_at=T0 + timedelta(minutes=at),
        commit_sha=sha(merge),
        pr_number=number,
        pr_title=f"PR {number}",
        author=author,
    )


# 1 <- 2 <- 3 (push 1), 3 <- 4 <- 5 (push 2), 5 <- 6 (push 3); PR 7 merged as commit 5.
HISTORY = History.of(
    [
        push(None, 1, 2, 3, at=0),
        push(3, 4, 5, at=10),
        merged(7, 5, at=11),
        push(5, 6, at=20),
    ]
)


def shas(found: object) -> list[int]:
    return [int(c.sha, 16) for c in found.commits]  # type: ignore[attr-defined]


def test_forward_range_is_newest_first_and_excludes_from() -> None:
    found = commit_range(HISTORY, sha(3), sha(6))
    assert shas(found) == [6, 5, 4]
    assert not found.reverse and found.complete
    pr = found.commits[1]
    assert (pr.pr_number, pr.pr_title, pr.author) == (7, "PR 7", "hubot")
    assert found.commits[0].author == "mona"  # no PR: the pusher
    assert found.commits[0].first_seen_at == T0 + timedelta(minutes=20)
    assert found.pr_numbers == {7}


def test_first_deployment_gets_every_known_ancestor() -> None:
    found = commit_range(HISTORY, None, sha(4))
    assert shas(found) == [4, 3, 2, 1]
    assert found.complete


def test_rollback_is_the_reverse_range() -> None:
    found = commit_range(HISTORY, sha(6), sha(3))
    assert shas(found) == [6, 5, 4]
    assert found.reverse and found.complete


def test_redeploy_of_the_same_commit_is_empty() -> None:
    found = commit_range(HISTORY, sha(5), sha(5))
    assert found.commits == () and not found.reverse


def test_unknown_previous_commit_is_incomplete() -> None:
    found = commit_range(HISTORY, sha(99), sha(6))
    assert shas(found) == [6, 5, 4, 3, 2, 1]
    assert not found.complete


def test_force_push_keeps_what_only_the_new_commit_reaches() -> None:
    diverged = History.of([*[push(None, 1, 2, 3), push(3, 4, 5, at=1)], push(3, 8, 9, at=2)])
    found = commit_range(diverged, sha(5), sha(9))
    assert shas(found) == [9, 8]
    assert not found.reverse and found.complete


def test_late_push_arriving_out_of_order_builds_the_same_history() -> None:
    late = History.of([push(5, 6, at=20), push(3, 4, 5, at=10), push(None, 1, 2, 3, at=0)])
    assert shas(commit_range(late, sha(3), sha(6))) == [6, 5, 4]


def test_new_branch_zero_before_has_no_parent() -> None:
    zero = "0" * 40
    fact = SourceFact(
        kind="push", occurred_at=T0, commit_sha=sha(2), previous_sha=zero, commit_shas=(sha(2),)
    )
    assert shas(commit_range(History.of([fact]), None, sha(2))) == [2]


def test_limit_bounds_the_walk() -> None:
    found = commit_range(HISTORY, None, sha(6), limit=2)
    assert shas(found) == [6, 5]


def test_monorepo_filter_keeps_commits_touching_the_service() -> None:
    paths = {
        sha(4): ["services/search/index.py"],
        sha(5): ["services/checkout/app.py", "README.md"],
        sha(6): ["libs/money/round.py"],
    }
    history = History.of([push(None, 1, 2, 3), push(3, 4, 5, 6, at=5, changed_paths=paths)])
    globs = ["services/checkout/**", "libs/money/**"]
    found = commit_range(history, sha(3), sha(6), keep=history.touching(globs))
    assert shas(found) == [6, 5]  # 4 touches search only


def test_globs() -> None:
    assert touches(["services/checkout/**"], ["services/checkout/a/b/c.py"])
    assert touches(["libs/*.py"], ["libs/a.py"])
    assert not touches(["libs/*.py"], ["libs/x/a.py"])
    assert touches(["docs/?.md"], ["docs/a.md"])
    assert not touches(["services/checkout/**"], ["services/checkout-v2/a.py"])


def test_affected_services_of_a_push() -> None:
    repos = Monorepos.model_validate(
        {"acme/platform": {"checkout": ["services/checkout/**"], "search": ["services/search/**"]}}
    )
    got = affected_services(
        repos,
        "acme/platform",
        {"a": ["services/checkout/x.py"], "b": ["services/search/y", "services/checkout/z"]},
    )
    assert got == {"checkout": ["a", "b"], "search": ["b"]}
    assert affected_services(repos, "other/repo", {"a": ["x"]}) == {}


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ("acme/platform: {checkout: []}", "monorepos.acme/platform.checkout"),
        ("acme/platform: {checkout: ['/abs/**']}", "monorepos.acme/platform.checkout.0"),
        ("acme/platform: {checkout: 'services/**'}", "monorepos.acme/platform.checkout"),
    ],
)
def test_policy_monorepos_are_validated_naming_the_field(
    tmp_path: Path, body: str, where: str
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"version: t\nmonorepos:\n  {body}\n")
    with pytest.raises(PolicyError) as err:
        load_policy(policy)
    assert where in str(err.value)


def test_policy_monorepos_load(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: t\nmonorepos:\n  acme/platform:\n    checkout: [services/c/**]\n")
    loaded = load_policy(policy).monorepos
    assert loaded.globs("acme/platform", "checkout") == ("services/c/**",)
    assert loaded.globs("acme/platform", "search") == ()
    assert loaded.globs("other", "checkout") is None
    assert loaded.globs(None, "checkout") is None


def _deployed(dep: str, at: int) -> Deployed:
    when = T0 + timedelta(minutes=at)
    return Deployed(
        "t", dep, "checkout", "prod", "acme/app", sha(at), "succeeded", None, when, when, when
    )


def test_previous_is_the_latest_succeeded_started_before() -> None:
    candidates = [
        Succeeded("a", sha(1), T0 + timedelta(minutes=1)),
        Succeeded("c", sha(3), T0 + timedelta(minutes=3)),
        Succeeded("b", sha(2), T0 + timedelta(minutes=3)),
        Succeeded("later", sha(9), T0 + timedelta(minutes=9)),
    ]
    previous = previous_of(_deployed("d", 5), candidates)
    assert previous is not None and previous.deployment_id == "c"  # tie on time: highest id
    assert previous_of(_deployed("d", 1), candidates) is None  # the first one
    assert previous_of(_deployed("later", 9), candidates[3:]) is None  # never itself


def test_answer_has_lead_times_and_pull_requests() -> None:
    deployed = T0 + timedelta(hours=2)
    row = {"deployed_at": deployed, "reverse": 0, "pr_title": "Fix", "author": "octo"}
    stored = StoredChangeSet(
        summary=dict.fromkeys(SUMMARY_FIELDS) | {"reverse": 0, "complete": 1},
        commits=[
            row | {"commit_sha": sha(2), "pr_number": 7, "first_seen_at": T0},
            row | {"commit_sha": sha(1), "pr_number": 7, "first_seen_at": None},
        ],
    )
    answer = stored.as_dict()
    assert (answer["reverse"], answer["complete"]) == (False, True)
    assert [c["lead_time_s"] for c in answer["commits"]] == [7200.0, None]
    assert answer["pull_requests"] == [
        {"number": 7, "title": "Fix", "author": "octo", "commits": [sha(2), sha(1)]}
    ]
