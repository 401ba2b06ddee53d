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
from typing import Any, NotRequired, Protocol, TypedDict, TypeVar, Unpack

from shipledger.logging import get_logger
from shipledger.reconcile.compare import LedgerDeployment
from shipledger.schemas.families import Family
from shipledger.schemas.family_models import ArtifactEvent, CatalogEvent, ChangeEvent
from shipledger.schemas.governance import ArtifactInUse
from shipledger.schemas.models import DeploymentEvent, Model
from shipledger.schemas.registry import catalog
from shipledger.schemas.scopes import RowScope
from shipledger.schemas.topics import ENRICHMENT
from shipledger.settings import Settings, chdb_path
from shipledger.sinks.ledger import ddl, tiers
from shipledger.sinks.ledger.adoption import (
    AdoptionError,
    AdoptionQuery,
    ServiceAdoption,
    adoption_report,
    read_adoption,
)
from shipledger.sinks.ledger.change_sets import StoredChangeSet, read_change_set

# Callers outside the sinks build filters of their read queries with the ledger's quoting.
from shipledger.sinks.ledger.ddl import quote_str as quote_str
from shipledger.sinks.ledger.dora import (
    DORA_DIMENSIONS,
    DORA_PERIODS,
    DoraError,
    DoraQuery,
    DoraRow,
    as_utc,
    dora_columns,
    dora_window,
    read_dora,
)
from shipledger.sinks.ledger.monthly import (
    ChainHead,
    MonthError,
    PackQuery,
    PackTable,
    chain_heads,
    missing_heads,
    month_window,
    pack_queries,
    read_pack,
)
from shipledger.sinks.ledger.pseudonyms import reveal
from shipledger.sinks.ledger.query import (
    FORMATS,
    QueryError,
    QueryLimits,
    QueryResult,
    run_read_query,
)
from shipledger.sinks.ledger.reconciliations import read_deployments, service_teams
from shipledger.sinks.ledger.store import LedgerStore, StoreError, TimeWindow
from shipledger.sinks.ledger.success import (
    SUCCESS_COLUMNS,
    Failure,
    SuccessReport,
    read_failures,
    success_report,
)
from shipledger.sinks.ledger.suspects import (
    MAX_LOOKBACK as SUSPECTS_MAX_LOOKBACK,
)
from shipledger.sinks.ledger.suspects import (
    SuspectsError,
    SuspectsQuery,
    read_suspects,
)
from shipledger.sinks.ledger.tiers import Tier
from shipledger.sinks.ledger.verifications import StoredVerdict, VerdictFilter, latest
from shipledger.sinks.rows import RowKey
from shipledger.stackfile import StackInfo, read_stack
from shipledger.suspects import Suspect

