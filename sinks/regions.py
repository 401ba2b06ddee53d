"""Data sovereignty in the sink: which ledger stores each row (docs/sovereignty.md).

A tenant's policy names its regions (`regions: [eu]`, a `Rules` key, so a tenant override
or the defaults); each of its rows is stored in the ledger of each of those regions
(`Settings.regional_ledgers`), a tenant naming none in the default ledger. A region without a
configured ledger is never replaced by the default one: the row's message is dead-lettered
instead, with a reason naming the tenant and the region (`Unplaced`).

Each ledger has its own writer, so its own hash chains and chain heads (`audit verify`
passes per ledger), and its own change sets (a tenant's deployments are all in it).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter

from shipledger.schemas.policy import Policy
from shipledger.schemas.residency import Region, Residency
from shipledger.settings import Settings
from shipledger.sinks.ledger.change_sets import ChangeSets, ChangeSetStore, Deployed
from shipledger.sinks.ledger.pseudonyms import Pseudonymiser
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.sinks.rows import Row
from shipledger.sinks.writer import LedgerWriter, RowStore


@dataclass(frozen=True)
class Unplaced:
    """A tenant whose rows have no ledger to go to: why."""

    reason: str


@dataclass(frozen=True)
class Ledger:
    """One ledger the sink writes: its store, its writer (chain heads), its change sets and
    its pseudonymiser (None: privacy is off)."""

    region: Region
    store: RowStore
    writer: LedgerWriter
    change_sets: ChangeSets | None
    pseudonymiser: Pseudonymiser | None

    def write(self, rows: dict[str, list[Row]]) -> None:
        """Store `rows` (by table) through the writer, their personal fields pseudonymised
        first (the hash chain covers the pseudonyms)."""
        if self.pseudonymiser is not None:
            self.pseudonymiser.apply(rows)
        self.writer.write_rows(rows)

    def compute_change_sets(self, records: Sequence[Row], sources: Sequence[Row]) -> int | None:
        """The change sets of the terminal deployments among stored `records` (oldest start
        first), and those a late push among stored `sources` changes: how many deployments
        (None: nothing to compute, or no change sets). Call it after the rows are stored:
        the previous deployment may be among them."""
        if self.change_sets is None:
            return None
        # The latest record of each deployment (a later one replaces an earlier one).
        deployed = {(d.tenant, d.deployment_id): d for d in map(Deployed.of, records) if d}
        if not deployed and not sources:
            return None
        count = self.change_sets.compute(sorted(deployed.values(), key=_started))
        return count + self.change_sets.recompute_late(sources, skip=deployed)


_started = attrgetter("started_at")

#: Tenants a `Placement` remembers at most (the least recently asked go first).
_KNOWN_TENANTS = 10_000


class Placement:
    """Where each tenant's rows are stored, under `policy` and the `configured` regions."""

    def __init__(self, policy: Policy, configured: Iterable[str]) -> None:
        self._residency = Residency(policy)
        self._configured = frozenset(configured)
        #: Asked for every row the sink reads and every event an import judges; the policy
        #: and the configured regions never change under a placement: one answer per tenant.
        self.ledgers_of = functools.lru_cache(maxsize=_KNOWN_TENANTS)(self._placed)

    def _placed(self, tenant: str) -> tuple[Region, ...] | Unplaced:
        """The regions whose ledgers store `tenant`'s rows ((None,): the default ledger), or
        why there is none (`ledgers_of`, remembered per tenant)."""
        regions = self._residency.regions_of(tenant)
        missing = [region for region in regions if region and region not in self._configured]
        if missing:
            have = ", ".join(sorted(self._configured)) or "none"
            return Unplaced(
                f"tenant {tenant!r}: region {missing[0]!r} of its policy has no ledger "
                f"(SHIPLEDGER_REGIONAL_LEDGERS configures: {have}); not stored elsewhere"
            )
        return regions


def sink_ledgers(
    settings: Settings,
    policy: Policy,
    store: RowStore,
    regional: Mapping[str, RowStore],
    make_writer: Callable[[RowStore], LedgerWriter],
) -> dict[Region, Ledger]:
    """The sink's ledgers: the default one (`store`) and one per `regional` store, each with
    its own writer and, when the settings compute them (and the store can query), change
    sets."""
    stores: dict[Region, RowStore] = {None: store}
    stores.update(regional.items())
    return {
        region: Ledger(
            region,
            each,
            make_writer(each),
            ChangeSets.from_settings(settings, each, policy)
            if settings.change_sets and isinstance(each, ChangeSetStore)
            else None,
            Pseudonymiser.of(each),
        )
        for region, each in stores.items()
    }


def open_ledgers(settings: Settings, *, ensure_schema: bool = True) -> dict[Region, LedgerStore]:
    """Every ledger of the settings, open (and migrated, `ensure_schema`): the default one
    (None) and each of `regional_ledgers`. All closed again when one cannot be opened."""
    opened: dict[Region, LedgerStore] = {}
    try:
        for region in (None, *sorted(settings.regional_ledgers)):
            store = opened[region] = LedgerStore.open(settings.for_region(region))
            if ensure_schema:
                store.ensure_schema()
    except BaseException:
        for store in opened.values():
            store.close()
        raise
    return opened


def without_default(ledgers: Mapping[Region, LedgerStore]) -> dict[str, LedgerStore]:
    """The regional ones of `ledgers` (what `ClickHouseSink` takes as `regional`)."""
    return {region: store for region, store in ledgers.items() if region is not None}
