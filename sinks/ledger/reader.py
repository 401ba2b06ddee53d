"""The ledger's one door for reads: readers outside the ledger (the API, `shipledger query`)
go through `LedgerReader`, never through the store, the DDL or the tiers, and never write SQL
against a table. (The sink, the ledger's writer, and `up`, which owns the store, use the
store's own tier-aware reads: `LedgerStore.existing_ids` and `LedgerStore.source`, which this
door delegates to.)

Every read is tier-aware: a row moved to cold storage by `shipledger archive`
(`sinks.ledger.archive`) reads like a hot one (`sinks.ledger.tiers`). Callers that only read
(the API) depend on the `LedgerReads` protocol and are given a `LedgerReader` when they are
built; the value types of the query contract (`QueryResult`, `QueryLimits`, `QueryError`,
`FORMATS`), `sql_string` (a string literal for SQL a command writes, e.g. `alerts list`),
those of the DORA report (`sinks.ledger.dora`), those of incident triage
(`sinks.ledger.suspects`) and `chdb_path` (is the ledger embedded?) are re-exported here so
they need nothing else of the ledger.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from shipledger.logging import get_logger
from shipledger.schemas.families import Family
from shipledger.schemas.family_models import ArtifactEvent, CatalogEvent, ChangeEvent
from shipledger.schemas.models import DeploymentEvent, Model
from shipledger.schemas.registry import catalog
from shipledger.schemas.topics import ENRICHMENT
from shipledger.settings import Settings
from shipledger.sinks.ledger import ddl, tiers

# Callers outside the sinks build filters of their read queries with the ledger's quoting.
from shipledger.sinks.ledger.ddl import quote_str as quote_str
from shipledger.sinks.ledger.dora import (
    DORA_DIMENSIONS,
    DORA_PERIODS,
    DoraError,
    DoraQuery,
    DoraRow,
    Visible,
    dora_columns,
    dora_window,
    read_dora,
)
from shipledger.sinks.ledger.query import (
    FORMATS,
    QueryError,
    QueryLimits,
    QueryResult,
    run_read_query,
)
from shipledger.sinks.ledger.store import LedgerStore, StoreError, TimeWindow, chdb_path
from shipledger.sinks.ledger.suspects import (
    OptionalTables,
    SuspectsError,
    SuspectsQuery,
    read_suspects,
)
from shipledger.sinks.ledger.tiers import Tier
from shipledger.sinks.rows import RowKey
from shipledger.suspects import Suspect

__all__ = [
    "DORA_DIMENSIONS",
    "DORA_PERIODS",
    "FORMATS",
    "DoraError",
    "DoraQuery",
    "DoraRow",
    "LedgerReader",
    "LedgerReads",
    "LedgerUnavailable",
    "QueryError",
    "QueryLimits",
    "QueryResult",
    "StoredAlert",
    "StoredEvent",
    "Suspect",
    "SuspectsError",
    "SuspectsQuery",
    "Tier",
    "TimeWindow",
    "Visible",
    "chdb_path",
    "dora_columns",
    "dora_window",
    "sql_string",
]

#: A ClickHouse string literal, for SQL built from a command's options.
sql_string = ddl.quote_str


class LedgerUnavailable(RuntimeError):
    """The ledger cannot be opened here (no ledger yet, or ClickHouse refused); says why."""


@dataclass(frozen=True)
class StoredEvent:
    """One stored deployment event: its row as the ledger keeps it, and where it was found
    (`hot`, `cold`; None on a ClickHouse server, whose cold volume is part of the table)."""

    row: dict[str, Any]
    tier: Tier | None


log = get_logger("ledger")
#: The first event of every deployment (its record of seq 1 names it) that started in a
#: window: what a policy simulation judges again.
_FIRST_EVENTS_SQL = (
    "SELECT {columns} FROM {events} WHERE (tenant, event_id) IN (\n"
    "  SELECT tenant, record_id FROM {records} WHERE seq = 1\n"
    "  AND started_at >= fromUnixTimestamp64Milli({{lo:Int64}}, 'UTC')\n"
    "  AND started_at < fromUnixTimestamp64Milli({{hi:Int64}}, 'UTC'){tenant}\n"
    ") ORDER BY occurred_at, event_id LIMIT 1 BY tenant, event_id"
)
_ALERTS_OF_SQL = (
    "SELECT alert_id, tenant, deployment_id, event_id, rule, team, kind = 'resolution', "
    "resolves FROM {alerts} WHERE (tenant, event_id) IN {{keys:Array(Tuple(String, String))}}"
)


@dataclass(frozen=True)
class StoredAlert:
    """One stored alert or resolution, as far as a comparison of judgements needs it."""

    alert_id: str
    tenant: str
    deployment_id: str
    event_id: str
    rule: str
    team: str | None
    resolution: bool
    resolves: str | None


def _epoch_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


class LedgerReads(Protocol):
    """What the ingest API reads of the ledger (`LedgerReader` is the real one)."""

    def event(self, event_id: str, tenant: str | None) -> StoredEvent | None:
        """The stored deployment event `event_id` (of `tenant`; None: any tenant), if any."""
        ...

    def query(
        self,
        sql: str,
        *,
        tenant: str | None,
        max_rows: int,
        limits: QueryLimits,
        teams: frozenset[str] = frozenset(),
        environments: frozenset[str] = frozenset(),
    ) -> QueryResult:
        """Run one read-only SELECT (raises QueryError)."""
        ...

    def change_events(self, tenant: str, change_id: str) -> list[ChangeEvent]:
        """Every stored event of one change request of `tenant`, in no particular order."""
        ...

    def dora(self, query: DoraQuery, visible: Visible | None = None) -> list[DoraRow]:
        """The DORA metrics of `query`, from rows `visible` may read (docs/metrics.md)."""
        ...

    def suspects(self, query: SuspectsQuery, visible: Visible | None = None) -> list[Suspect]:
        """The ranked suspects of an incident, from rows `visible` may read (docs/triage.md)."""
        ...


class LedgerReader:
    """Tier-aware reads of one ledger store (thread-safe: the store serializes its calls)."""

    def __init__(self, store: LedgerStore) -> None:
        self._store = store
        self._optional = OptionalTables()

    @classmethod
    @contextmanager
    def open(cls, settings: Settings) -> Iterator[LedgerReader]:
        """A reader on a ledger this process opens itself (closed on exit): reading never
        migrates, it only (re)builds the hot+cold views over the cold files present now."""
        url = settings.resolved_clickhouse_url
        try:
            with LedgerStore.open(settings, existing=True) as store:
                if not store.database_exists():
                    raise LedgerUnavailable(f"no ledger in {url} yet: run `shipledger up` first")
                tiers.ensure_tiers(store)
                yield cls(store)
        except StoreError as exc:
            raise LedgerUnavailable(str(exc)) from exc

    def event(self, event_id: str, tenant: str | None) -> StoredEvent | None:
        """The stored deployment event `event_id` of `tenant` (None: any tenant), hot rows
        first (during an archive run a row can briefly be in both tiers)."""
        params: dict[str, Any] = {"id": event_id}
        where = "event_id = %(id)s"
        if tenant is not None:
            where += " AND tenant = %(tenant)s"
            params["tenant"] = tenant
        for tier, source in tiers.tier_sources(self._store, ddl.EVENTS):
            columns, rows = self._store.query(
                f"SELECT * FROM {source} WHERE {where} LIMIT 1",  # noqa: S608 (checked identifiers)
                params,
            )
            if rows:
                return StoredEvent(dict(zip(columns, rows[0], strict=True)), tier)
        return None

    def existing_ids(
        self, table: str, keys: Iterable[RowKey], *, window: TimeWindow | None = None
    ) -> set[RowKey]:
        """Which (tenant, id) pairs of `keys` the ledger holds in `table`, hot or cold
        (optionally only within `window`): what dedup and the restore of `up` ask."""
        return self._store.existing_ids(table, keys, window=window)

    def query(
        self,
        sql: str,
        *,
        tenant: str | None,
        max_rows: int,
        limits: QueryLimits,
        teams: frozenset[str] = frozenset(),
        environments: frozenset[str] = frozenset(),
    ) -> QueryResult:
        """Run one read-only SELECT over the query database (hot and cold rows), scoped to
        `tenant` (None: an operator) and, if not empty, `teams` and `environments`; the
        contract is `sinks.ledger.query`."""
        return run_read_query(
            self._store,
            sql,
            tenant=tenant,
            max_rows=max_rows,
            limits=limits,
            teams=teams,
            environments=environments,
        )

    def dora(self, query: DoraQuery, visible: Visible | None = None) -> list[DoraRow]:
        """The DORA metrics of `query` (`sinks.ledger.dora`). The aggregates live in the hot
        database only and hold every day, archived or not: their views fire at insert."""
        return read_dora(self._store, query, visible)

    def suspects(self, query: SuspectsQuery, visible: Visible | None = None) -> list[Suspect]:
        """The ranked suspects of an incident (`sinks.ledger.suspects`), hot and cold."""
        return read_suspects(self._store, query, self._optional, visible)

    def change_events(self, tenant: str, change_id: str) -> list[ChangeEvent]:
        """Every stored event of change request `change_id` of `tenant`, hot and cold (a row
        briefly in both tiers during an archive run comes twice: the fold drops the copy),
        as the model of the `changes` topic: what the gate and the approvals fold.

        The gate waits on this read, and a cold File table costs a scan of its files on
        every query (measured: 47 ms against 9 ms for the hot table alone): the cold tier is
        read only when the tenant has cold files of the table. It is checked after the hot
        read, so a row the archive moves in between (it writes the file, then deletes the
        hot row) is found in one tier or the other."""
        fields = list(ChangeEvent.model_fields)
        columns = ", ".join(ddl.quote_ident(f) for f in fields)
        cold_root = self._store.cold_root
        found: list[ChangeEvent] = []
        for tier, source in tiers.tier_sources(self._store, ddl.CHANGES):
            if tier == "cold" and not (
                cold_root and tiers.cold_files(cold_root, ddl.CHANGES, [tenant])
            ):
                continue
            names, rows = self._store.query(
                f"SELECT {columns} FROM {source} "  # noqa: S608 (checked identifiers)
                "WHERE tenant = {tenant:String} AND change_id = {change_id:String}",
                {"tenant": tenant, "change_id": change_id},
            )
            found += [ChangeEvent.model_validate(dict(zip(names, r, strict=True))) for r in rows]
        return found

    def first_events(
        self, start: datetime, end: datetime, tenant: str | None = None
    ) -> list[DeploymentEvent]:
        """The first event (as the processors applied it) of every deployment of `tenant`
        (None: every tenant) that started in [`start`, `end`), hot and cold, oldest first. A
        row that no longer validates is left out (logged)."""
        fields = _schema_fields(catalog().topic("deployments.raw").schema_name)
        params: dict[str, Any] = {"lo": _epoch_ms(start), "hi": _epoch_ms(end)}
        if tenant is not None:
            params["tenant"] = tenant
        sql = _FIRST_EVENTS_SQL.format(
            columns=", ".join(ddl.quote_ident(f) for f in fields),
            events=self._store.source(ddl.EVENTS),
            records=self._store.source(ddl.RECORDS),
            tenant=" AND tenant = {tenant:String}" if tenant is not None else "",
        )
        _, rows = self._store.query(sql, params)
        found = (_validated(DeploymentEvent, fields, row, ddl.EVENTS) for row in rows)
        return [event for event in found if isinstance(event, DeploymentEvent)]

    def alerts_of(self, events: Iterable[DeploymentEvent]) -> list[StoredAlert]:
        """The stored alerts and resolutions of the deployments whose first events are
        `events` (alerts name the event that was judged), hot and cold."""
        keys = sorted({(e.tenant, e.event_id) for e in events})
        if not keys:
            return []
        sql = _ALERTS_OF_SQL.format(alerts=self._store.source(ddl.ALERTS))
        _, rows = self._store.query(sql, {"keys": keys})
        return [
            StoredAlert(str(a), str(t), str(d), str(e), str(r), team or None, bool(res), rs or None)
            for a, t, d, e, r, team, res, rs in rows
        ]

    def enrichment_events(
        self,
    ) -> Iterator[tuple[str, ChangeEvent | CatalogEvent | ArtifactEvent]]:
        """Every change, catalog and artifact event the ledger holds, hot and cold, as
        (logical topic name, the topic's model), oldest first per topic: what the processors'
        enrichment view is folded from. A row that no longer validates is left out (logged)."""
        for name in ENRICHMENT:
            spec = catalog().topic(name)
            assert spec.table is not None, f"enrichment topic {name} is not stored"
            model = Family.of_topic(spec).model
            fields = _schema_fields(spec.schema_name)
            columns = ", ".join(ddl.quote_ident(f) for f in fields)
            _, rows = self._store.query(
                f"SELECT {columns} FROM {self._store.source(spec.table.name)} "  # noqa: S608 (checked)
                "ORDER BY occurred_at, event_id"
            )
            for row in rows:
                event = _validated(model, fields, row, spec.table.name)
                if isinstance(event, ChangeEvent | CatalogEvent | ArtifactEvent):
                    yield name, event


def _schema_fields(schema_name: str) -> list[str]:
    return [f["name"] for f in catalog().latest(schema_name).raw["fields"]]


def _validated(
    model: type[Model], fields: list[str], row: Iterable[Any], table: str
) -> Model | None:
    try:
        return model.model_validate(dict(zip(fields, row, strict=True)))
    except ValueError as exc:
        log.warning("ledger_row_skipped", table=table, error=str(exc)[:300])
        return None