__all__ = [
    "DORA_DIMENSIONS",
    "DORA_PERIODS",
    "FORMATS",
    "SUCCESS_COLUMNS",
    "SUSPECTS_MAX_LOOKBACK",
    "AdoptionError",
    "AdoptionQuery",
    "ChainHead",
    "DoraError",
    "DoraQuery",
    "DoraRow",
    "Failure",
    "ForwardedReads",
    "LedgerReader",
    "LedgerReads",
    "LedgerUnavailable",
    "MonthError",
    "PackQuery",
    "PackTable",
    "QueryError",
    "QueryLimits",
    "QueryResult",
    "QueryScope",
    "ServiceAdoption",
    "StoredAlert",
    "StoredChangeSet",
    "StoredEvent",
    "StoredVerdict",
    "SuccessReport",
    "Suspect",
    "SuspectsError",
    "SuspectsQuery",
    "Tier",
    "TimeWindow",
    "VerdictFilter",
    "adoption_report",
    "chdb_path",
    "dora_columns",
    "dora_window",
    "month_window",
    "serving_stack",
    "sql_string",
    "success_report",
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


class QueryScope(TypedDict):
    """Whose rows a read-only query sees and how much it may cost: `tenant` (None: an
    operator), the caps `max_rows` and `limits`, and, if given and not empty, `teams` and
    `environments` (the contract is `sinks.ledger.query`)."""

    tenant: str | None
    max_rows: int
    limits: QueryLimits
    teams: NotRequired[frozenset[str]]
    environments: NotRequired[frozenset[str]]


def serving_stack(settings: Settings) -> StackInfo | None:
    """The running `shipledger up` whose API serves the reads of this embedded (chDB) ledger,
    or None when the ledger can be opened here (a ClickHouse server, or no stack running).
    LedgerUnavailable when a stack owns the chDB data dir and serves no API."""
    if chdb_path(settings.resolved_clickhouse_url) is None:
        return None
    running = read_stack(settings)
    if running is not None and not running.api_url:
        raise LedgerUnavailable(
            f"`shipledger up` (pid {running.pid}) owns the chDB data dir and serves no API"
        )
    return running


#: The latest succeeded deployments per service, environment and region, numbered from the
#: latest (1: running), with what they shipped: what `artifacts_in_use` reads.
_IN_USE_SQL = (
    "SELECT tenant, service, environment, region, team, deployment_id, artifact_name, version, "
    "artifact_digest, started_at, position FROM (\n"
    "  SELECT *, row_number() OVER (PARTITION BY tenant, service, environment, region\n"
    "    ORDER BY started_at DESC, deployment_id DESC) AS position FROM (\n"
    "    SELECT tenant, service, environment, region, team, deployment_id, artifact_name,\n"
    "      version, artifact_digest, started_at, status FROM {records} {tenant}\n"
    "    ORDER BY seq DESC, updated_at DESC LIMIT 1 BY tenant, deployment_id\n"
    "  ) WHERE status = 'succeeded'\n"
    ") WHERE position <= {{depth:UInt32}} ORDER BY tenant, service, environment, region, position"
)
_M = TypeVar("_M", bound=Model)
_V = TypeVar("_V")


class LedgerReads(Protocol):
    """What the ingest API reads of the ledger (`LedgerReader` is the real one)."""

    def event(self, event_id: str, tenant: str | None) -> StoredEvent | None:
        """The stored deployment event `event_id` (of `tenant`; None: any tenant), if any."""
        ...

    def query(self, sql: str, **scope: Unpack[QueryScope]) -> QueryResult:
        """Run one read-only SELECT within `scope` (raises QueryError)."""
        ...

    def change_events(self, tenant: str, change_id: str) -> list[ChangeEvent]:
        """Every stored event of one change request of `tenant`, in no particular order."""
        ...

    def dora(self, query: DoraQuery, scope: RowScope | None = None) -> list[DoraRow]:
        """The DORA metrics of `query` over the rows `scope` may read (None: all; see
        docs/metrics.md)."""
        ...

    def failures(
        self, query: DoraQuery, detection_rules: tuple[str, ...], scope: RowScope | None = None
    ) -> list[Failure]:
        """The failed deployments of `query` with the times the success criteria measure
        (alerts of `detection_rules` detect), over the rows `scope` may read (docs/metrics.md)."""
        ...

    def adoption(
        self, query: AdoptionQuery, now: datetime, scope: RowScope | None = None
    ) -> list[ServiceAdoption]:
        """Every known service of `query` and how it reports its deployments as of `now`, over
        the rows `scope` may read (docs/reports.md, Adoption)."""
        ...

    def verifications(self, wanted: VerdictFilter) -> list[StoredVerdict]:
        """The latest verification verdicts (docs/verification.md), newest window first."""
        ...

    def change_set(self, tenant: str | None, deployment_id: str) -> StoredChangeSet | None:
        """The latest change set of a deployment (of `tenant`; None: any), docs/changes.md."""
        ...

    def artifact_builds(
        self, tenant: str, artifact_name: str | None, digest: str | None
    ) -> list[ArtifactEvent]:
        """The published artifact events of `tenant` of `artifact_name` or of `digest`."""
        ...

    def artifacts_in_use(self, tenant: str | None, depth: int) -> list[ArtifactInUse]:
        """The `depth` latest succeeded deployments per service and environment of `tenant`
        (None: every tenant), with what they shipped (docs/artifacts.md)."""
        ...

    def suspects(self, query: SuspectsQuery, scope: RowScope | None = None) -> list[Suspect]:
        """The ranked suspects of an incident over the rows `scope` admits (None: all;
        docs/triage.md)."""
        ...

    def reveal(self, value: _V, tenant: str | None = None) -> _V:
        """`value` with the pseudonyms of people replaced by their names, for a reader
        allowed to see them (docs/privacy.md); the same value when privacy is off. With
        `tenant`, only that tenant's people are named (what a tenant's token reads)."""
        ...


class ForwardedReads:
    """`LedgerReads` by forwarding every read to the reader `_reads()` gives: a wrapper (a
    reader opened on demand, a stand-in that can fail) defines only that, and a new read of
    the protocol is added here once for all of them."""

    def _reads(self) -> LedgerReads:
        """The reader to forward to (raises LedgerUnavailable when there is none)."""
        raise NotImplementedError

    def event(self, event_id: str, tenant: str | None) -> StoredEvent | None:
        """See `LedgerReads.event`."""
        return self._reads().event(event_id, tenant)

    def query(self, sql: str, **scope: Unpack[QueryScope]) -> QueryResult:
        """See `LedgerReads.query`."""
        return self._reads().query(sql, **scope)

    def change_events(self, tenant: str, change_id: str) -> list[ChangeEvent]:
        """See `LedgerReads.change_events`."""
        return self._reads().change_events(tenant, change_id)

    def dora(self, query: DoraQuery, scope: RowScope | None = None) -> list[DoraRow]:
        """See `LedgerReads.dora`."""
        return self._reads().dora(query, scope)

    def failures(
        self, query: DoraQuery, detection_rules: tuple[str, ...], scope: RowScope | None = None
    ) -> list[Failure]:
        """See `LedgerReads.failures`."""
        return self._reads().failures(query, detection_rules, scope)

    def adoption(
        self, query: AdoptionQuery, now: datetime, scope: RowScope | None = None
    ) -> list[ServiceAdoption]:
        """See `LedgerReads.adoption`."""
        return self._reads().adoption(query, now, scope)

    def verifications(self, wanted: VerdictFilter) -> list[StoredVerdict]:
        """See `LedgerReads.verifications`."""
        return self._reads().verifications(wanted)

    def change_set(self, tenant: str | None, deployment_id: str) -> StoredChangeSet | None:
        """See `LedgerReads.change_set`."""
        return self._reads().change_set(tenant, deployment_id)

    def artifact_builds(
        self, tenant: str, artifact_name: str | None, digest: str | None
    ) -> list[ArtifactEvent]:
        """See `LedgerReads.artifact_builds`."""
        return self._reads().artifact_builds(tenant, artifact_name, digest)

    def artifacts_in_use(self, tenant: str | None, depth: int) -> list[ArtifactInUse]:
        """See `LedgerReads.artifacts_in_use`."""
        return self._reads().artifacts_in_use(tenant, depth)

    def suspects(self, query: SuspectsQuery, scope: RowScope | None = None) -> list[Suspect]:
        """See `LedgerReads.suspects`."""
        return self._reads().suspects(query, scope)

    def reveal(self, value: _V, tenant: str | None = None) -> _V:
        """See `LedgerReads.reveal`."""
        return self._reads().reveal(value, tenant)


class LedgerReader:
    """Tier-aware reads of one ledger store (thread-safe: the store serializes its calls)."""

    def __init__(self, store: LedgerStore) -> None:
        self._store = store

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

    def query(self, sql: str, **scope: Unpack[QueryScope]) -> QueryResult:
        """Run one read-only SELECT over the query database (hot and cold rows), within
        `scope`; the contract is `sinks.ledger.query`."""
        return run_read_query(self._store, sql, **scope)

    def dora(self, query: DoraQuery, scope: RowScope | None = None) -> list[DoraRow]:
        """The DORA metrics of `query` (`sinks.ledger.dora`). The aggregates live in the hot
        database only and hold every day, archived or not: their views fire at insert."""
        return read_dora(self._store, query, scope)

    def failures(
        self, query: DoraQuery, detection_rules: tuple[str, ...], scope: RowScope | None = None
    ) -> list[Failure]:
        """The failed deployments of `query` with their detection and rollback times
        (`sinks.ledger.success`): the aggregates, then the records and alerts, hot and cold."""
        return read_failures(
            self._store,
            query,
            detection_rules,
            scope,
            records=self._store.source(ddl.RECORDS),
            alerts=self._store.source(ddl.ALERTS),
        )

    def adoption(
        self, query: AdoptionQuery, now: datetime, scope: RowScope | None = None
    ) -> list[ServiceAdoption]:
        """Every known service and how it reports its deployments (`sinks.ledger.adoption`):
        the `services` and `deployments` views of the query database (hot and cold), and
        the CMDB findings (hot only, like every derived table)."""
        return read_adoption(
            self._store,
            query,
            now,
            tiers.query_database(self._store),
            ddl.qualified(self._store.database, ddl.CMDB_FINDINGS),
            scope,
        )

    def pack_queries(self, month: str, tenant: str | None) -> list[PackQuery]:
        """The queries of the monthly compliance pack's data files (`sinks.ledger.monthly`):
        with the change sets' file (`deployment_commits`). Raises MonthError."""
        return pack_queries(month, tenant, ddl.qualified(self._store.database, ddl.CHANGE_COMMITS))

    def read_pack(self, queries: list[PackQuery]) -> Iterator[PackTable]:
        """What each pack query reads, one at a time (hot and cold rows)."""
        yield from read_pack(self._store, queries)

    def chain_heads(self, tenant: str | None) -> list[ChainHead]:
        """The last recorded head of every hash chain (of `tenant`)."""
        return chain_heads(self._store, tenant)

    def missing_heads(self, heads: list[ChainHead]) -> list[ChainHead]:
        """The heads of `heads` whose row (that hash at that position) is gone."""
        return missing_heads(self._store, heads)

    def verifications(self, wanted: VerdictFilter) -> list[StoredVerdict]:
        """The latest verification verdicts `wanted`, newest window first
        (`sinks.ledger.verifications`: hot only, never archived)."""
        return latest(self._store, wanted)

    def change_set(self, tenant: str | None, deployment_id: str) -> StoredChangeSet | None:
        """The latest change set of `deployment_id` (`sinks.ledger.change_sets`; hot database
        only, like the aggregates: the sink writes it there)."""
        return read_change_set(self._store, tenant, deployment_id)

    def suspects(self, query: SuspectsQuery, scope: RowScope | None = None) -> list[Suspect]:
        """The ranked suspects of an incident (`sinks.ledger.suspects`), hot and cold."""
        return read_suspects(self._store, query, scope)

    def reveal(self, value: _V, tenant: str | None = None) -> _V:
        """`value` with every pseudonym whose lookup entry exists (of `tenant`, if given)
        replaced by the person's name (`sinks.ledger.pseudonyms.reveal`). Callers decide who
        may see names: the API a token with the `pii:read` scope, a command the one who
        holds the key."""
        return reveal(self._store, value, tenant)

    def deployments_between(
        self, tenant: str, start: datetime, end: datetime
    ) -> list[LedgerDeployment]:
        """Every deployment of `tenant` that started in [`start`, `end`), as its latest
        record says, hot and cold: what a reconciliation compares (docs/reconcile.md)."""
        return read_deployments(self._store, tenant, start, end)

    def service_teams(self, tenant: str) -> dict[str, str]:
        """The team of each service of `tenant` (its latest deployment's), hot and cold."""
        return service_teams(self._store, tenant)

    def change_events(self, tenant: str, change_id: str) -> list[ChangeEvent]:
        """Every stored event of change request `change_id` of `tenant`, hot and cold (a row
        briefly in both tiers during an archive run comes twice: the fold drops the copy),
        as the model of the `changes` topic: what the gate and the approvals fold."""
        return self._family_events(
            ChangeEvent, ddl.CHANGES, tenant, "change_id = {change_id:String}", change_id=change_id
        )

    def artifact_builds(
        self, tenant: str, artifact_name: str | None, digest: str | None
    ) -> list[ArtifactEvent]:
        """The published artifact events of `tenant` of artifact `artifact_name` or of
        `digest`, hot and cold: what the gate compares a deployment's digest with."""
        if not artifact_name and not digest:
            return []
        return self._family_events(
            ArtifactEvent,
            ddl.ARTIFACTS,
            tenant,
            f"{ddl.PUBLISHED} AND (artifact_name = {{name:String}} OR digest = {{digest:String}})",
            name=artifact_name or "",
            digest=digest or "",
        )

    def _family_events(
        self, model: type[_M], table: str, tenant: str, where: str, **params: str
    ) -> list[_M]:
        """The rows of family table `table` of `tenant` matching `where`, as `model`.

        The gate waits on these reads, and a cold File table costs a scan of its files on
        every query (measured: 47 ms against 9 ms for the hot table alone): the cold tier is
        read only when the tenant has cold files of the table. It is checked after the hot
        read, so a row the archive moves in between (it writes the file, then deletes the
        hot row) is found in one tier or the other."""
        fields = list(model.model_fields)
        columns = ", ".join(ddl.quote_ident(f) for f in fields)
        cold_root = self._store.cold_root
        found: list[_M] = []
        for tier, source in tiers.tier_sources(self._store, table):
            if tier == "cold" and not (cold_root and tiers.cold_files(cold_root, table, [tenant])):
                continue
            names, rows = self._store.query(
                f"SELECT {columns} FROM {source} "  # noqa: S608 (checked identifiers)
                f"WHERE tenant = {{tenant:String}} AND ({where})",
                {"tenant": tenant, **params},
            )
            # The gate judges approvals on names (four eyes), as the processors do.
            rows = reveal(self._store, rows, tenant)
            found += [model.model_validate(dict(zip(names, r, strict=True))) for r in rows]
        return found

    def artifacts_in_use(self, tenant: str | None, depth: int) -> list[ArtifactInUse]:
        """The `depth` latest succeeded deployments of every service and environment (and
        region) of `tenant` (None: every tenant), with what they shipped, hot and cold."""
        sql = _IN_USE_SQL.format(
            records=self._store.source(ddl.RECORDS),
            tenant="WHERE tenant = {tenant:String}" if tenant is not None else "",
        )
        params: dict[str, Any] = {"depth": depth}
        if tenant is not None:
            params["tenant"] = tenant
        _, rows = self._store.query(sql, params)
        return [
            ArtifactInUse(
                tenant=str(tenant_),
                service=str(service),
                environment=str(environment),
                region=region,
                team=team,
                deployment_id=str(deployment_id),
                artifact_name=artifact_name,
                version=version,
                digest=digest,
                started_at=as_utc(started_at),
                position=int(position),
            )
            for (
                tenant_,
                service,
                environment,
                region,
                team,
                deployment_id,
                artifact_name,
                version,
                digest,
                started_at,
                position,
            ) in rows
        ]

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
        # Judged again as the processors judged them: on names.
        rows = reveal(self._store, self._store.query(sql, params)[1], tenant)
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
            # The processors' enrichment view holds names (approvals are judged on them).
            for row in reveal(self._store, rows):
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
