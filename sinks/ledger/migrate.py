"""Numbered, recorded schema migrations: the only way the ledger's DDL changes.

`sinks/ledger/migrations/NNNN_name.sql` (package data) are applied in order by `migrate` (which
`LedgerStore.ensure_schema` calls) and recorded in `schema_migrations` (version, name, sha256
checksum, applied_at). An applied migration whose file has changed since is an error naming
it: history is never rewritten, a fix is a new migration.

`sinks.ledger.ddl` declares the DESIRED schema. `scratch_schemas` builds both in a throwaway
chDB (the desired DDL in one database, every migration in another) and `snapshot` reads back what
ClickHouse made of each (columns with types, comments and positions; engine with partition,
sort key and TTL; indexes; comments; views): they must be equal (`compare`, a test), and
`next_migration` writes the SQL from one to the other (`shipledger migrate --new NAME`).

The first file may be a baseline (`shipledger migrate --squash`: 0023_baseline.sql): the desired
schema written from an empty database in place of the files before it, keeping the last one's
version, its header naming each replaced file with its checksum (`-- replaces NNNN_name.sql
sha256 HEX`). A new database applies and records the baseline. One that applied every replaced
file with those checksums is at the baseline (its rows are kept; `replaced_history`); one that
applied only some is refused, naming where it is, and a replaced file recorded with another
checksum is the same error as any changed file. Squashing a baseline again keeps it in the new
header (`-- replaces NNNN_baseline.sql`, standing for 0001..NNNN) beside the files it replaced,
so a ledger that applied that earlier baseline and the files after it is at the new one too.

Migration files use unqualified names: they run with the target database selected. Statements
are separated by a `;` at the end of a line; `--` comments are allowed.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Protocol

from shipledger.logging import get_logger
from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.cluster import Cluster, created_tables

log = get_logger("migrate")

MIGRATIONS_TABLE = "schema_migrations"
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_STATEMENT_END = re.compile(r";[ \t]*(?:\n|$)")
_REPLACES = re.compile(
    r"^-- replaces (\d{4})_([a-z0-9_]+)\.sql sha256 ([0-9a-f]{64})$", re.MULTILINE
)
BASELINE_NAME = "baseline"
DESIRED_DB = "shipledger_desired"
MIGRATED_DB = "shipledger_migrated"


class MigrationError(RuntimeError):
    """Migrations that cannot be applied: changed after applying, missing, misnumbered, or a
    history a baseline cannot take over."""


class SqlRunner(Protocol):
    """What migrations need from a store (`LedgerStore`)."""

    database: str

    def command(self, sql: str) -> None:
        """Run a statement in the selected database."""
        ...

    def query(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run a query: (column names, rows)."""
        ...

    def select_database(self, database: str) -> None:
        """Create `database` if missing and run everything after in it."""
        ...


@dataclass(frozen=True)
class Replaced:
    """A migration file a baseline stands for, as ledgers that applied it recorded it."""

    version: int
    name: str
    checksum: str

    @property
    def filename(self) -> str:
        """`NNNN_name.sql`."""
        return f"{self.version:04d}_{self.name}.sql"


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    sql: str

    @property
    def filename(self) -> str:
        """`NNNN_name.sql`."""
        return f"{self.version:04d}_{self.name}.sql"

    @property
    def checksum(self) -> str:
        """sha256 of the file's text."""
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def replaces(self) -> tuple[Replaced, ...]:
        """The files this baseline stands for (its header's `-- replaces` lines); empty for an
        ordinary migration."""
        header = self.sql.split("\n\n", 1)[0]
        return tuple(Replaced(int(v), n, c) for v, n, c in _REPLACES.findall(header))

    def statements(self) -> list[str]:
        """The file's statements, comments-only chunks dropped."""
        chunks = (c.strip() for c in _STATEMENT_END.split(self.sql))
        return [c for c in chunks if _strip_comments(c)]


@dataclass(frozen=True)
class Applied:
    """A row of schema_migrations."""

    version: int
    name: str
    checksum: str
    applied_at: datetime


def _strip_comments(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))


