"""Hot and cold tiers of the ledger, and the one place that says where a table's rows are.

Embedded ClickHouse (chDB) keeps three databases (`<db>` is `Settings.clickhouse_database`):

`<db>`
    The hot MergeTree tables the sink writes (see `sinks.ledger.ddl`).
`<db>_cold`
    One `File(Parquet)` table per ledger table, reading
    `<data_dir>/cold/<table>/tenant=<tenant>/*.parquet`: the rows `shipledger archive` moved
    out of the hot table (see `sinks.archive`).
`<db>_query`
    Views named like the ledger tables, each `hot UNION ALL cold`, plus the ledger's views
    (`deployments`, ...) built over those: `shipledger query` runs here, so
    `SELECT ... FROM deployment_events` sees hot and cold rows alike.

With a ClickHouse server the query database is the ledger database itself: cold parts live
on a cold volume (`TTL ... TO VOLUME 'cold'`, see `sinks.archive.server_tiering_sql`) and
queries see them without a union.

File engine behaviour behind this design (measured, chDB 4.4 / ClickHouse 26.9):

- The glob is resolved when the table is created: files added later are invisible and a
  removed file makes reads fail. `refresh_cold` recreates the tables after every change.
- Hive partitioning is decided at creation too: with it on, the `tenant=<dir>` path segment
  overrides the file's own `tenant` column (a percent-encoded name would come back encoded),
  so the tables are created with `use_hive_partitioning = 0`.
- `CREATE OR REPLACE` / `DROP` of a File table with an explicit path leave the files alone.
- `readonly = 1` refuses the `file()` table function but not File tables: read-only queries
  reach cold rows through these tables only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote

from shipledger.sinks.ledger import ddl

if TYPE_CHECKING:
    from shipledger.sinks.ledger.store import LedgerStore

#: Where a row of the embedded ledger lives: the hot MergeTree table or a cold Parquet file.
Tier = Literal["hot", "cold"]

COLD_SUFFIX = "_cold"
QUERY_SUFFIX = "_query"
#: Longest file name (bytes) of Linux file systems (ext4, xfs, tmpfs: NAME_MAX).
_NAME_MAX = 255
#: Settings the cold File tables are created with (decided at creation, see above).
_COLD_CREATE_SETTINGS = {"use_hive_partitioning": 0}


def cold_database(database: str) -> str:
    """The database of the cold File tables."""
    return database + COLD_SUFFIX


def query_database(store: LedgerStore) -> str:
    """The database read-only queries run in: hot+cold views (embedded) or the ledger itself."""
    return store.database + QUERY_SUFFIX if store.cold_root is not None else store.database


def ledger_databases(store: LedgerStore) -> list[str]:
    """Every database holding ledger rows or views over them."""
    if store.cold_root is None:
        return [store.database]
    return [store.database, cold_database(store.database), query_database(store)]


def ledger_source(store: LedgerStore, table: str) -> str:
    """The FROM source holding every row of ledger `table`, hot and cold (quoted, qualified).

    The one function for code that must see a table's whole history (queries, `audit
    verify`). Needs the query database: `LedgerStore.ensure_schema()` (or `ensure_tiers`).
    """
    if table not in ddl.tables():
        raise ValueError(f"table: {table!r} is not a ledger table ({', '.join(ddl.tables())})")
    return ddl.qualified(query_database(store), table)


def tier_sources(store: LedgerStore, table: str) -> list[tuple[Tier | None, str]]:
    """The FROM sources of ledger `table`, one per tier, hot first: (tier, quoted source).

    For reads that must say where a row was found (`sinks.ledger.reader`). A ClickHouse
    server keeps its cold volume inside the table: one source, tier None.
    """
    if table not in ddl.tables():
        raise ValueError(f"table: {table!r} is not a ledger table ({', '.join(ddl.tables())})")
    if store.cold_root is None:
        return [(None, ddl.qualified(store.database, table))]
    return [
        ("hot", ddl.qualified(store.database, table)),
        ("cold", ddl.qualified(cold_database(store.database), table)),
    ]


def tenant_dir(cold_root: Path, table: str, tenant: str) -> Path:
    """`<cold_root>/<table>/tenant=<tenant>`, the tenant percent-encoded (any name is safe).

    A name whose encoding is longer than a file name may be (`_NAME_MAX` bytes: 100
    characters of non-ASCII text or punctuation reach it) is named by its SHA-256 instead,
    after `%~`, which percent-encoding never writes: no other tenant's directory is the same.
    """
    name = f"tenant={quote(tenant, safe='')}"
    if len(name) > _NAME_MAX:
        name = f"tenant=%~{hashlib.sha256(tenant.encode('utf-8')).hexdigest()}"
    return cold_root / table / name


def months(start: datetime, end: datetime) -> set[int]:
    """Every month (YYYYMM, as `toYYYYMM` and the cold files' names say) from `start` to
    `end`, both included."""
    out: set[int] = set()
    year, month = start.astimezone(UTC).year, start.astimezone(UTC).month
    last = (end.astimezone(UTC).year, end.astimezone(UTC).month)
    while (year, month) <= last:
        out.add(year * 100 + month)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def cold_files(
    cold_root: Path, table: str, tenants: Iterable[str], in_months: set[int] | None = None
) -> list[Path]:
    """The cold Parquet files of `table` holding rows of `tenants` (only of `in_months`, if
    given): `<tenant dir>/<YYYYMM>-<run>.parquet`, named by `sinks.ledger.archive`."""
    found: list[Path] = []
    for tenant in sorted(set(tenants)):
        for path in sorted(tenant_dir(cold_root, table, tenant).glob("*.parquet")):
            month = path.name.partition("-")[0]
            if in_months is None or (month.isdigit() and int(month) in in_months):
                found.append(path)
    return found


def cold_glob(cold_root: Path, table: str) -> str:
    """The glob of a table's cold Parquet files (temporary and pending files never match)."""
    return f"{cold_root / table}/tenant=*/*.parquet"


def hot_columns(store: LedgerStore, table: str) -> list[tuple[str, str]]:
    """(name, type) of the stored columns of hot `table`, in order (ALIAS columns excluded).

    Read from ClickHouse rather than `ddl` so columns added by a newer schema are carried.
    """
    _, rows = store.query(
        "SELECT name, type FROM system.columns WHERE database = %(db)s AND table = %(t)s "
        "AND default_kind NOT IN ('ALIAS', 'EPHEMERAL') ORDER BY position",
        {"db": store.database, "t": table},
    )
    return [(str(name), str(type_)) for name, type_ in rows]


def column_list(columns: list[tuple[str, str]]) -> str:
    """`a`, `b`, ... for a SELECT."""
    return ", ".join(ddl.quote_ident(name) for name, _ in columns)


def cold_structure(store: LedgerStore, table: str) -> str:
    """The column structure cold rows of `table` are read with (`name Type, ...`): the hot
    table's, so a row reads the same from either tier (and hashes the same)."""
    return ", ".join(
        f"{ddl.quote_ident(name)} {type_}" for name, type_ in hot_columns(store, table)
    )


def refresh_cold(store: LedgerStore) -> None:
    """(Re)create the cold File tables so they see exactly the Parquet files present now."""
    if store.cold_root is None:
        return
    cold_db = cold_database(store.database)
    for table in ddl.tables():
        (store.cold_root / table).mkdir(parents=True, exist_ok=True)
        structure = cold_structure(store, table)
        store.command(
            f"CREATE OR REPLACE TABLE {ddl.qualified(cold_db, table)} ({structure}) "
            f"ENGINE = File(Parquet, {ddl.quote_str(cold_glob(store.cold_root, table))})",
            settings=_COLD_CREATE_SETTINGS,
        )


def ensure_tiers(store: LedgerStore) -> None:
    """Create (or rebuild) the cold tables and the query database's views. Embedded only.

    The query database holds only derived views, so it is rebuilt from scratch: a view
    whose definition changed (new columns, a new ledger view) is never left stale.
    """
    if store.cold_root is None:
        return
    cold_db = cold_database(store.database)
    query_db = query_database(store)
    store.command(f"CREATE DATABASE IF NOT EXISTS {ddl.quote_ident(cold_db)}")
    refresh_cold(store)
    store.command(f"DROP DATABASE IF EXISTS {ddl.quote_ident(query_db)} SYNC")
    store.command(f"CREATE DATABASE {ddl.quote_ident(query_db)}")
    for table in ddl.tables():
        columns = column_list(hot_columns(store, table))
        store.command(
            f"CREATE VIEW {ddl.qualified(query_db, table)} AS "  # noqa: S608
            f"SELECT {columns} FROM {ddl.qualified(store.database, table)} "
            f"UNION ALL SELECT {columns} FROM {ddl.qualified(cold_db, table)}"
        )
    for statement in ddl.view_statements(query_db):
        store.command(statement)
