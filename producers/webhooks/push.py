"""A git push as GitHub (`push`) and GitLab (Push Hook, Tag Push Hook) report it: one source
event, identified by repository, ref and SHA range, so a redelivered push is the same event."""

from __future__ import annotations

from shipledger.producers.webhooks import contract
from shipledger.producers.webhooks.payload import JSONObject, full_sha, opt_str, parent_sha
from shipledger.producers.webhooks.result import Identified, WebhookPayloadError

#: The per-commit file lists of a push payload (GitHub and GitLab name them alike).
_PATH_LISTS = ("added", "modified", "removed")


def commits(data: JSONObject) -> list[JSONObject]:
    """The pushed `commits` (absent or null: none), each an object."""
    value = data.get("commits") or []
    if not isinstance(value, list) or not all(isinstance(c, dict) for c in value):
        raise WebhookPayloadError("commits: must be an array of objects")
    return value


def pushed(
    data: JSONObject,
    *,
    repository: str,
    ref: str,
    head: str,
    pushed_commits: list[JSONObject],
    author: str | None,
    url: str | None,
    occurred_at: str,
) -> Identified:
    """The push of `ref` to `head` (a full SHA) from the payload's `before` (absent or zeros:
    a new ref), with `pushed_commits` (see `commits`); a tag ref is a `tag`."""
    before = parent_sha(opt_str(data, "before"), "before")
    shas = [full_sha(opt_str(c, "id"), f"commits[{i}].id") for i, c in enumerate(pushed_commits)]
    return Identified(
        f"push:{repository}:{ref}:{before}..{head}",
        [
            contract.source(
                kind="tag" if ref.startswith("refs/tags/") else "push",
                repository=repository,
                ref=ref,
                commit_sha=head,
                previous_sha=before,
                commit_shas=shas,
                author=author,
                url=url,
                occurred_at=occurred_at,
                changed_paths={
                    sha: paths
                    for i, (sha, c) in enumerate(zip(shas, pushed_commits, strict=True))
                    if (paths := changed_paths(c, f"commits[{i}]"))
                },
            )
        ],
    )


def changed_paths(commit: JSONObject, where: str) -> list[str]:
    """The paths a pushed commit added, modified or removed, sorted and distinct (lists absent
    or null: none known)."""
    paths: set[str] = set()
    for name in _PATH_LISTS:
        value = commit.get(name) or []
        if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
            raise WebhookPayloadError(f"{where}.{name}: must be an array of strings")
        paths.update(value)
    return sorted(paths)
