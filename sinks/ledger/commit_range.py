"""The commits a deployment shipped, from the source events the ledger holds (pure logic).

History is what pushes say: a push moves a ref from `previous_sha` through `commit_shas`
(oldest first, as GitHub and GitLab list them) to `commit_sha`, so each pushed commit's parent
is the one before it (the first's is `previous_sha`). Merged pull requests name their merge
commit (and may list their own commits): those commits get the PR's number, title and author.

A deployment's range is (from_sha, to_sha]: the commits reachable from the deployed commit
that are not reachable from the previous succeeded deployment's commit, newest first. When the
deployed commit is an ancestor of the previous one (a rollback), the range is the reverse: the
commits taken out, `reverse`. A first deployment (no from_sha) gets every known ancestor of its
commit. Walks are bounded by `limit` commits (a deployment years after the last one, or a
history the ledger only partly knows, never loads everything).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from types import MappingProxyType
from typing import NamedTuple

from shipledger.schemas.monorepo import touches

_NO_PATHS: Mapping[str, Sequence[str]] = MappingProxyType({})


class SourceFact(NamedTuple):
    """The part of one source event the range needs (`source_events` row, its columns in this
    order: a tuple, built for every push a change-set computation loads)."""

    kind: str
    occurred_at: datetime
    commit_sha: str | None
    previous_sha: str | None = None
    commit_shas: Sequence[str] = ()
    author: str | None = None
    pr_number: int | None = None
    pr_title: str | None = None
    changed_paths: Mapping[str, Sequence[str]] = _NO_PATHS


class CommitInfo(NamedTuple):
    """One commit of a range, with what the source events say about it (a tuple: one per
    commit of every range)."""

    sha: str
    first_seen_at: datetime | None
    author: str | None = None
    pr_number: int | None = None
    pr_title: str | None = None


class CommitRange(NamedTuple):
    """The commits between two deployments, newest first (a tuple: one per deployment)."""

    commits: tuple[CommitInfo, ...]
    reverse: bool
    #: False when the walk ran out of known history (or `limit`) before reaching from_sha.
    complete: bool

    @property
    def pr_numbers(self) -> set[int]:
        """The distinct pull requests of the range."""
        return {c.pr_number for c in self.commits if c.pr_number is not None}


def _known(sha: str | None) -> str | None:
    # A push creating a ref reports `before` as zeros: no parent.
    return None if sha is None or not sha.strip("0") else sha


@dataclass
class History:
    """Parents, first sightings, pull requests, authors and changed paths of the commits the
    source events name. Build it with `History.of`."""

    parents: dict[str, str] = field(default_factory=dict)
    first_seen: dict[str, datetime] = field(default_factory=dict)
    prs: dict[str, SourceFact] = field(default_factory=dict)
    authors: dict[str, str] = field(default_factory=dict)
    paths: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, facts: Iterable[SourceFact]) -> History:
        """The history told by `facts` (any order)."""
        history = cls()
        for fact in sorted(facts, key=_occurred):
            history._add(fact)
        return history

    def _add(self, fact: SourceFact) -> None:
        shas = [*fact.commit_shas]
        head = _known(fact.commit_sha)
        if head is not None and head not in shas:
            shas.append(head)
        for sha in shas:
            self.first_seen.setdefault(sha, fact.occurred_at)
        if fact.kind == "pull_request_merged":
            for sha in shas:
                self.prs.setdefault(sha, fact)
            return
        if fact.kind != "push":
            return
        parent = _known(fact.previous_sha)
        for sha in shas:
            if parent is not None and sha != parent:
                self.parents.setdefault(sha, parent)
            parent = sha
            if fact.author is not None:
                self.authors.setdefault(sha, fact.author)
        for sha, paths in fact.changed_paths.items():
            self.paths.setdefault(sha, tuple(paths))

    def touching(self, globs: Sequence[str]) -> Callable[[str], bool]:
        """The monorepo filter of `commit_range`: whether a commit touches a path of `globs`
        (one whose changed paths no event names: yes). Asked of a range's commits only, not
        of the history's every commit."""

        def keep(sha: str) -> bool:
            paths = self.paths.get(sha)
            return paths is None or touches(globs, paths)

        return keep

    def ancestry(self, sha: str, limit: int) -> list[str]:
        """`sha` and its known ancestors, newest first (at most `limit`)."""
        out: list[str] = []
        seen: set[str] = set()
        current = _known(sha)
        while current is not None and current not in seen and len(out) < limit:
            out.append(current)
            seen.add(current)
            current = self.parents.get(current)
        return out

    def info(self, sha: str) -> CommitInfo:
        """What the events say about `sha` (the PR's author over the pusher)."""
        pr = self.prs.get(sha)
        if pr is None:
            return CommitInfo(sha, self.first_seen.get(sha), self.authors.get(sha))
        return CommitInfo(
            sha,
            self.first_seen.get(sha),
            pr.author or self.authors.get(sha),
            pr.pr_number,
            pr.pr_title,
        )


_occurred = attrgetter("occurred_at")


def commit_range(
    history: History,
    from_sha: str | None,
    to_sha: str,
    *,
    limit: int = 1000,
    keep: Callable[[str], bool] | None = None,
) -> CommitRange:
    """The range (from_sha, to_sha] (see the module docstring). `keep`: the monorepo filter,
    whether a commit touches the service (`History.touching`)."""
    forward = history.ancestry(to_sha, limit)
    if from_sha is None:
        shas, reverse, complete = forward, False, True
    elif from_sha == to_sha:
        shas, reverse, complete = [], False, True
    elif from_sha in forward:
        shas, reverse, complete = forward[: forward.index(from_sha)], False, True
    else:
        backward = history.ancestry(from_sha, limit)
        if to_sha in backward:
            shas, reverse, complete = backward[: backward.index(to_sha)], True, True
        else:
            # Diverged (a force push, another branch) or history unknown: what only the new
            # commit reaches; complete if both walks met a common ancestor.
            behind = set(backward)
            shas = [s for s in forward if s not in behind]
            reverse, complete = False, len(shas) < len(forward)
    if keep is not None:
        shas = [s for s in shas if keep(s)]
    return CommitRange(tuple(map(history.info, shas)), reverse, complete)
