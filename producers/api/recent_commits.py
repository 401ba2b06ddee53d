"""Full commit SHAs recently seen per tenant and repository, to resolve abbreviated ones.

GitLab's deployment hook carries only `short_sha` (and the full one in `commit_url`, which a
proxy or an old GitLab may drop). The pushes and merges the same API received name the full
SHAs: remembering the latest of them lets `dispatch` resolve a short SHA instead of refusing
the delivery. A short SHA matching two remembered commits resolves to none (never a guess).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from threading import Lock
from typing import Any


class RecentCommits:
    """A bounded, thread-safe memory of full SHAs per (tenant, repository), newest kept."""

    def __init__(self, capacity: int = 50_000) -> None:
        self._capacity = capacity
        self._shas: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._lock = Lock()

    def remember(self, tenant: str, events: Iterable[Mapping[str, Any]]) -> None:
        """Record the full SHAs (`commit_sha`, `commit_shas`) that source events name."""
        with self._lock:
            for event in events:
                repository = event.get("repository")
                if not isinstance(repository, str):
                    continue
                shas = [event.get("commit_sha"), *(event.get("commit_shas") or [])]
                for sha in shas:
                    if isinstance(sha, str) and sha:
                        key = (tenant, repository, sha.lower())
                        self._shas[key] = None
                        self._shas.move_to_end(key)
            while len(self._shas) > self._capacity:
                self._shas.popitem(last=False)

    def resolve(self, tenant: str, repository: str, short_sha: str) -> str | None:
        """The one remembered full SHA of `repository` starting with `short_sha`, if unique."""
        prefix = short_sha.lower()
        with self._lock:
            found = {
                sha
                for (t, repo, sha) in self._shas
                if t == tenant and repo == repository and sha.startswith(prefix)
            }
        return found.pop() if len(found) == 1 else None
