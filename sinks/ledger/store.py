"""`LedgerStore`: the one ClickHouse client of a process, embedded (chDB) or a server.

One code path for both: `clickhouse_connect.get_client(dsn=...)` with `chdb:///<dir>` runs the
real ClickHouse engine in-process; `http(s)://user:pw@host:8123` talks to a server or cluster.

chDB constraints (measured with chdb 4.4 / engine 26.9 through clickhouse-connect 1.12):

- One engine *path* per process at a time: opening a second data dir while a client on the
  first is open raises `ProgrammingError` ("EmbeddedServer already initialized with path ...").
  Once every client on it is closed, another path can be opened. So close the store (it is a
  context manager) before opening one elsewhere; tests close theirs at teardown.
- One *process* per data dir, even read-only (`Cannot lock file .../status`): a second
  `shipledger sink` or an analyst's `chdb` session cannot open the data dir of a running
  `shipledger up`. Queries must go through the owning process (`LedgerStore.query`), or use a
  ClickHouse server. chDB's error names no process: `open` adds the owner's pid from the
  data dir's `status` file (`chdb_owner`).
- A client must not be used from two threads at once: every call here holds one lock, so the
  sink thread and an API thread can share a store.
- One insert costs ~13 ms whatever its size up to ~1k rows: callers batch.
"""

from __future__ import annotations

import functools
import operator
import os
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from threading import Lock
from typing import Any, Protocol
from urllib.parse import urlparse

import clickhouse_connect

from shipledger.closing import Closing
from shipledger.privacy import PrivacyKey, PrivacyKeyError
from shipledger.settings import Settings, chdb_path
from shipledger.sinks.ledger import ddl, tiers
from shipledger.sinks.ledger.chain import ChainKey, Head, epoch_ms
from shipledger.sinks.ledger.cluster import on_cluster
from shipledger.sinks.ledger.migrate import MigrationError, migrate
from shipledger.sinks.rows import RowKey

_HEAD_COLUMNS = {
    "table": "LowCardinality(String)",
    "tenant": "LowCardinality(String)",
    "retention_class": "LowCardinality(String)",
    "chain_seq": "UInt64",
    "row_hash": "String",
    "retain_until": ddl.DATETIME_MS,
    "at": ddl.DATETIME_MS,
    "chain_lane": "LowCardinality(String)",
}
#: ids per existence query.
_IDS_PER_QUERY = 5000
_tenant = operator.itemgetter(0)
#: A backfill may span many months: never refuse an insert for touching many partitions.
_INSERT_SETTINGS = {"max_partitions_per_insert_block": 0}


#: What clickhouse-connect escapes in a bound string (`binding.must_escape`), as one C-speed
#: translation: its per-character generator cost about 20 µs per (tenant, id) pair of an
#: id check, as much as the rest of the check (measured, `shipledger import`).
_ESCAPES = str.maketrans({c: "\\" + c for c in ("\\", "'", "`", "\t", "\n")})
#: What `bound_strings` joins the values with, when none holds it (nor anything to escape).
_SEPARATOR = "\x1f"
_QUOTED_SEPARATOR = "', '"


class BoundText:
    """A query parameter already in ClickHouse's text form: clickhouse-connect binds an
    object of a type it does not know as `str(value)`."""

    def __init__(self, text: str) -> None:
        self._text = text

    def __str__(self) -> str:
        return self._text


def bound_keys(keys: Iterable[RowKey]) -> BoundText:
    """`keys` as an `Array(Tuple(String, String))` parameter: the text clickhouse-connect
    would make of the list of tuples, made in one pass."""
    pairs = (f"({_quoted(a)}, {_quoted(b)})" for a, b in keys)
    return BoundText(f"[{', '.join(pairs)}]")


def bound_strings(values: Iterable[str]) -> BoundText:
    """`values` as an `Array(String)` parameter: the text clickhouse-connect would make of
    the list, made in one pass."""
    values = list(values)
    # Ids and tenants seldom hold a character to escape: then the whole text is made by a
    # few passes in C over all of them at once (~1 µs an id less than quoting each, measured).
    joined = _SEPARATOR.join(values)
    plain = len(joined.translate(_ESCAPES)) == len(joined)  # an escape adds a character
    if values and plain and joined.count(_SEPARATOR) == len(values) - 1:
        return BoundText(f"['{joined.replace(_SEPARATOR, _QUOTED_SEPARATOR)}']")
    return BoundText(f"[{', '.join(map(_quoted, values))}]")


