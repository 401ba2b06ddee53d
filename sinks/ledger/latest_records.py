"""Each deployment's latest record as the ledger holds it (`deployment_records`, hot and cold):
what `shipledger up --restore` rebuilds the processors' state from, and what `shipledger
import` continues a deployment from when its record is not in memory (a resumed import, or a
deployment whose events lie chunks apart)."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any

from shipledger.schemas.models import DeploymentRecord
from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.store import LedgerStore, bound_keys

#: (tenant, deployment_id)
DeploymentKey = tuple[str, str]
_RECORD_FIELDS = tuple(DeploymentRecord.model_fields)
# Each deployment's latest record, the ids of its records made by events (= events applied;
# a re-judgement's record keeps its last event's id) by seq, and the id of its first event.
# Columns are checked identifiers (ddl); no input reaches this SQL ({where}: a bound filter).
_STATES_SQL = (
    "SELECT {fields}, ids, first FROM (\n"
    "  SELECT * FROM {records}{where} ORDER BY seq DESC, updated_at DESC\n"
    "  LIMIT 1 BY tenant, deployment_id\n"
    ") AS latest INNER JOIN (\n"
    "  SELECT tenant, deployment_id,\n"
    "    arrayMap(x -> x.2, arraySort(x -> x.1,\n"
    "      groupArrayIf((seq, record_id), record_id = last_event_id))) AS ids,\n"
    "    anyIf(record_id, seq = 1) AS first\n"
    "  FROM {records}{where} GROUP BY tenant, deployment_id\n"
    ") AS seen USING (tenant, deployment_id)"
)
# Only records of events the ledger holds: a writer that stores records before their events
# (`shipledger import`) and died between the two left records of events it will judge again.
_ONLY = (
    " WHERE (tenant, deployment_id) IN {{keys:Array(Tuple(String, String))}}"
    " AND (tenant, last_event_id) IN (SELECT tenant, event_id FROM {events}"
    " WHERE (tenant, deployment_id) IN {{keys:Array(Tuple(String, String))}})"
)


def ledger_states(
    store: LedgerStore, keys: Collection[DeploymentKey] | None = None
) -> Iterator[tuple[DeploymentRecord, list[str], str | None]]:
    """Every deployment's latest record, applied event ids (oldest first) and first event;
    with `keys`, only those deployments', and only records whose last event is stored."""
    if keys is not None and not keys:
        return
    fields = ", ".join(
        f"latest.{ddl.quote_ident(f)} AS {ddl.quote_ident(f)}" for f in _RECORD_FIELDS
    )
    params: dict[str, Any] | None = None if keys is None else {"keys": bound_keys(sorted(keys))}
    # Hot and cold rows: a deployment whose records moved to cold storage keeps its state.
    sql = _STATES_SQL.format(
        fields=fields,
        records=store.source(ddl.RECORDS),
        where="" if keys is None else _ONLY.format(events=store.source(ddl.EVENTS)),
    )
    _, rows = store.query(sql, params)
    for row in rows:
        values = dict(zip(_RECORD_FIELDS, row[: len(_RECORD_FIELDS)], strict=True))
        ids, first = row[len(_RECORD_FIELDS)], row[len(_RECORD_FIELDS) + 1]
        yield DeploymentRecord.model_validate(values), [str(i) for i in ids], str(first) or None