def migrations_dir() -> Traversable:
    """The packaged migrations directory."""
    return resources.files(__package__).joinpath("migrations")


def load_migrations(directory: Traversable | Path | None = None) -> list[Migration]:
    """Every migration file, in version order; versions must run 1, 2, 3 ... without gaps, or
    from a baseline's version on (the baseline replaces 1 .. its version)."""
    folder = directory if directory is not None else migrations_dir()
    found: list[Migration] = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE.match(entry.name)
        if match is None:
            raise MigrationError(f"{entry.name}: migration files are named NNNN_lower_name.sql")
        found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    first = found[0].version if found and found[0].replaces else 1
    for expected, migration in enumerate(found, start=first):
        if migration.version != expected:
            raise MigrationError(
                f"{migration.filename}: expected version {expected:04d} (no gaps or duplicates)"
            )
        if migration.replaces and expected != first:
            raise MigrationError(
                f"{migration.filename}: only the first migration can be a baseline"
            )
    if found and found[0].replaces:
        baseline = found[0]
        files = [r.version for r in baseline.replaces if r.name != BASELINE_NAME]
        earlier = [r.version for r in baseline.replaces if r.name == BASELINE_NAME]
        if files != list(range(1, baseline.version + 1)) or not all(
            v < baseline.version for v in earlier
        ):
            raise MigrationError(
                f"{baseline.filename}: a baseline replaces versions 0001..{baseline.version:04d}, "
                "each once, in order (and earlier baselines)"
            )
    return found


