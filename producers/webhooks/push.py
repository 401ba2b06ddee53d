"""A git push as GitHub (`push`) and GitLab (Push Hook, Tag Push Hook) report it: one source
event, identified by repository, ref and SHA range, so a redelivered push is the same event."""

from __future__ import annotations

from shipledger.producers.webhooks import contract
from shipledger.producers.webhooks.result import Identified


def pushed(
    *,
    repository: str,
    ref: str,
    before: str | None,
    head: str,
    commit_shas: list[str],
    author: str | None,
    url: str | None,
    occurred_at: str,
) -> Identified:
    """The push of `ref` from `before` (None: a new ref) to `head`; a tag ref is a `tag`."""
    return Identified(
        f"push:{repository}:{ref}:{before}..{head}",
        [
            contract.source(
                kind="tag" if ref.startswith("refs/tags/") else "push",
                repository=repository,
                ref=ref,
                commit_sha=head,
                previous_sha=before,
                commit_shas=commit_shas,
                author=author,
                url=url,
                occurred_at=occurred_at,
            )
        ],
    )
