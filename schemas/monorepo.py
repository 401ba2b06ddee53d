"""Monorepos: which services a commit touches, from the paths it changed (policy `monorepos:`).

A policy maps a repository to its services, each with path globs:

    monorepos:
      acme/platform:
        checkout: ["services/checkout/**", "libs/payments/**"]
        search: ["services/search/**"]

Globs are matched against the whole repository-relative path: `*` and `?` stay within one
path segment, `**` spans any number of segments (`a/**` matches everything under `a/`).
Pure logic: the push parsers record each commit's changed paths (SourceEvent v2
`changed_paths`), the change-set computation keeps a service's commits with `touches`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field, RootModel

_SEGMENT = re.compile(r"\*\*|\*|\?|[^*?]+")
_WILDCARDS = {"**": ".*", "*": "[^/]*", "?": "[^/]"}


@cache
def glob_regex(glob: str) -> re.Pattern[str]:
    """The compiled regex of a path glob (see the module docstring)."""
    parts = [_WILDCARDS.get(part) or re.escape(part) for part in _SEGMENT.findall(glob)]
    return re.compile("".join(parts) + r"\Z")


def check_glob(glob: str) -> str:
    """`glob` if usable as a service path glob, else ValueError saying why."""
    if not glob.strip():
        raise ValueError("a path glob cannot be empty")
    if glob.startswith("/"):
        raise ValueError(f"{glob!r}: paths are relative to the repository root (no leading /)")
    if "***" in glob:
        raise ValueError(f"{glob!r}: at most two * in a row")
    return glob


#: A service's path globs: at least one, each checked (errors name the service and index).
Globs = Annotated[list[Annotated[str, AfterValidator(check_glob)]], Field(min_length=1)]


class ServicePaths(RootModel[dict[str, Globs]]):
    """One repository's services and their path globs."""

    model_config = ConfigDict(frozen=True)


class Monorepos(RootModel[dict[str, ServicePaths]]):
    """Policy `monorepos:`: repository (as source events name it) -> service -> path globs."""

    model_config = ConfigDict(frozen=True)

    def globs(self, repository: str | None, service: str) -> tuple[str, ...] | None:
        """The service's globs in `repository`; None when the repository is not mapped (then
        every commit of it is the service's)."""
        mapped = None if repository is None else self.root.get(repository)
        if mapped is None:
            return None
        return tuple(mapped.root.get(service, ()))

    def services_touched(self, repository: str, paths: Iterable[str]) -> list[str]:
        """The services of `repository` whose globs match any of `paths`, sorted."""
        mapped = self.root.get(repository)
        if mapped is None:
            return []
        wanted = list(paths)
        return sorted(s for s, globs in mapped.root.items() if touches(globs, wanted))


def touches(globs: Iterable[str], paths: Iterable[str]) -> bool:
    """Whether any path matches any glob."""
    patterns = [glob_regex(g) for g in globs]
    return any(p.match(path) for path in paths for p in patterns)


def affected_services(
    monorepos: Monorepos, repository: str, changed_paths: Mapping[str, list[str]]
) -> dict[str, list[str]]:
    """Per service of `repository`, the pushed commits (of `changed_paths`) touching it."""
    out: dict[str, list[str]] = {}
    for sha, paths in changed_paths.items():
        for service in monorepos.services_touched(repository, paths):
            out.setdefault(service, []).append(sha)
    return out