def _ensure_migrations_table(store: SqlRunner, cluster: Cluster | None) -> None:
    create = (
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (\n"
        "    version UInt32, name String, checksum String,\n"
        f"    applied_at {ddl.DATETIME_MS} DEFAULT now64(3, 'UTC')\n"
        ") ENGINE = MergeTree ORDER BY version\n"
        "COMMENT 'Schema migrations applied to this database (shipledger migrate).'"
    )
    store.command(create if cluster is None else cluster.everywhere(create))


def applied_migrations(store: SqlRunner) -> dict[int, Applied]:
    """schema_migrations by version (empty when the table does not exist yet)."""
    _, exists = store.query(
        "SELECT count() FROM system.tables WHERE database = %(db)s AND name = %(t)s",
        {"db": store.database, "t": MIGRATIONS_TABLE},
    )
    if not exists[0][0]:
        return {}
    _, rows = store.query(
        f"SELECT version, name, checksum, applied_at FROM {MIGRATIONS_TABLE} ORDER BY version"  # noqa: S608
    )
    return {int(v): Applied(int(v), str(n), str(c), a) for v, n, c, a in rows}


def check_history(migrations: Sequence[Migration], applied: dict[int, Applied]) -> None:
    """Raise MigrationError when an applied migration's file changed or is unknown here, or when
    the database applied only some of the files a baseline replaces."""
    replaced = replaced_history(migrations, applied)
    known = {m.version: m for m in migrations}
    for version, row in sorted(applied.items()):
        if version in replaced:
            continue
        _same_file(
            row,
            known.get(version),
            "now): restore the file and put the change in a new migration",
        )


def _same_file(row: Applied, file: Migration | Replaced | None, checksum_is: str) -> None:
    """Raise MigrationError unless `row` recorded `file` (None: no file of its version here) as
    it is; `checksum_is` ends the message: where `file`'s checksum comes from, and what to do."""
    if file is None:
        raise MigrationError(
            f"migration {row.version:04d}_{row.name} is applied to this database but unknown to "
            "this shipledger: upgrade shipledger"
        )
    if file.checksum != row.checksum:
        raise MigrationError(
            f"migration {file.filename} was changed after it was applied (checksum "
            f"{row.checksum[:12]} recorded, {file.checksum[:12]} {checksum_is}"
        )


def replaced_history(
    migrations: Sequence[Migration], applied: dict[int, Applied]
) -> dict[int, Applied]:
    """The applied rows of the files the first migration, a baseline, replaces: the database
    applied them one by one (or an earlier baseline and the files after it), so it is at the
    baseline. Empty when there is no baseline, or the database applied the baseline itself, or
    nothing yet.

    Raises MigrationError for a replaced file recorded with another checksum than the
    baseline's header gives (the ledger ran another file: history is never rewritten) and for
    a database that applied only some of them (the baseline cannot take it from there).
    """
    baseline = migrations[0] if migrations and migrations[0].replaces else None
    if baseline is None:
        return {}
    rows = {v: row for v, row in applied.items() if v <= baseline.version}
    own = rows.get(baseline.version)
    if not rows or (len(rows) == 1 and own is not None and own.name == baseline.name):
        return {}
    replaces = {(r.version, r.name): r for r in baseline.replaces}
    covered: list[int] = []
    for version, row in sorted(rows.items()):
        _same_file(
            row,
            replaces.get((version, row.name)),
            f"in the header of {baseline.filename}, which replaces it): this database ran another "
            "file than the released one, so the baseline cannot vouch for its schema",
        )
        # An earlier baseline stands for 0001 up to it.
        covered.extend(range(1 if row.name == BASELINE_NAME else version, version + 1))
    if sorted(covered) != list(range(1, baseline.version + 1)):
        last = rows[max(rows)]
        at = replaces[(last.version, last.name)].filename
        files = [r for r in baseline.replaces if r.name != BASELINE_NAME]
        raise MigrationError(
            f"this database is at migration {at}; {baseline.filename} replaces "
            f"{files[0].filename} .. {files[-1].filename} and takes over only a database that "
            f"applied all of them (or an earlier baseline and the files after it): first run "
            f"`shipledger migrate` of a release that still has those files, up to "
            f"{files[-1].filename}, then this one (docs/operations.md, Schema migrations)"
        )
    return rows


def status_lines(migrations: Sequence[Migration], applied: dict[int, Applied]) -> list[str]:
    """`shipledger migrate --status`: each migration file, when it was applied or `pending`."""
    try:
        replaced = replaced_history(migrations, applied)
    except MigrationError:
        replaced = {}  # check_history names the problem after these lines
    lines: list[str] = []
    for migration in migrations:
        row = applied.get(migration.version)
        when = row.applied_at.isoformat(timespec="seconds") if row else "pending"
        if replaced and migration.replaces:
            first = replaced[min(replaced)]
            note = (
                f" as {first.version:04d}_{first.name}.sql .. "
                f"{migration.replaces[-1].filename}, which it replaces"
            )
        elif row and row.checksum != migration.checksum:
            note = " CHANGED SINCE APPLIED"
        else:
            note = ""
        lines.append(f"{migration.filename:40} {when}{note}")
    return lines


def migrate(
    store: SqlRunner, migrations: Sequence[Migration] | None = None, cluster: str | None = None
) -> list[Migration]:
    """Apply every pending migration in order to the selected database; those applied.

    `cluster` (SHIPLEDGER_CLICKHOUSE_CLUSTER) applies them on that ClickHouse cluster:
    replicated local tables behind Distributed ones (`sinks.ledger.cluster`).

    A new database records its migrations together once all are applied (one insert), so
    a first migrate killed midway (kill -9 of the first `shipledger up`) leaves none recorded
    and an empty `schema_migrations`: the next run drops what it had made, every table still
    empty, and starts again (`_start_afresh`). A later migration is recorded once its own
    statements are applied."""
    migrations = load_migrations() if migrations is None else migrations
    applied = applied_migrations(store)
    check_history(migrations, applied)
    if not applied:
        _start_afresh(store, cluster)
    on = cluster_of(migrations, cluster, store.database)
    _ensure_migrations_table(store, on)
    done: list[Migration] = []
    for migration in migrations:
        if migration.version in applied:
            continue
        for statement in migration.statements():
            try:
                for sql in applied_form(statement, on):
                    store.command(sql)
            except Exception as exc:
                raise MigrationError(f"{migration.filename} failed: {exc}") from exc
        done.append(migration)
        if applied:
            _record(store, [migration])
    if not applied and done:
        _record(store, done)
    return done


def _record(store: SqlRunner, migrations: Sequence[Migration]) -> None:
    """Record `migrations` as applied, in one insert (atomic)."""
    values = ", ".join(
        f"({m.version}, {ddl.quote_str(m.name)}, {ddl.quote_str(m.checksum)})" for m in migrations
    )
    store.command(
        f"INSERT INTO {MIGRATIONS_TABLE} (version, name, checksum) VALUES {values}"  # noqa: S608
    )


def cluster_of(
    migrations: Sequence[Migration], cluster: str | None, database: str
) -> Cluster | None:
    """The rewriter of `migrations` for ClickHouse cluster `cluster` (None: a single server)."""
    if cluster is None:
        return None
    statements = (_strip_comments(s) for m in migrations for s in m.statements())
    return Cluster(cluster, database, created_tables(statements))


def applied_form(statement: str, cluster: Cluster | None) -> list[str]:
    """What runs for migration statement `statement`: itself, or its cluster form."""
    return [statement] if cluster is None else cluster.rewrite(_strip_comments(statement))


def _start_afresh(store: SqlRunner, cluster: str | None) -> None:
    """Before the first migrate of a database (no migration recorded): a database holding
    ledger tables without `schema_migrations` predates migrations and is refused. One with an
    empty `schema_migrations` holds what a first migrate killed midway made: dropped, views
    first, when no table holds a row (nothing writes a ledger before its migrate is done);
    else refused, naming the tables with rows."""
    _, rows = store.query(
        "SELECT name, engine, total_rows FROM system.tables WHERE database = %(db)s "
        "AND name != %(t)s AND NOT startsWith(name, '.inner')",
        {"db": store.database, "t": MIGRATIONS_TABLE},
    )
    if not rows:
        return
    found = sorted(str(r[0]) for r in rows)
    names = ", ".join(found)
    _, exists = store.query(
        "SELECT count() FROM system.tables WHERE database = %(db)s AND name = %(t)s",
        {"db": store.database, "t": MIGRATIONS_TABLE},
    )
    if not exists[0][0]:
        if set(found) & set(ddl.desired_schema()):
            raise MigrationError(
                f"database {store.database} has ledger tables ({names}) but no "
                f"{MIGRATIONS_TABLE}: it predates migrations; export it and start from an "
                "empty database"
            )
        return
    held = sorted(f"{name} ({count} rows)" for name, _, count in rows if count)
    where = f"database {store.database}: a first migrate was interrupted (no migration recorded)"
    if held:
        raise MigrationError(
            f"{where}, yet {', '.join(held)} hold rows: not dropped; export them and start "
            "from an empty database"
        )
    if cluster is not None:
        raise MigrationError(
            f"{where}: drop what it made ON CLUSTER {cluster} ({names}, all empty), then "
            "migrate again"
        )
    views = [str(n) for n, engine, _ in rows if str(engine) in ("View", "MaterializedView")]
    tables = [str(n) for n, engine, _ in rows if str(n) not in views]
    for name in views + tables:
        store.command(f"DROP TABLE IF EXISTS {ddl.quote_ident(name)} SYNC")
    log.warning("interrupted_first_migrate_dropped", database=store.database, objects=names)


# --- schema snapshots ------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectState:
    """What ClickHouse made of one table or view (database names removed)."""

    engine: str
    engine_full: str
    sorting_key: str
    partition_key: str
    comment: str
    #: (name, type, default, comment, codec) in order; codec as `CODEC(...)` or empty.
    columns: tuple[tuple[str, str, str, str, str], ...]
    indexes: tuple[tuple[str, str, str, int], ...]  # (name, type, expr, granularity)
    create_query: str


def snapshot(store: SqlRunner) -> dict[str, ObjectState]:
    """Tables and views of the selected database (schema_migrations excluded)."""
    db = store.database
    params = {"db": db}
    _, tables = store.query(
        "SELECT name, engine, engine_full, sorting_key, partition_key, comment, "
        "create_table_query FROM system.tables WHERE database = %(db)s ORDER BY name",
        params,
    )
    _, columns = store.query(
        "SELECT table, name, type, default_kind || ' ' || default_expression, comment, "
        "compression_codec FROM system.columns WHERE database = %(db)s ORDER BY table, position",
        params,
    )
    _, indexes = store.query(
        "SELECT table, name, type_full, expr, granularity FROM system.data_skipping_indices "
        "WHERE database = %(db)s ORDER BY table, name",
        params,
    )

    def strip(text: object) -> str:
        return str(text).replace(f"`{db}`.", "").replace(f"{db}.", "")

    out: dict[str, ObjectState] = {}
    for name, engine, engine_full, sorting, partition, comment, create in tables:
        if name == MIGRATIONS_TABLE:
            continue
        out[str(name)] = ObjectState(
            engine=str(engine),
            engine_full=strip(engine_full),
            sorting_key=str(sorting),
            partition_key=str(partition),
            comment=str(comment),
            columns=tuple(
                (str(c), str(t), str(d).strip(), str(k), str(z))
                for table, c, t, d, k, z in columns
                if table == name
            ),
            indexes=tuple(
                (str(i), str(t), str(e), int(str(g)))
                for table, i, t, e, g in indexes
                if table == name
            ),
            create_query=strip(create),
        )
    return out


def apply_desired(store: SqlRunner) -> None:
    """Create the desired schema (`sinks.ledger.ddl`) in the selected, empty database."""
    for statement in ddl.desired_schema().values():
        store.command(statement)


def scratch_schemas(
    migrations: Sequence[Migration] | None = None,
) -> tuple[dict[str, ObjectState], dict[str, ObjectState]]:
    """(desired, migrated) snapshots, built in a throwaway chDB.

    Opens its own chDB path: call it with no other chDB store open in this process.
    """
    from shipledger.settings import Settings
    from shipledger.sinks.ledger.store import LedgerStore

    with tempfile.TemporaryDirectory(prefix="shipledger-migrate-") as tmp:
        settings = Settings(clickhouse_url=f"chdb://{tmp}/ch", clickhouse_database=DESIRED_DB)
        with LedgerStore.open(settings) as store:
            store.select_database(DESIRED_DB)
            apply_desired(store)
            desired = snapshot(store)
            store.select_database(MIGRATED_DB)
            migrate(store, migrations)
            migrated = snapshot(store)
    return desired, migrated


def compare(desired: dict[str, ObjectState], actual: dict[str, ObjectState]) -> list[str]:
    """Every difference between two snapshots, one readable line each (empty: identical)."""
    lines: list[str] = []
    for name in sorted(set(desired) | set(actual)):
        want, have = desired.get(name), actual.get(name)
        if want is None:
            lines.append(f"{name}: exists but is not in the desired schema")
            continue
        if have is None:
            lines.append(f"{name}: missing")
            continue
        if want.engine == "View":
            if want.create_query != have.create_query:
                lines.append(f"{name}: view is {have.create_query!r}, want {want.create_query!r}")
            continue
        for attr in ("engine_full", "comment", "indexes"):
            if getattr(want, attr) != getattr(have, attr):
                lines.append(
                    f"{name}.{attr}: want {getattr(want, attr)!r}, have {getattr(have, attr)!r}"
                )
        want_cols = {c[0]: c for c in want.columns}
        have_cols = {c[0]: c for c in have.columns}
        for col in want.columns:
            if col[0] not in have_cols:
                lines.append(f"{name}.{col[0]}: column missing")
            elif have_cols[col[0]] != col:
                lines.append(f"{name}.{col[0]}: want {col[1:]}, have {have_cols[col[0]][1:]}")
        lines.extend(f"{name}.{c}: column not desired" for c in have_cols if c not in want_cols)
        if list(want_cols) != list(have_cols) and set(want_cols) == set(have_cols):
            lines.append(f"{name}: column order is {list(have_cols)}, want {list(want_cols)}")
    return lines


# --- generating the next migration ---------------------------------------------------------


def next_migration(desired: dict[str, ObjectState], migrated: dict[str, ObjectState]) -> str:
    """SQL taking the migrated schema to the desired one ('' when they are equal).

    Additive changes are written as they are; anything that loses data or copies a table is
    written too but flagged `-- REVIEW:` (drops stay commented out).
    """
    statements: list[str] = []
    creates = ddl.desired_schema()
    ordered = [(name, desired[name]) for name in creates if name in desired]
    for name, want in ordered:  # ddl order: tables, chain_heads, views
        have = migrated.get(name)
        if want.engine == "View":
            continue
        if have is None:
            statements.append(creates[name])
            continue
        statements.extend(_alter_table(name, want, have))
    for name in sorted(set(migrated) - set(desired)):
        kind = "VIEW" if migrated[name].engine == "View" else "TABLE"
        statements.append(
            f"-- REVIEW: {name} is no longer in the desired schema; dropping loses its data\n"
            f"-- DROP {kind} {ddl.quote_ident(name)}"
        )
    for name, want in ordered:
        have = migrated.get(name)
        if want.engine != "View" or (have is not None and have.create_query == want.create_query):
            continue
        if have is not None:
            statements.append(f"DROP VIEW {ddl.quote_ident(name)}")
        statements.append(creates[name])
    return "".join(f"{s};\n\n" for s in statements)


def _alter_table(name: str, want: ObjectState, have: ObjectState) -> list[str]:
    table = ddl.quote_ident(name)
    if (want.sorting_key, want.partition_key) != (have.sorting_key, have.partition_key):
        return _rebuild(name, want, have)
    out: list[str] = []
    have_cols = {c[0]: c for c in have.columns}
    previous: str | None = None
    for col_name, col_type, _default, comment, codec in want.columns:
        column = ddl.quote_ident(col_name)
        place = f" AFTER {ddl.quote_ident(previous)}" if previous else " FIRST"
        definition = f"{column} {col_type}{f' {codec}' if codec else ''} "
        old = have_cols.get(col_name)
        if old is None:
            out.append(
                f"ALTER TABLE {table} ADD COLUMN {definition}"
                f"COMMENT {ddl.quote_str(comment)}{place}"
            )
        elif old[1] != col_type:
            out.append(
                f"-- REVIEW: {name}.{col_name} changes type {old[1]} -> {col_type}\n"
                f"ALTER TABLE {table} MODIFY COLUMN {definition}"
                f"COMMENT {ddl.quote_str(comment)}"
            )
        elif old[4] != codec:  # existing parts keep theirs until merged; new parts use it
            out.append(
                f"ALTER TABLE {table} MODIFY COLUMN {definition}COMMENT {ddl.quote_str(comment)}"
            )
        elif old[3] != comment:
            out.append(f"ALTER TABLE {table} COMMENT COLUMN {column} {ddl.quote_str(comment)}")
        previous = col_name
    wanted = {c[0] for c in want.columns}
    out.extend(
        f"-- REVIEW: {name}.{c} is no longer desired; dropping loses its data\n"
        f"-- ALTER TABLE {table} DROP COLUMN {ddl.quote_ident(c)}"
        for c in have_cols
        if c not in wanted
    )
    have_idx = {i[0]: i for i in have.indexes}
    want_idx = {i[0]: i for i in want.indexes}
    for idx_name, idx in want_idx.items():
        if have_idx.get(idx_name) == idx:
            continue
        if idx_name in have_idx:
            out.append(f"ALTER TABLE {table} DROP INDEX {ddl.quote_ident(idx_name)}")
        out.append(
            f"ALTER TABLE {table} ADD INDEX {ddl.quote_ident(idx_name)} {idx[2]} "
            f"TYPE {idx[1]} GRANULARITY {idx[3]}"
        )
    out.extend(
        f"ALTER TABLE {table} DROP INDEX {ddl.quote_ident(i)}"
        for i in have_idx
        if i not in want_idx
    )
    if want.engine_full != have.engine_full:
        ttl = _ttl_of(want.engine_full)
        out.append(
            f"ALTER TABLE {table} MODIFY TTL {ttl}" if ttl else f"ALTER TABLE {table} REMOVE TTL"
        )
    if want.comment != have.comment:
        out.append(f"ALTER TABLE {table} MODIFY COMMENT {ddl.quote_str(want.comment)}")
    return out


def _ttl_of(engine_full: str) -> str:
    match = re.search(r"\bTTL (.*?)(?: SETTINGS |$)", engine_full)
    return match[1] if match else ""


def _rebuild(name: str, want: ObjectState, have: ObjectState) -> list[str]:
    """Partition or sort key changed: copy into a new table and swap (ClickHouse cannot alter
    those keys in place)."""
    temp = f"{name}__rebuild"
    common = [c[0] for c in want.columns if c[0] in {h[0] for h in have.columns}]
    cols = ", ".join(ddl.quote_ident(c) for c in common)
    return [
        f"-- REVIEW: {name}: sort key {have.sorting_key!r} -> {want.sorting_key!r}, "
        f"partition key {have.partition_key!r} -> {want.partition_key!r}: the table is "
        "rebuilt (every row copied)\n" + ddl.create_statement(name, as_name=temp),
        f"INSERT INTO {ddl.quote_ident(temp)} ({cols}) SELECT {cols} FROM {ddl.quote_ident(name)}",  # noqa: S608
        f"EXCHANGE TABLES {ddl.quote_ident(temp)} AND {ddl.quote_ident(name)}",
        f"DROP TABLE {ddl.quote_ident(temp)}",
    ]


def new_migration_file(directory: Path, name: str, sql: str, existing: Iterable[Migration]) -> Path:
    """Write `NNNN_name.sql` (the next version) into `directory`; its path."""
    if not re.fullmatch(r"[a-z0-9_]+", name) or name == BASELINE_NAME:
        raise MigrationError(
            f"migration name {name!r}: use lowercase letters, digits and _ (not "
            f"{BASELINE_NAME!r}: that names what --squash writes)"
        )
    version = max((m.version for m in existing), default=0) + 1
    path = directory / f"{version:04d}_{name}.sql"
    header = (
        f"-- {path.name}: generated by `shipledger migrate --new {name}` from the difference "
        "between sinks/ledger/ddl.py and the migrations before it. Review, then commit.\n\n"
    )
    path.write_text(header + sql, encoding="utf-8")
    return path


def baseline_migration(existing: Sequence[Migration], sql: str) -> Migration:
    """One migration in place of `existing` (all of them, from 0001 or from a baseline): version
    and name the replaced files' last version and `baseline`, a header naming each replaced file
    with the checksum ledgers recorded for it, then `sql`, the schema they produce written from
    nothing (`next_migration(desired, {})`).

    An earlier baseline's own header lines are kept, then the baseline itself (ledgers that
    applied it recorded it, standing for 0001..its version), then the files after it: every
    history that reached the last file is at the new baseline."""
    if not existing or (existing[0].replaces and len(existing) == 1):
        raise MigrationError("squash: nothing to squash (no migrations, or only a baseline)")
    version = existing[-1].version
    first, *rest = existing
    replaced = [
        *first.replaces,
        Replaced(first.version, first.name, first.checksum),
        *(Replaced(m.version, m.name, m.checksum) for m in rest),
    ]
    header = (
        f"-- {version:04d}_{BASELINE_NAME}.sql: generated by `shipledger migrate --squash`: "
        "sinks/ledger/ddl.py's schema\n"
        "-- written from an empty database (as --new writes it), in place of the migrations "
        "below, which\n"
        "-- produced exactly that schema. A ledger that applied all of them, with these "
        "checksums, is at\n"
        "-- this baseline and runs nothing; one that applied only some of them is refused.\n"
    )
    if first.replaces:
        header += (
            f"-- {first.filename} stands for 0001..{first.version:04d}: a ledger that applied "
            "it and the files after it\n-- is at this baseline too.\n"
        )
    lines = "".join(f"-- replaces {r.filename} sha256 {r.checksum}\n" for r in replaced)
    return Migration(version, BASELINE_NAME, f"{header}{lines}\n{sql}")
