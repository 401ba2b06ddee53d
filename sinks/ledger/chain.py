"""Tamper evidence: every stored row is chained by hash. Pure functions, no I/O.

Design (measured and chosen for several writers and legitimate expiry):

- **One chain per (table, tenant, retention_class, lane).** A lane (`chain_lane`) is what
  only ONE writer extends at a time, so no two writers ever fork a chain: the sink's rows go
  to the lane of the Kafka partition they were read from (`partition_lane`: a partition has
  one reader in its consumer group at a time, so several sinks share a ledger), `shipledger
  import` writes its own lane (`IMPORT_LANE`), and rows stored before lanes existed (migration
  0023), or by a `LedgerWriter` used alone (benchmarks, tests), are in the legacy lane ''
  (`LEGACY_LANE`). A writer loads a lane's head from ClickHouse (`chain_heads` and the
  tables) when it is given the lane (a sink: on each partition assignment, never from what
  it remembered of an earlier one), and forgets it when the lane is taken away
  (docs/operations.md, Chain lanes). Two writers on one lane (two sinks in one consumer group with a
  partition each thinks its own) fork it, which `audit verify` reports as out-of-band inserts.
- Each row gets `ledger_at` (insert time, never earlier than the chain head's), its
  `retention_class` (and, on tables whose rows do not name one, the `policy_version` whose
  retention it applied) and `retain_until = max(ledger_at + period, head's retain_until)`, so
  `retain_until` never decreases along a chain: ClickHouse's TTL can only ever remove a
  PREFIX of a chain (plus holes among rows that are all past their time).
- `chain_seq` (1, 2, ...), `prev_hash` (the previous row's `row_hash`, 64 zeros first),
  `prev_retain_until` (the previous row's `retain_until`), and `row_hash` = hex sha256 of the
  row's canonical bytes: orjson with sorted keys (maps sorted too) over every column except
  `row_hash` itself, datetimes as epoch milliseconds. `chain_seq`, `prev_hash` and
  `prev_retain_until` are inside the hash, so none can be edited alone. A column added to
  chained tables later (`LATE_COLUMNS`, `LATE_TABLE_COLUMNS`) is hashed only when set: a
  row stored before it existed reads back its empty default and still hashes as it was
  stamped.
- A missing row is legitimate only if the next surviving row's `prev_retain_until` has
  passed: its predecessor (and, by monotonicity, every earlier row) may have expired. A
  deleted row that was not due is reported, wherever it was.
- After each flush the sink appends the new head of every chain it extended to
  `chain_heads` (table, tenant, class, lane, seq, row_hash, retain_until): removing the tail
  of a chain, or rewriting its last row, is detected against it.

Limits: the chain proves nothing against someone who can rewrite a whole chain, hashes and
`chain_heads` included; export `audit verify --format json` heads (or chain_heads) somewhere
they cannot write to anchor it. Column types must round-trip exactly through ClickHouse
(strings, integers, Bool, DateTime64(3), arrays, maps do; a float column would need a
canonical form): `tests/integration/test_audit.py` round-trips a row of every table.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from shipledger.schemas.policy import Retention
from shipledger.sinks.ledger import ddl

GENESIS = "0" * 64
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
CANONICAL_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS

#: (table, tenant, retention_class, lane)
ChainKey = tuple[str, str, str, str]
#: The column naming a row's lane (its chain is that of its table, tenant, class and lane).
LANE = "chain_lane"
#: The lane of rows stored before lanes existed, and of a `LedgerWriter` used alone.
LEGACY_LANE = ""
#: The lane `shipledger import` writes (one import at a time per ledger).
IMPORT_LANE = "import"
#: Columns added after rows were chained (migrations 0006, 0023): hashed only when not empty
#: (so the legacy lane '' hashes as its rows were stamped).
LATE_COLUMNS = ("policy_version", LANE)
#: The same, per table: escalations' action and resolved alert (migration 0010), source
#: events' changed paths (0012), artifact events' lifecycle columns (0013).
LATE_TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "escalations": ("action", "resolved_alert_id"),
    "source_events": ("changed_paths",),
    "artifact_events": ("provenance_url", "action", "registry"),
}
#: What a late column reads back as on a row stored before it existed: the empty default of
#: its type (String, Nullable, Map). A String column never held None, so no row stamped
#: before a column type joined this list hashes differently.
UNSET: tuple[Any, ...] = ("", None, {})


@functools.cache
def late_columns(table: str) -> tuple[str, ...]:
    """The late columns of `table` (hashed only when not empty)."""
    return LATE_COLUMNS + LATE_TABLE_COLUMNS.get(table, ())


def partition_lane(partition: int) -> str:
    """The lane of the rows the sink read from `partition` of their table's topic."""
    return f"p{partition}"


def epoch_ms(value: datetime) -> int:
    """Exact epoch milliseconds of an aware datetime (integer arithmetic: no float rounding)."""
    return (value - EPOCH) // _MS


