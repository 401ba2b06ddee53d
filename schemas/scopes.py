"""Row scopes: which tenant, teams and environments a reader may see, as one predicate.

A token (`producers.api.auth.Principal`) carries a tenant (`*`: every tenant) and optional
team and environment scopes; `alerts tail --tenant/--team/--environment` filters the same way.
`RowScope.admits` is the one check of a single row or stream event; the ledger's SQL applies
the same rule as ClickHouse table filters (`sinks.ledger.query`).

Decided: a scope names what is visible, an empty one does not restrict. A row with no team
(a deployment whose CI sent none and whose service the catalog does not own) is visible only
to readers without a team scope: it cannot be shown to belong to any team, and a team-scoped
reader must never see another team's rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

#: What a team or environment scope may be called: the names the pipeline stores.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,99}$")


def scope_names(values: Iterable[str], what: str) -> frozenset[str]:
    """Names from repeated options and comma lists (`--team a,b --team c`), stripped;
    ValueError naming `what` for an empty or odd name."""
    names: set[str] = set()
    for value in values:
        for part in value.split(","):
            name = part.strip()
            if not _NAME_RE.match(name):
                raise ValueError(
                    f"{what}: {name!r} is not a name (1 to 100 letters, digits or ._:/@+-, "
                    "starting with a letter or digit)"
                )
            names.add(name)
    return frozenset(names)


@dataclass(frozen=True)
class RowScope:
    """What a reader may see: `tenant` (None: every tenant), and if not empty only these
    `teams` and `environments`."""

    tenant: str | None = None
    teams: frozenset[str] = field(default_factory=frozenset)
    environments: frozenset[str] = field(default_factory=frozenset)

    @property
    def restricted(self) -> bool:
        """Whether anything is hidden from this reader (False: an operator's whole view)."""
        return self.tenant is not None or bool(self.teams) or bool(self.environments)

    def admits(self, tenant: str, team: str | None, environment: str | None) -> bool:
        """Whether a row of `tenant`, `team` and `environment` is within the scope (a row
        without a team or environment is outside any team or environment scope)."""
        if self.tenant is not None and tenant != self.tenant:
            return False
        if self.teams and team not in self.teams:
            return False
        return not self.environments or environment in self.environments
