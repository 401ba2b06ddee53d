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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, cast

from shipledger.history.mapping import EventObject
from shipledger.processors.enrichment import Enrichment
from shipledger.processors.step import process
from shipledger.producers.api.events import validated_event
from shipledger.schemas.family_models import ArtifactEvent, CatalogEvent, ChangeEvent
from shipledger.schemas.models import DeploymentEvent, DeploymentRecord
from shipledger.schemas.policy import Policy
from shipledger.schemas.registry import catalog
from shipledger.schemas.validation import Rejected
from shipledger.settings import Settings
from shipledger.sinks.ledger.ddl import ALERTS, EVENTS, RECORDS
from shipledger.sinks.regions import Placement, Unplaced
from shipledger.sinks.rows import KafkaMeta, Row, alert_row, event_row, record_row, row_builder

#: What `deployment_events.kafka_*` hold for an imported event: no topic, no partition.
IMPORT_TOPIC = "import"
CHANNEL = "import"


class _Identified(Protocol):
    """What every family's event has (their models share no base that says so)."""

    tenant: str
    event_id: str


@dataclass(frozen=True)
class Problem:
    """Why the record at `line` (or one of its events) was not imported."""

    line: int
    field: str
    reason: str


@dataclass
class Batch:
    """Rows waiting for the next write, by table, and what they count."""

    rows: dict[str, list[Row]] = field(
        default_factory=lambda: {EVENTS: [], RECORDS: [], ALERTS: []}
    )
    events: int = 0
    alerts: int = 0


class Judge:
    """Validates and judges an import's event objects in order (see the module docstring).

    `tenant`: the tenant of objects naming none, and the only one accepted (None: any);
    `known_actor` the directory (`shipledger.identities.actor_known`); `now` the import's
    start: the records' `updated_at`, the alerts' `detected_at` and the events' `received_at`.
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
        self._placement = Placement(policy, ())
        self._view = Enrichment()
        self._records: dict[tuple[str, str], DeploymentRecord] = {}
        self._seen: set[tuple[str, str]] = set()
        self.duplicates = 0
        #: CPU seconds spent validating, judging (the processors' chain) and building rows.
        self.seconds: defaultdict[str, float] = defaultdict(float)

    def add(self, line: int, obj: EventObject, batch: Batch) -> Problem | None:
        """Judge one event object into `batch`; why not, naming the field, if it is refused."""
        if obj.get("occurred_at") is None:
            return Problem(line, "occurred_at", "required in an import (the event's own time)")
        started = time.thread_time()
        validated = validated_event(obj, line, self._settings, CHANNEL, self._tenant)
        self.seconds["validate"] += time.thread_time() - started
        if isinstance(validated, list):
            first = validated[0]
            return Problem(line, first.field, first.reason)
        family, event = validated
        tenant = cast(_Identified, event).tenant
        if self._tenant is not None and tenant != self._tenant:
            return Problem(line, "tenant", f"{tenant!r}, not the --tenant {self._tenant!r}")
        placed = self._placement.ledgers_of(tenant)
        if isinstance(placed, Unplaced) or placed != (None,):
            return Problem(
                line,
                "tenant",
                f"{tenant!r} is stored in a regional ledger: import "
                "it with that ledger's settings (SHIPLEDGER_REGION)",
            )
        key = (tenant, cast(_Identified, event).event_id)
        if key in self._seen:
            self.duplicates += 1
            return None
        if isinstance(event, DeploymentEvent):
            problem = self._deployment(line, event, batch)
            if problem is not None:
                return problem
        else:
            table = catalog().topic(family.topic).table
            assert table is not None, f"family {family.name} has no table"
            meta = KafkaMeta(IMPORT_TOPIC, -1, line, self._received_ms)
            batch.rows.setdefault(table.name, []).append(
                row_builder(table.name)(event.to_avro(), meta)
            )
            if isinstance(event, ChangeEvent | CatalogEvent | ArtifactEvent):
                self._view.apply(event)
        self._seen.add(key)
        batch.events += 1
        return None

    def _deployment(self, line: int, event: DeploymentEvent, batch: Batch) -> Problem | None:
        key = (event.tenant, event.deployment_id)
        started = time.thread_time()
        try:
            result = process(
                event,
                self._records.get(key),
                self._policy,
                now=self._now,
                view=self._view,
                known_actor=self._known_actor,
            )
        except Rejected as exc:
            return Problem(line, exc.field or "event", exc.reason)
        self._records[key] = result.record
        judged = time.thread_time()
        meta = KafkaMeta(IMPORT_TOPIC, -1, line, self._received_ms)
        batch.rows[EVENTS].append(event_row(event.to_avro(), meta))
        batch.rows[RECORDS].append(record_row(result.record.to_avro()))
        batch.rows[ALERTS].extend(alert_row(a.to_avro()) for a in result.alerts)
        batch.alerts += len(result.alerts)
        self.seconds["judge"] += judged - started
        self.seconds["rows"] += time.thread_time() - judged
        return None
