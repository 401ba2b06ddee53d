"""Each event object of an import judged as the live pipeline judges it, into ledger rows.

Validation is the ingest API's (`producers.api.events.validated_event`: aliases, required
fields, `SHIPLEDGER_EARLIEST_EVENT_TIME`, ...); a deployment event then goes through the
processors' pure chain (`processors.step.process`) against the record its deployment had
after the previous event of the import, under the policy the command loaded, with the view
(`processors.enrichment`) folded from the change, catalog and artifact events met so far in
the file and the directory the worker asks about manual deployers. Its rows are the ones the
sink would store from the pipeline's messages: the event (`deployment_events`, with `import`
for its topic, -1 for its partition and its line for its offset), the deployment's new record
and its alerts; an event of another family is a row of its table.

What differs from the live pipeline, by design: an event's time is required (an import of
history without it would store a new event at every run), events are judged in the file's
order, and a change request that changes after a deployment it governs does not judge that
deployment again (the worker's re-judgement, `processors.late_changes`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, cast

from shipledger.processors.enrichment import Enrichment
from shipledger.processors.step import StepResult, process
from shipledger.producers.api.events import validated_event, validation_context
from shipledger.producers.api.uploads import Record
from shipledger.schemas.families import Family
from shipledger.schemas.family_models import ArtifactEvent, CatalogEvent, ChangeEvent
from shipledger.schemas.models import DeploymentEvent, DeploymentRecord, Model
from shipledger.schemas.policy import Policy
from shipledger.schemas.registry import catalog
from shipledger.schemas.validation import Rejected
from shipledger.settings import Settings
from shipledger.sinks.ledger.ddl import ALERTS, EVENTS, RECORDS
from shipledger.sinks.ledger.latest_records import DeploymentKey
from shipledger.sinks.regions import Placement, Unplaced
from shipledger.sinks.rows import (
    KafkaMeta,
    Row,
    RowKey,
    alert_row,
    event_row,
    record_row,
    row_builder,
)

#: What `deployment_events.kafka_*` hold for an imported event: no topic, no partition.
IMPORT_TOPIC = "import"
CHANNEL = "import"


class _Identified(Protocol):
    """What every family's event has (their models share no base that says so)."""

    tenant: str
    event_id: str
    occurred_at: datetime


@dataclass(frozen=True)
class Problem:
    """Why the record at `line` (or one of its events) was not imported."""

    line: int
    field: str
    reason: str


@dataclass
class Batch:
    """One chunk judged: rows waiting for their write, by table, what they count, and the
    records refused."""

    rows: dict[str, list[Row]] = field(
        default_factory=lambda: {EVENTS: [], RECORDS: [], ALERTS: []}
    )
    events: int = 0
    alerts: int = 0
    #: Events the ledger holds already (a resumed or repeated import): not judged again.
    stored: int = 0
    #: Events repeated in the file (the same tenant and id), imported once.
    duplicates: int = 0
    problems: list[Problem] = field(default_factory=list)


class Stored(Protocol):
    """What the ledger holds already, asked once per chunk before it is judged (`run`'s
    `LedgerLookups`; `NOTHING_STORED` for a dry run)."""

    #: Whether each chunk is stored before the one after next is judged: a deployment's record
    #: can then be dropped from memory after a chunk without its events and asked for again.
    durable: bool
    #: Whether the ledger held no deployment record when the import began: then only the
    #: deployments of the import's own older chunks can have a record there, and only its
    #: own older chunks' deployment events can be stored.
    fresh: bool

    def stored(self, keys: list[RowKey], times: list[datetime]) -> set[RowKey]:
        """Which deployment events of `keys` (tenant, id; occurred at `times`) are stored:
        stored with everything they made (`run.store_batch` writes them last)."""
        ...

    def records(self, keys: Collection[DeploymentKey]) -> dict[DeploymentKey, DeploymentRecord]:
        """The latest record of each deployment of `keys` made by an event that is stored."""
        ...


class _Unwritten:
    durable = False
    fresh = True

    def stored(self, keys: list[RowKey], times: list[datetime]) -> set[RowKey]:
        return set()

    def records(self, keys: Collection[DeploymentKey]) -> dict[DeploymentKey, DeploymentRecord]:
        return {}


#: A dry run's ledger: nothing stored, every record kept in memory.
NOTHING_STORED: Stored = _Unwritten()


