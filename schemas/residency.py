"""Data residency: in which region's ledger each tenant's rows live (docs/sovereignty.md).

A tenant's policy names its regions (`regions: [eu]`, a `Rules` key: a tenant override or
the defaults); none is the default ledger. The sink stores the rows there
(`sinks.regions`), and an API serving another region refuses to read them (`refusal`).
"""

from __future__ import annotations

from shipledger.schemas.policy import Policy

#: A ledger's key: its region, None for the default ledger.
Region = str | None


def region_label(region: Region) -> str:
    """How a region is named to people: its name, or `the default ledger`."""
    return region if region is not None else "the default ledger"


class Residency:
    """Which ledgers hold each tenant's rows, under one policy."""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy

    def regions_of(self, tenant: str) -> tuple[Region, ...]:
        """The regions whose ledgers hold `tenant`'s rows; (None,): the default ledger."""
        return tuple(self._policy.rules_for(tenant).regions) or (None,)

    def refusal(self, tenant: str, here: Region) -> str | None:
        """Why a reader of region `here`'s ledger must not answer for `tenant` (its rows
        live elsewhere: an empty answer would be a wrong one); None when they live here."""
        homes = self.regions_of(tenant)
        if here in homes:
            return None
        return (
            f"tenant {tenant!r}: its rows live in {', '.join(map(region_label, homes))}, "
            f"this API serves {region_label(here)}: ask the API of its region"
        )