def to_ms_precision(value: datetime) -> datetime:
    """`value` truncated to the millisecond, as DateTime64(3) stores it."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def canonical_default(value: Any) -> Any:
    """orjson's `default` for the canonical bytes: a datetime (one nested in an array, a map
    or a tuple; top-level ones are converted before) as its epoch milliseconds."""
    if isinstance(value, datetime):
        return epoch_ms(value)
    raise TypeError(f"no canonical form for {type(value).__name__}")


@functools.cache
def _datetime_columns(table: str) -> tuple[str, ...]:
    """The datetime columns of `table` (none for a table the ledger does not know)."""
    spec = ddl.tables().get(table)
    return () if spec is None else tuple(c.name for c in spec.columns if c.holds_datetime)


def canonical_bytes(row: Mapping[str, Any], table: str = "") -> bytes:
    """The bytes `row_hash` hashes: sorted-key JSON of every column but `row_hash`, late
    columns (of `table`) only when set, datetimes as epoch milliseconds. The table's own
    datetime columns are converted here rather than by orjson's `default`, called back once
    per value (the same bytes: ~2 µs a row less, measured)."""
    return _canonical(row, table, {})


def _canonical(row: Mapping[str, Any], table: str, millis: dict[datetime, int]) -> bytes:
    """`canonical_bytes`, the milliseconds of each datetime taken from `millis` (those not
    there yet added): `stamp`'s rows share most of theirs (when they were received, stored,
    kept until), each converted once a batch rather than once a row (~0.3 µs each)."""
    out = dict(row)
    out.pop("row_hash", None)
    for late in late_columns(table):
        if late in out and out[late] in UNSET:
            del out[late]
    for name in _datetime_columns(table):
        value = out.get(name)
        if isinstance(value, datetime):
            ms = millis.get(value)
            if ms is None:
                ms = millis[value] = epoch_ms(value)
            out[name] = ms
    return orjson.dumps(out, option=CANONICAL_OPTIONS, default=canonical_default)


def row_hash(row: Mapping[str, Any], table: str = "") -> str:
    """Hex sha256 of `canonical_bytes(row, table)`."""
    return hashlib.sha256(canonical_bytes(row, table)).hexdigest()


@dataclass(frozen=True)
class Head:
    """The last row of a chain: what the next row links to."""

    seq: int
    row_hash: str
    retain_until: datetime
    ledger_at: datetime


def environments_of(row: Mapping[str, Any]) -> list[str]:
    """The environment names a row is about: `environment` and/or `environments`."""
    names: list[str] = []
    single = row.get("environment")
    if isinstance(single, str) and single:
        names.append(single)
    many = row.get("environments")
    if isinstance(many, list | tuple):
        names.extend(str(e) for e in many if e)
    return names


def stamp(
    table: str,
    rows: Iterable[dict[str, Any]],
    heads: Mapping[ChainKey, Head],
    retention: Retention,
    now: datetime,
    policy_version: str | None = None,
) -> dict[ChainKey, Head]:
    """Set the ledger columns of `rows` (in place, in order) continuing `heads`, and
    `policy_version` when given (the version of the policy `retention` comes from, for tables
    whose rows do not name their own); the new heads of the chains extended (`heads` itself
    is not changed: the caller adopts the result once the rows are stored). Each row's lane is
    its `chain_lane` (set to the legacy lane '' when it has none)."""
    now = to_ms_precision(now)
    # The end of each chain extended, (seq, row_hash, retain_until, ledger_at): a `Head` is
    # made once per chain at the end, not once per row (~1 µs a row, measured).
    ends: dict[ChainKey, tuple[int, str, datetime, datetime]] = {}
    # A batch's rows share few tenants and environments: each class and period is worked out
    # once per batch (~2.5 µs a row when asked per row), not once per row. So is each
    # `ledger_at + period`: the rows share one object, hashed once in `millis`.
    class_for = functools.cache(retention.class_for)
    period_of = functools.cache(retention.period)
    kept_until: dict[tuple[datetime, timedelta], datetime] = {}
    millis: dict[datetime, int] = {}
    # The class of a row naming one environment (the usual row), by tenant and environment:
    # without making its `environments_of` (~0.5 µs a row).
    class_of_environment: dict[tuple[str, str], str] = {}
    for row in rows:
        tenant = row["tenant"]
        single = row.get("environment")
        if type(single) is str and "environments" not in row:
            klass = class_of_environment.get((tenant, single))
            if klass is None:
                klass = class_for(tenant, (single,) if single else ())
                class_of_environment[(tenant, single)] = klass
        else:
            klass = class_for(tenant, tuple(environments_of(row)))
        period = period_of(klass)
        key = (table, tenant, klass, row.setdefault(LANE, LEGACY_LANE))
        end = ends.get(key)
        if end is None and (head := heads.get(key)) is not None:
            end = (head.seq, head.row_hash, head.retain_until, head.ledger_at)
        if policy_version is not None:
            row["policy_version"] = policy_version
        prev_retain_until: datetime | None
        if end is None:
            seq, prev_hash, prev_retain_until = 1, GENESIS, None
            ledger_at = now
        else:
            seq, prev_hash, prev_retain_until = end[0] + 1, end[1], end[2]
            ledger_at = max(now, end[3])
        later = kept_until.get((ledger_at, period))
        if later is None:
            later = kept_until[(ledger_at, period)] = ledger_at + period
        retain_until = later if end is None else max(later, end[2])
        row["ledger_at"] = ledger_at
        row["retention_class"] = klass
        row["retain_until"] = retain_until
        row["prev_retain_until"] = prev_retain_until
        row["chain_seq"] = seq
        row["prev_hash"] = prev_hash
        row["row_hash"] = hashed = hashlib.sha256(_canonical(row, table, millis)).hexdigest()
        ends[key] = (seq, hashed, retain_until, ledger_at)
    return {key: Head(*end) for key, end in ends.items()}