def _quoted(value: str) -> str:
    """`value` as a ClickHouse string literal, escaped as clickhouse-connect escapes it."""
    return f"'{value.translate(_ESCAPES)}'"


@functools.cache
def _insert_plan(spec: ddl.TableSpec) -> tuple[Callable[[Mapping[str, Any]], Any], list[int]]:
    """How `LedgerStore.insert` lays out `spec`'s rows: a row's values in column order, and
    the positions of its `DateTime64(3)` columns, sent as the epoch milliseconds they store
    (exact, and cheaper than clickhouse-connect's conversion of each datetime: ~3 µs an
    imported event)."""
    millis = [i for i, column in enumerate(spec.columns) if column.holds_millis]
    return operator.itemgetter(*spec.column_names), millis


class StoreError(RuntimeError):
    """The ClickHouse store could not be opened or its schema does not match ours."""


@dataclass(frozen=True)
class TimeWindow:
    """Inclusive range of a time column: narrows an id lookup to the partitions it can be in."""

    column: str
    start: datetime
    end: datetime

    @classmethod
    def of(cls, column: str, values: Iterable[datetime]) -> TimeWindow | None:
        """The window spanning `values`, or None when there are none."""
        times = list(values)
        if not times:
            return None
        return cls(column, min(times), max(times))


def _epoch_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


class StoredIds(Protocol):
    """Which rows a ledger holds already: `LedgerStore` answers, the writer's dedup asks."""

    def existing_ids(
        self, table: str, keys: Iterable[RowKey], *, window: TimeWindow | None = None
    ) -> set[RowKey]:
        """Which (tenant, id) pairs of `keys` are stored in `table` (ids in its id column), hot
        or cold (optionally only within `window`)."""
        ...