class _Dropped:
    """The keys dropped from memory (deployments' records, events' ids), as a Bloom filter of
    fixed size (16 MiB: about 2% false positives at 10 million keys): on a fresh ledger, only
    these are asked of it. A false positive costs a question the ledger answers with nothing;
    a key never added is never reported."""

    _BITS = 1 << 27
    #: `% _BITS` as a mask (a power of two); the hash taken as unsigned 64 bits.
    _MASK = _BITS - 1
    _UNSIGNED = 0xFFFFFFFFFFFFFFFF

    def __init__(self) -> None:
        self._bits = bytearray(self._BITS // 8)

    def update(self, keys: Iterable[DeploymentKey]) -> None:
        """Add `keys` (a chunk's: one call, not one per key)."""
        # The positions are computed inline (here and in `__contains__`): a method call a key
        # was half the cost, paid for every event of an import.
        bits, mask, unsigned = self._bits, self._MASK, self._UNSIGNED
        for key in keys:
            h = hash(key) & unsigned
            first, second = h & mask, (h >> 32 ^ h * 0x9E3779B1) & mask
            bits[first >> 3] |= 1 << (first & 7)
            bits[second >> 3] |= 1 << (second & 7)

    def __contains__(self, key: DeploymentKey) -> bool:
        h = hash(key) & self._UNSIGNED
        first, second = h & self._MASK, (h >> 32 ^ h * 0x9E3779B1) & self._MASK
        bits = self._bits
        return bool(bits[first >> 3] >> (first & 7) & bits[second >> 3] >> (second & 7) & 1)


@dataclass(frozen=True)
class _Valid:
    """A validated event of the chunk, with its table, (tenant, id) and, a deployment
    event's, its deployment (tenant, deployment id)."""

    line: int
    family: Family
    event: Model
    table: str
    key: RowKey
    deployment: DeploymentKey | None


class Judge:
    """Validates and judges an import's event objects, a chunk at a time, in the file's order
    (see the module docstring).

    `tenant`: the tenant of objects naming none, and the only one accepted (None: any);
    `known_actor` the directory (`shipledger.identities.actor_known`); `now` the import's
    start: the records' `updated_at`, the alerts' `detected_at` and the events' `received_at`.

    State carried from chunk to chunk: the enrichment view (change, catalog and artifact
    events, small), and the records and event ids of the last two chunks only (bounded
    memory): an older deployment's record, and whether an older event was stored, are asked
    of the ledger (`Stored`), which holds those chunks by then. So a resumed import continues
    from what the ledger holds without judging its stored events again.
    """

    def __init__(
        self,
        settings: Settings,
        policy: Policy,
        tenant: str | None,
        known_actor: Callable[[str], bool],
        now: datetime,
    ) -> None:
        self._settings = settings
        self._policy = policy
        self._tenant = tenant
        self._known_actor = known_actor
        self._now = now
        self._received_ms = int(now.timestamp() * 1000)
        # The settings' time window, made once (not once an event).
        self._context = validation_context(settings)
        self._placement = Placement(policy, ())
        self._tables: dict[str, str] = {}
        self._view = Enrichment()
        # (this chunk's, the previous chunk's): records by deployment, event ids judged.
        self._records: tuple[dict[DeploymentKey, DeploymentRecord], ...] = ({}, {})
        self._seen: tuple[set[RowKey], ...] = (set(), set())
        # Deployments whose records, and events whose ids, were dropped from memory.
        self._dropped = _Dropped()
        self._forgotten = _Dropped()
        #: CPU seconds spent validating, asking the ledger (`lookup`, of which `records`:
        #: the records of deployments of older chunks), judging (the processors' chain) and
        #: building rows.
        self.seconds: defaultdict[str, float] = defaultdict(float)

    def chunk(self, records: Iterable[Record], ledger: Stored) -> Batch:
        """Judge one chunk of the file's records into rows; deployment events `ledger` holds
        are skipped, not judged again."""
        batch = Batch()
        if ledger.durable:
            self._dropped.update(self._records[1])
            self._forgotten.update(self._seen[1])
            self._records = ({}, self._records[0])
            self._seen = (set(), self._seen[0])
        started = time.thread_time()
        valid: list[_Valid] = []
        for record in records:
            checked = self._validated(record)
            if isinstance(checked, Problem):
                batch.problems.append(checked)
            else:
                valid.append(checked)
        looked_up = time.thread_time()
        self.seconds["validate"] += looked_up - started
        stored = self._stored(valid, ledger)
        judging = time.thread_time()
        self.seconds["lookup"] += judging - looked_up
        judged: list[tuple[_Valid, StepResult | None]] = []
        seen_now, seen_before = self._seen
        for item in valid:
            if item.key in seen_now or item.key in seen_before:
                batch.duplicates += 1
                continue
            if item.key in stored:
                batch.stored += 1
            elif (result := self._judged(item, batch)) is not None:
                judged.append(result)
            else:
                continue
            seen_now.add(item.key)
        rows_started = time.thread_time()
        self.seconds["judge"] += rows_started - judging
        for item, step in judged:
            self._rows(item, step, batch)
        self.seconds["rows"] += time.thread_time() - rows_started
        batch.problems.sort(key=lambda p: p.line)
        return batch

    def _validated(self, record: Record) -> _Valid | Problem:
        line, obj = record.line, record.obj
        if not isinstance(obj, dict):
            return Problem(line, record.field, record.error or "unreadable")
        if obj.get("occurred_at") is None:
            return Problem(line, "occurred_at", "required in an import (the event's own time)")
        validated = validated_event(obj, line, self._settings, CHANNEL, self._tenant, self._context)
        if isinstance(validated, list):
            first = validated[0]
            return Problem(line, first.field, first.reason)
        family, event = validated
        tenant = cast(_Identified, event).tenant
        if self._tenant is not None and tenant != self._tenant:
            return Problem(line, "tenant", f"{tenant!r}, not the --tenant {self._tenant!r}")
        if not self._in_default_ledger(tenant):
            return Problem(
                line,
                "tenant",
                f"{tenant!r} is stored in a regional ledger: import "
                "it with that ledger's settings (SHIPLEDGER_REGION)",
            )
        table = self._tables.get(family.name)
        if table is None:
            spec = catalog().topic(family.topic).table
            assert spec is not None, f"family {family.name} has no table"
            table = self._tables[family.name] = spec.name
        deployment = (tenant, event.deployment_id) if isinstance(event, DeploymentEvent) else None
        return _Valid(
            line, family, event, table, (tenant, cast(_Identified, event).event_id), deployment
        )

    def _in_default_ledger(self, tenant: str) -> bool:
        """Whether the policy stores `tenant`'s rows in the default ledger."""
        regions = self._placement.ledgers_of(tenant)
        return not isinstance(regions, Unplaced) and regions == (None,)

    def _stored(self, valid: list[_Valid], ledger: Stored) -> set[RowKey]:
        """The chunk's deployment events the ledger holds (one id check), and the records of
        the deployments of the others that are in no recent chunk, read from the ledger.
        Other families' events are written again (the writer drops what is stored): they
        cost no judging, and a late push recomputes change sets. A fresh ledger is asked
        only about the events this import dropped from memory (the id check costed ~14 µs
        an event, each found new)."""
        deployments = [i for i in valid if i.deployment is not None]
        asked = deployments
        if ledger.fresh:
            forgotten = self._forgotten
            asked = [i for i in deployments if i.key in forgotten]
        stored = (
            ledger.stored(
                [i.key for i in asked],
                [cast(DeploymentEvent, i.event).occurred_at for i in asked],
            )
            if asked
            else set()
        )
        wanted = {
            key for i in deployments if (key := i.deployment) is not None and i.key not in stored
        }
        wanted.difference_update(*self._records)
        if ledger.fresh:
            dropped = self._dropped
            wanted = {key for key in wanted if key in dropped}
        asking = time.thread_time()
        self._records[0].update(ledger.records(wanted))
        self.seconds["records"] += time.thread_time() - asking
        return stored

    def _fold(self, event: Model) -> None:
        if isinstance(event, ChangeEvent | CatalogEvent | ArtifactEvent):
            self._view.apply(event)

    def _judged(self, item: _Valid, batch: Batch) -> tuple[_Valid, StepResult | None] | None:
        """`item` judged: a deployment event's step (None: another family's event, folded
        into the view), or None and a problem in `batch` when the rules refuse it."""
        event, key = item.event, item.deployment
        if not isinstance(event, DeploymentEvent) or key is None:
            self._fold(event)
            return item, None
        recent, older = self._records
        previous = recent.get(key)
        try:
            result = process(
                event,
                older.get(key) if previous is None else previous,
                self._policy,
                now=self._now,
                view=self._view,
                known_actor=self._known_actor,
            )
        except Rejected as exc:
            batch.problems.append(Problem(item.line, exc.field or "event", exc.reason))
            return None
        recent[key] = result.record
        return item, result

    def _rows(self, item: _Valid, step: StepResult | None, batch: Batch) -> None:
        """The rows of a judged event (rows depend on no state: built after the chunk is
        judged, and timed once per chunk)."""
        meta = KafkaMeta(IMPORT_TOPIC, -1, item.line, self._received_ms)
        batch.events += 1
        if step is None:
            batch.rows.setdefault(item.table, []).append(
                row_builder(item.table)(item.event.to_avro(), meta)
            )
            return
        batch.rows[EVENTS].append(event_row(step.event.to_avro(), meta))
        batch.rows[RECORDS].append(record_row(step.record.to_avro()))
        batch.rows[ALERTS].extend(alert_row(a.to_avro()) for a in step.alerts)
        batch.alerts += len(step.alerts)
