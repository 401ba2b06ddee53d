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

from collections.abc import Iterable
from dataclasses import dataclass, field

from shipledger.schemas.models import check_name


def scope_names(values: Iterable[str], what: str) -> frozenset[str]:
    """Names from repeated options and comma lists (`--team a,b --team c`), stripped, each
    one the pipeline could store (`check_name`; a name with a comma cannot be given);
    ValueError saying which `what` name is empty or why it cannot be one."""
    names: set[str] = set()
    for value in values:
        for part in value.split(","):
            name = part.strip()
            if not name:
                raise ValueError(f"an empty {what} name in {value!r}")
            try:
                names.add(check_name(name))
            except ValueError as exc:
                raise ValueError(f"{name!r} is not a {what} name: {exc}") from None
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