class LedgerStore(Closing):
    """The ledger's ClickHouse client (thread-safe by one lock). Build it with `open`."""

    def __init__(
        self,
        client: Any,
        database: str,
        url: str,
        cold_root: Path | None = None,
        cluster: str | None = None,
    ) -> None:
        self._client = client
        self._lock = Lock()
        self.database = database
        self.url = url
        #: Where cold Parquet files live (embedded chDB only; None for a server).
        self.cold_root = cold_root
        #: The ClickHouse cluster the ledger lives on (SHIPLEDGER_CLICKHOUSE_CLUSTER), if any.
        self.cluster = cluster
        #: The key personal fields are pseudonymised with (`sinks.ledger.pseudonyms`); None:
        #: privacy is off, names are stored and shown as sent.
        self.privacy_key: PrivacyKey | None = None
        self._closed = False

    @classmethod
    def open(cls, settings: Settings, *, existing: bool = False) -> LedgerStore:
        """Connect to `settings.resolved_clickhouse_url`, the ledger of the settings' region
        (`Settings.region`, docs/sovereignty.md); creates the chDB data dir's parent.

        The database is selected for `query` if it exists; `ensure_schema` creates it.
        `existing`: readers' StoreError for a chDB data dir that does not exist yet, rather
        than an empty ledger created where a reader looked by mistake.
        """
        url = settings.resolved_clickhouse_url
        path = chdb_path(url)
        if path is not None and existing and not path.exists():
            raise StoreError(f"no ledger in {path} yet: run `shipledger up` first")
        if path is not None and settings.clickhouse_cluster:
            raise StoreError(
                f"SHIPLEDGER_CLICKHOUSE_CLUSTER={settings.clickhouse_cluster} needs a ClickHouse "
                "server: set SHIPLEDGER_CLICKHOUSE_URL to one of the cluster's nodes"
            )
        if path is not None:
            # Owner-only: the data dir holds every tenant's rows and the API's secrets.
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            client = clickhouse_connect.get_client(dsn=url, tz_mode="aware")
        except Exception as exc:
            hint = ""
            if path is not None:
                owner = chdb_owner(path)
                if owner is not None or "lock" in str(exc).lower():
                    who = f"{owner} " if owner is not None else "another process "
                    hint = f" ({who}owns this chDB data dir: stop it or use a server URL)"
            raise StoreError(f"cannot open ClickHouse at {redact_url(url)}: {exc}{hint}") from exc
        cold_root = settings.ledger_cold_dir.resolve() if path is not None else None
        store = cls(client, settings.ledger_database, url, cold_root, settings.clickhouse_cluster)
        try:
            store.privacy_key = PrivacyKey.from_settings(settings)
        except PrivacyKeyError as exc:
            client.close()
            raise StoreError(str(exc)) from exc
        if store.database_exists():
            client.database = store.database
        return store

    # --- schema ----------------------------------------------------------------------
    def ensure_schema(self) -> list[str]:
        """Create the database and apply every pending migration (`sinks.migrate`); the file
        names applied. Then check every column the sink writes exists with its type, so a
        schema change committed without its migration fails here, not at the first insert.
        """
        self.select_database(self.database)
        try:
            done = migrate(self, cluster=self.cluster)
        except MigrationError as exc:
            raise StoreError(str(exc)) from exc
        self._check_columns()
        tiers.ensure_tiers(self)
        return [m.filename for m in done]

    def select_database(self, database: str) -> None:
        """Create `database` if missing; every later statement runs in it."""
        with self._lock:
            on = f" {on_cluster(self.cluster)}" if self.cluster else ""
            self._client.command(f"CREATE DATABASE IF NOT EXISTS {ddl.quote_ident(database)}{on}")
            self._client.database = database
        self.database = database

    def _check_columns(self) -> None:
        _, rows = self.query(
            "SELECT table, name, type FROM system.columns WHERE database = %(db)s",
            {"db": self.database},
        )
        have = {(str(t), str(n)): str(ty) for t, n, ty in rows}
        for spec in ddl.tables().values():
            for column in spec.columns:
                found = have.get((spec.name, column.name))
                if found is None or _normalize_type(found) != _normalize_type(column.type):
                    raise StoreError(
                        f"{spec.name}.{column.name} is {found or 'missing'} in ClickHouse, the "
                        f"code wants {column.type}: a schema change without its migration "
                        "(shipledger migrate --new NAME)"
                    )

    def database_exists(self) -> bool:
        """Whether the ledger database exists (a fresh data dir has none until `up`)."""
        with self._lock:
            result = self._client.query(
                "SELECT count() FROM system.databases WHERE name = %(db)s",
                parameters={"db": self.database},
            )
        return bool(result.result_rows[0][0])

    # --- writes and reads --------------------------------------------------------------
    def insert(self, table: str, rows: Sequence[dict[str, Any]]) -> int:
        """Insert rows (dicts with every column of the ledger table) in one block."""
        if not rows:
            return 0
        spec = ddl.tables()[table]
        values, millis = _insert_plan(spec)
        try:
            # Row tuples transposed in C: half the CPU of a column-by-column gather (measured).
            columns = list(map(list, zip(*map(values, rows), strict=True)))
        except KeyError as exc:
            raise ValueError(f"{table}: a row lacks column {exc}") from None
        for index in millis:
            # A block's rows share most of their times (when received, stored, kept until):
            # each distinct one converted once (~1.5 µs an imported event less, measured).
            column = columns[index]
            known = {at: None if at is None else epoch_ms(at) for at in set(column)}
            columns[index] = list(map(known.__getitem__, column))
        self.insert_columns(table, spec.column_names, spec.column_types, columns)
        return len(rows)

    def insert_columns(
        self, table: str, names: Sequence[str], types: Sequence[str], columns: Sequence[list[Any]]
    ) -> None:
        """Insert one block, column-oriented (`names` and their ClickHouse `types`)."""
        with self._lock:
            self._client.insert(
                table,
                columns,
                database=self.database,
                column_names=list(names),
                column_type_names=list(types),
                column_oriented=True,
                settings=_INSERT_SETTINGS,
            )

    def insert_derived(self, table: str, rows: Sequence[Mapping[str, Any]]) -> int:
        """Insert rows into a derived table (`ddl.AGGREGATE_TABLES`: not hash-chained, written
        by the job that computes it), one block; every row names the same columns."""
        if table not in ddl.AGGREGATE_TABLES:
            raise ValueError(f"table: {table!r} is not a derived table")
        if not rows:
            return 0
        names = list(rows[0])
        with self._lock:
            self._client.insert(
                table,
                [[row[name] for name in names] for row in rows],
                database=self.database,
                column_names=names,
                settings=_INSERT_SETTINGS,
            )
        return len(rows)

    def existing_ids(
        self, table: str, keys: Iterable[RowKey], *, window: TimeWindow | None = None
    ) -> set[RowKey]:
        """Which (tenant, id) pairs of `keys` are already stored in `table` (ids in its id
        column), hot or cold (optionally only within `window`): a row `shipledger archive`
        moved is still stored.
        Readers outside the ledger's writer ask `sinks.ledger.reader.LedgerReader`."""
        asked = set(keys)
        if not asked:
            return set()
        # In their tenants' order (so each query asks about few tenants' partitions), not
        # sorted by id too: comparing the ids cost ~0.6 µs an id (measured), for nothing.
        wanted = sorted(asked, key=_tenant)
        column = ddl.quote_ident(ddl.tables()[table].id_column)
        # Identifiers are checked by quote_ident; values are bound server-side (a 5000-id
        # literal list costs ClickHouse ~20 ms more to parse; large params go form-encoded).
        # The ids are looked up as plain strings, among the rows of the keys' tenants (the
        # partition key's first column), and the pairs matched here: ClickHouse parses and
        # matches an Array(Tuple(String, String)) of (tenant, id) at about twice the CPU
        # (measured: 29 -> 11 µs an imported event, three tables).
        where = f"tenant IN {{tenants:Array(String)}} AND {column} IN {{ids:Array(String)}}"
        params: dict[str, Any] = {}
        if window is not None:
            time_column = ddl.quote_ident(window.column)
            where += (
                f" AND {time_column} BETWEEN fromUnixTimestamp64Milli({{lo:Int64}}, 'UTC')"
                " AND fromUnixTimestamp64Milli({hi:Int64}, 'UTC')"
            )
            params = {"lo": _epoch_ms(window.start), "hi": _epoch_ms(window.end)}
        # (source, its own condition): the hot table, then the cold files that can hold them.
        sources = [(ddl.qualified(self.database, table), "")]
        if self.cold_root is not None:
            # Only the cold files of these tenants (and months) are read: a lookup costs
            # nothing while they have none, and never scans every file of the table (~0.5 ms
            # a file, measured).
            paths = tiers.cold_files(
                self.cold_root,
                table,
                {tenant for tenant, _ in wanted},
                None if window is None else tiers.months(window.start, window.end),
            )
            if paths:
                cold = ddl.qualified(tiers.cold_database(self.database), table)
                sources.append((cold, "_path IN {paths:Array(String)} AND "))
                params["paths"] = [str(p) for p in paths]
        found: set[RowKey] = set()
        for start in range(0, len(wanted), _IDS_PER_QUERY):
            chunk = wanted[start : start + _IDS_PER_QUERY]
            bound = {
                "tenants": bound_strings(sorted({tenant for tenant, _ in chunk})),
                "ids": bound_strings(key for _, key in chunk),
            }
            for source, prune in sources:
                sql = f"SELECT DISTINCT tenant, {column} FROM {source} WHERE {prune}{where}"  # noqa: S608
                with self._lock:
                    result = self._client.query(sql, parameters={**params, **bound})
                # An id of the chunk stored under another of its tenants is not a match.
                found.update(
                    pair
                    for row in result.result_rows
                    if (pair := (str(row[0]), str(row[1]))) in asked
                )
        return found

    def source(self, table: str) -> str:
        """The FROM source holding every row of ledger table `table`. Every reader of whole
        tables (audit, exports) goes through here: hot and cold rows alike
        (`sinks.ledger.tiers`)."""
        return tiers.ledger_source(self, table)

    _HEADS_SQL = (
        "SELECT tenant, retention_class, chain_lane, max(chain_seq), argMax(row_hash, chain_seq), "
        "argMax(retain_until, chain_seq), argMax({at}, chain_seq) FROM {source} "
        "WHERE {where} GROUP BY tenant, retention_class, chain_lane"
    )

    def _heads(
        self, table: str, at: str, source: str, where: str, lanes: Collection[str] | None
    ) -> dict[ChainKey, Head]:
        params: dict[str, Any] = {"t": table}
        if lanes is not None:
            if not lanes:
                return {}
            where += " AND chain_lane IN %(lanes)s"
            params["lanes"] = tuple(sorted(lanes))
        sql = self._HEADS_SQL.format(at=at, source=source, where=where)
        return {
            (table, str(tenant), str(klass), str(lane)): Head(
                int(seq), str(row_hash), retain_until, last_at
            )
            for tenant, klass, lane, seq, row_hash, retain_until, last_at in self.query(
                sql, params
            )[1]
        }

    def recorded_heads(
        self, table: str, lanes: Collection[str] | None = None
    ) -> dict[ChainKey, Head]:
        """The last head recorded in chain_heads for every chain of `table` (of `lanes`)."""
        source = ddl.qualified(self.database, ddl.CHAIN_HEADS)
        return self._heads(table, "at", source, "table = %(t)s", lanes)

    def load_heads(self, table: str, lanes: Collection[str] | None = None) -> dict[ChainKey, Head]:
        """The head of every chain of `table` (of `lanes`): the highest of the rows stored and
        the heads recorded in chain_heads (a head whose rows have all expired continues the
        chain; rows stored by a flush that died before recording them are adopted)."""
        heads = self._heads(table, "ledger_at", self.source(table), "chain_seq > 0", lanes)
        for key, head in self.recorded_heads(table, lanes).items():
            if key not in heads or heads[key].seq < head.seq:
                heads[key] = head
        return heads

    def append_heads(self, heads: Mapping[ChainKey, Head]) -> None:
        """Append chain heads to chain_heads (after the rows they describe are stored)."""
        if not heads:
            return
        now = datetime.now(UTC)
        items = sorted(heads.items())
        columns = [
            [k[0] for k, _ in items],
            [k[1] for k, _ in items],
            [k[2] for k, _ in items],
            [h.seq for _, h in items],
            [h.row_hash for _, h in items],
            [h.retain_until for _, h in items],
            [now] * len(items),
            [k[3] for k, _ in items],
        ]
        with self._lock:
            self._client.insert(
                ddl.CHAIN_HEADS,
                columns,
                database=self.database,
                column_names=list(_HEAD_COLUMNS),
                column_type_names=list(_HEAD_COLUMNS.values()),
                column_oriented=True,
            )

    def query(
        self,
        sql: str,
        parameters: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run a query; returns (column names, rows). Timestamps come back UTC-aware.

        `parameters` use clickhouse-connect binding: `%(name)s` (client side) or
        `{name:Type}` (server side).
        """
        with self._lock:
            result = self._client.query(sql, parameters=parameters, settings=settings)
        return list(result.column_names), [tuple(row) for row in result.result_rows]

    def stream_columns(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> Iterator[Sequence[Sequence[Any]]]:
        """Run a query and yield its result block by block, each a list of columns (for
        reading whole tables without holding them in memory). Named tuples come back as
        tuples, the form the sink inserts (and hashes) them in. Holds the store's lock until
        the stream is exhausted or closed."""
        with self._lock:
            stream = self._client.query_column_block_stream(
                sql, parameters=parameters, query_formats={"Tuple": "tuple"}
            )
            with stream:
                yield from stream

    def command(
        self,
        sql: str,
        parameters: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        """Run a statement that returns no rows (DDL, `INSERT INTO FUNCTION`, `DELETE`)."""
        with self._lock:
            self._client.command(sql, parameters=parameters, settings=settings)

    @contextmanager
    def reader(self, database: str, settings: dict[str, Any]) -> Iterator[Any]:
        """A separate clickhouse-connect client on the same ClickHouse, closed on exit.

        `settings` become session settings in the order given (chDB: `SET` on its own
        handle; a server: parameters of every request), so `readonly` given last locks the
        ones before it. chDB serves several handles on one engine path.
        """
        client = clickhouse_connect.get_client(
            dsn=self.url, tz_mode="aware", database=database, settings=settings
        )
        try:
            yield client
        finally:
            client.close()

    def count(self, table: str) -> int:
        """Rows in a ledger table (or view)."""
        source = ddl.qualified(self.database, table)  # checked identifiers
        _, rows = self.query(f"SELECT count() FROM {source}")  # noqa: S608
        return int(rows[0][0])

    def disk_bytes(self, table: str) -> int:
        """Compressed bytes on disk of the table's active parts."""
        _, rows = self.query(
            "SELECT sum(bytes_on_disk) FROM system.parts "
            "WHERE active AND database = %(db)s AND table = %(t)s",
            {"db": self.database, "t": table},
        )
        return int(rows[0][0] or 0)

    # --- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        """Close the client (releases the chDB engine path). Idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._client.close()


def _normalize_type(type_name: str) -> str:
    return type_name.replace(" ", "")


def chdb_owner(path: Path) -> str | None:
    """The live process that holds chDB data dir `path` (`pid N, started at T`, from the
    `status` file ClickHouse writes and locks while it runs, and leaves behind when killed),
    or None. chDB's own error for a held data dir names no process."""
    try:
        fields = dict(
            line.partition(": ")[::2]
            for line in (path / "status").read_text(encoding="utf-8").splitlines()
        )
        pid = int(fields["PID"])
    except (OSError, ValueError, KeyError):
        return None
    try:
        os.kill(pid, 0)  # signal 0: is it alive (a killed owner leaves its status file)
    except PermissionError:
        pass  # alive, another user's
    except OSError:
        return None
    return f"pid {pid}, started at {fields.get('Started at', '?')},"


def redact_url(url: str) -> str:
    """`url` with its password, if any, replaced by `***` (for messages and logs)."""
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url
