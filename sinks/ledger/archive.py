"""Cold storage: move ledger rows older than `cold_after_days` from the hot tables to Parquet.

Embedded ClickHouse (chDB) only; a server tiers parts to a cold volume by TTL instead
(`server_tiering_sql`). ClickHouse writes every file itself (`INSERT INTO FUNCTION file(...,
'Parquet')`); the rows stay queryable through the query database (`sinks.ledger.tiers`).

A run moves each table in (tenant, month) files, crash-safe in this order:

1. per batch, write `<month>-<run>.parquet.tmp` in `cold/<table>/tenant=<t>/` (the cold
   tables' glob never reads it) and verify it: its row count equals the count of hot rows
   with its (tenant, id) pairs, and is not zero; else it is dropped and retried next run;
2. write a pending marker `cold/.pending/<table>.<run>.json` (table, run, cutoff), fsync;
3. rename the verified files to `.parquet` (atomic): from here queries see the rows twice;
4. one `DELETE` of the hot rows whose (tenant, id) are in this run's files of the table and
   that are older than the cutoff, then remove the marker.

One DELETE per table and run, not per file: a synchronous DELETE costs ~9-11 s in chDB
whatever it deletes (measured on 100k rows; asynchronous ones return at once but leave the
rows visible), so a run costs about 3 DELETEs plus ~0.1 s per file.

A crash before 3 leaves `.tmp` files (removed by the next run; their rows are still hot). A
crash after it leaves duplicates and the marker: the next run first finishes every pending
delete (idempotent), so no run exports those rows a second time.

Retention: every cold row honours its own `retain_until` (the hot tables' TTL column, stamped
by the sink from the policy's retention classes), as the hot TTL does. A file holds one
tenant-month of every retention class, so each run rewrites a file whose rows are partly past
it without them (written beside it as `.parquet.tmp`, verified, fsynced, then renamed over it:
readers see the old file or the new one) and deletes a file whose rows all are. A row past
its time is gone at the next run (`up`: every `archive_interval_s`), as a hot one is gone at
the next TTL merge; `audit verify` tolerates both, since only rows past `retain_until` go.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from shipledger.durable import fsync_dir, fsync_file
from shipledger.locate import data_dir_option
from shipledger.logging import configure_logging, get_logger
from shipledger.settings import chdb_path
from shipledger.sinks.cli_options import ledger_settings
from shipledger.sinks.ledger import ddl, tiers
from shipledger.sinks.ledger.migrate import applied_form, cluster_of, load_migrations
from shipledger.sinks.ledger.store import LedgerStore, StoreError
from shipledger.stackfile import read_stack

log = get_logger("archive")

RETAIN_COLUMN = "retain_until"
COLD_VOLUME = "cold"
STORAGE_POLICY = "shipledger_tiered"
_PENDING = ".pending"


@dataclass(frozen=True)
class Batch:
    """Rows of one table, tenant and month older than the cutoff."""

    table: str
    tenant: str
    month: int
    rows: int


@dataclass
class ArchiveReport:
    """What one archive run did (or, dry run, would do)."""

    cutoff: datetime
    moved: list[Batch] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    expired_files: list[str] = field(default_factory=list)
    #: Files rewritten without their rows past retention: path -> rows dropped.
    rewritten_files: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    @property
    def rows_moved(self) -> int:
        """Rows moved to (or, dry run, due for) cold storage."""
        return sum(b.rows for b in self.moved)


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def _before_cutoff(time_column: str) -> str:
    return f"{ddl.quote_ident(time_column)} < fromUnixTimestamp64Milli({{cutoff:Int64}}, 'UTC')"


def archive(
    store: LedgerStore,
    cold_after_days: int,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
) -> ArchiveReport:
    """Move every hot row older than `cold_after_days` to cold Parquet files; delete cold
    files past retention; finish moves a crash interrupted. Embedded stores only."""
    cold_root = _cold_root(store)
    cutoff = (now or datetime.now(UTC)) - timedelta(days=cold_after_days)
    report = ArchiveReport(cutoff=cutoff)
    if not dry_run:
        report.recovered = recover(store)
    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    for spec in ddl.tables().values():
        batches = _batches(store, spec, cutoff)
        if dry_run:
            report.moved += batches
            continue
        written: list[Path] = []
        for batch in batches:
            tmp = _export(store, cold_root, spec, batch, cutoff, run_id)
            if tmp is None:
                report.skipped.append(f"{batch.table}/{batch.tenant}/{batch.month}")
            else:
                written.append(tmp)
                report.moved.append(batch)
        if written:
            _commit(store, cold_root, spec, written, cutoff, run_id)
    _expire(store, cold_root, now or datetime.now(UTC), report, dry_run=dry_run)
    changed = report.moved or report.expired_files or report.rewritten_files or report.recovered
    if not dry_run and changed:
        tiers.refresh_cold(store)
    log.info(
        "archive_done",
        dry_run=dry_run,
        cutoff=cutoff.isoformat(),
        rows=report.rows_moved,
        batches=len(report.moved),
        recovered=len(report.recovered),
        expired_files=len(report.expired_files),
        rewritten_files=len(report.rewritten_files),
        skipped=report.skipped,
    )
    return report


def _cold_root(store: LedgerStore) -> Path:
    if store.cold_root is None:
        raise StoreError(
            "archive moves rows to Parquet files of the embedded ClickHouse only; a server "
            "tiers by TTL to a cold volume: see `shipledger archive --help`"
        )
    return store.cold_root


def _batches(store: LedgerStore, spec: ddl.TableSpec, cutoff: datetime) -> list[Batch]:
    time_column = ddl.quote_ident(spec.time_column)
    _, rows = store.query(
        f"SELECT tenant, toYYYYMM({time_column}) AS month, count() "  # noqa: S608
        f"FROM {ddl.qualified(store.database, spec.name)} WHERE {_before_cutoff(spec.time_column)} "
        "GROUP BY tenant, month ORDER BY tenant, month",
        {"cutoff": _ms(cutoff)},
    )
    return [Batch(spec.name, str(t), int(m), int(n)) for t, m, n in rows]


def _export(
    store: LedgerStore,
    cold_root: Path,
    spec: ddl.TableSpec,
    batch: Batch,
    cutoff: datetime,
    run_id: str,
) -> Path | None:
    """Step 1 for one batch: the verified, fsynced temp file, or None (nothing kept)."""
    directory = tiers.tenant_dir(cold_root, spec.name, batch.tenant)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f"{batch.month}-{run_id}.parquet.tmp"
    columns = tiers.column_list(tiers.hot_columns(store, spec.name))
    hot = ddl.qualified(store.database, spec.name)
    time_column = ddl.quote_ident(spec.time_column)
    # Identifiers checked by quote_ident, the path quoted, values bound server-side.
    store.command(
        f"INSERT INTO FUNCTION file({ddl.quote_str(str(tmp))}, 'Parquet') "  # noqa: S608
        f"SELECT {columns} FROM {hot} WHERE tenant = {{tenant:String}} "
        f"AND toYYYYMM({time_column}) = {{month:UInt32}} AND {_before_cutoff(spec.time_column)}",
        {"tenant": batch.tenant, "month": batch.month, "cutoff": _ms(cutoff)},
    )
    _, rows = store.query(f"SELECT count() FROM file({ddl.quote_str(str(tmp))}, 'Parquet')")  # noqa: S608
    written = int(rows[0][0])
    _, rows = store.query(
        f"SELECT count() FROM {hot} WHERE {_in_files(spec, str(tmp))}",  # noqa: S608
        {"cutoff": _ms(cutoff)},
    )
    in_hot = int(rows[0][0])
    if written == 0 or written != in_hot:
        log.warning(
            "archive_verify_failed", table=spec.name, file=str(tmp), written=written, hot=in_hot
        )
        tmp.unlink(missing_ok=True)
        return None
    fsync_file(tmp)
    return tmp


def _run_glob(cold_root: Path, table: str, run_id: str) -> str:
    return f"{cold_root / table}/tenant=*/*-{run_id}.parquet"


def _parquet(path_or_glob: str, structure: str) -> str:
    """A subquery of the Parquet file(s) `path_or_glob`, read as `structure`, their `tenant`
    column as written. chDB reads `file()` with hive partitioning on by default, which takes
    `tenant` from the `tenant=<percent-encoded>` directory instead (`caf%C3%A9` for `café`);
    the setting is inside the subquery because a DELETE's own settings do not reach it."""
    return (
        f"(SELECT * FROM file({ddl.quote_str(path_or_glob)}, 'Parquet', "  # noqa: S608
        f"{ddl.quote_str(structure)}) SETTINGS use_hive_partitioning = 0)"
    )


def _in_files(spec: ddl.TableSpec, path_or_glob: str) -> str:
    """Hot rows older than the cutoff whose (tenant, id) are in the Parquet file(s)."""
    id_column = ddl.quote_ident(spec.id_column)
    source = _parquet(path_or_glob, f"tenant String, {spec.id_column} String")
    return (
        f"{_before_cutoff(spec.time_column)} AND (tenant, {id_column}) IN "  # noqa: S608
        f"(SELECT tenant, {id_column} FROM {source})"
    )


def _commit(
    store: LedgerStore,
    cold_root: Path,
    spec: ddl.TableSpec,
    written: list[Path],
    cutoff: datetime,
    run_id: str,
) -> None:
    """Steps 2-4: marker, renames, one DELETE, marker removed."""
    marker = _write_marker(cold_root, spec.name, run_id, cutoff)
    for tmp in written:
        tmp.replace(tmp.with_suffix(""))  # x.parquet.tmp -> x.parquet
        fsync_dir(tmp.parent)
    _delete_hot(store, spec, _run_glob(cold_root, spec.name, run_id), cutoff)
    marker.unlink()
    log.info("archived", table=spec.name, files=len(written), run=run_id)


def _delete_hot(store: LedgerStore, spec: ddl.TableSpec, files: str, cutoff: datetime) -> None:
    """The one DELETE path of the ledger: hot rows that now live in `files` (idempotent)."""
    store.command(
        f"DELETE FROM {ddl.qualified(store.database, spec.name)} WHERE {_in_files(spec, files)}",  # noqa: S608
        {"cutoff": _ms(cutoff)},
    )


def _write_marker(cold_root: Path, table: str, run_id: str, cutoff: datetime) -> Path:
    pending = cold_root / _PENDING
    pending.mkdir(parents=True, exist_ok=True)
    marker = pending / f"{table}.{run_id}.json"
    body = {"table": table, "run": run_id, "cutoff_ms": _ms(cutoff)}
    marker.write_text(json.dumps(body), encoding="utf-8")
    fsync_file(marker)
    fsync_dir(pending)
    return marker


def recover(store: LedgerStore) -> list[str]:
    """Finish deletes a crash interrupted; remove orphan `.tmp` files.

    Returns the `<table>.<run>` moves finished. A marker whose run renamed no file yet is just
    removed (its rows are still hot only).
    """
    cold_root = _cold_root(store)
    fixed: list[str] = []
    for marker in sorted((cold_root / _PENDING).glob("*.json")):
        body = json.loads(marker.read_text(encoding="utf-8"))
        spec = ddl.tables().get(body["table"])
        files = _run_glob(cold_root, body["table"], body["run"])
        if spec is not None and list(cold_root.glob(files.removeprefix(f"{cold_root}/"))):
            cutoff = datetime.fromtimestamp(body["cutoff_ms"] / 1000, tz=UTC)
            _delete_hot(store, spec, files, cutoff)
            fixed.append(f"{spec.name}.{body['run']}")
            log.warning("archive_recovered", table=spec.name, run=body["run"])
        marker.unlink()
    for tmp in cold_root.glob("*/tenant=*/*.parquet.tmp"):
        tmp.unlink()
    return fixed


def _expire(
    store: LedgerStore, cold_root: Path, now: datetime, report: ArchiveReport, *, dry_run: bool
) -> None:
    """Honour every cold row's `retain_until`: delete the files whose rows are all past it
    (`report.expired_files`), rewrite those with some past it without them
    (`report.rewritten_files`)."""
    structure = ddl.quote_str(f"{RETAIN_COLUMN} {ddl.DATETIME_MS}")
    partly: list[tuple[str, Path, int]] = []
    for table in ddl.tables():
        for path in sorted((cold_root / table).glob("tenant=*/*.parquet")):
            _, rows = store.query(
                f"SELECT countIf({RETAIN_COLUMN} < fromUnixTimestamp64Milli({{now:Int64}}, "  # noqa: S608
                f"'UTC')), count() FROM file({ddl.quote_str(str(path))}, 'Parquet', {structure})",
                {"now": _ms(now)},
            )
            past, total = int(rows[0][0]), int(rows[0][1])
            if past == total:
                report.expired_files.append(str(path))
            elif past:
                partly.append((table, path, past))
    if dry_run:
        report.rewritten_files = {str(path): past for _, path, past in partly}
        return
    for table, path, past in partly:
        if _rewrite_without_expired(store, table, path, now, dropped=past):
            report.rewritten_files[str(path)] = past
    if report.expired_files:
        tiers.refresh_cold(store)  # stop reading them before they go
        for name in report.expired_files:
            Path(name).unlink(missing_ok=True)


def _rewrite_without_expired(
    store: LedgerStore, table: str, path: Path, now: datetime, *, dropped: int
) -> bool:
    """Replace cold file `path` by a copy without its rows past `retain_until` at `now`.

    The copy is written by ClickHouse beside it as `.parquet.tmp` (never read, removed by
    `recover` if a crash leaves it), verified (its rows are the file's rows not yet due),
    fsynced, then renamed over the file. False (file untouched) when the copy does not verify.
    """
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    source = _parquet(str(path), tiers.cold_structure(store, table))
    kept = f"{RETAIN_COLUMN} >= fromUnixTimestamp64Milli({{now:Int64}}, 'UTC')"
    columns = tiers.column_list(tiers.hot_columns(store, table))
    store.command(
        f"INSERT INTO FUNCTION file({ddl.quote_str(str(tmp))}, 'Parquet') "  # noqa: S608
        f"SELECT {columns} FROM {source} WHERE {kept}",
        {"now": _ms(now)},
    )
    _, rows = store.query(
        f"SELECT (SELECT count() FROM file({ddl.quote_str(str(tmp))}, 'Parquet')), "  # noqa: S608
        f"(SELECT count() FROM {source} WHERE {kept})",
        {"now": _ms(now)},
    )
    written, due_later = (int(v) for v in rows[0])
    if written == 0 or written != due_later:
        log.warning(
            "archive_rewrite_verify_failed", file=str(path), written=written, kept=due_later
        )
        tmp.unlink(missing_ok=True)
        return False
    fsync_file(tmp)
    tmp.replace(path)
    fsync_dir(path.parent)
    log.info("archive_rewritten", file=str(path), dropped=dropped, kept=written)
    return True


# --- server mode ---------------------------------------------------------------------------
def server_tiering_sql(database: str | None, cold_after_days: int) -> list[str]:
    """DDL that tiers a ClickHouse server's ledger: parts older than `cold_after_days` move
    to the `cold` volume of storage policy `shipledger_tiered` (S3 or a slow disk), still
    queried in place. The policy must exist in the server config (docs/operations.md).
    MODIFY TTL replaces a table's whole TTL: the retention delete is restated beside the move.
    Tables unqualified when `database` is None (run in the selected one).
    Untested here: no ClickHouse server on this machine."""
    out = []
    for spec in ddl.tables().values():
        table = ddl.qualified(database, spec.name)
        out.append(f"ALTER TABLE {table} MODIFY SETTING storage_policy = '{STORAGE_POLICY}'")
        out.append(
            f"ALTER TABLE {table} MODIFY TTL toDateTime({ddl.quote_ident(spec.time_column)}) "
            f"+ INTERVAL {int(cold_after_days)} DAY TO VOLUME '{COLD_VOLUME}', "
            f"{ddl.RETENTION_TTL}"
        )
    return out


def apply_server_tiering(store: LedgerStore, cold_after_days: int) -> int:
    """Run `server_tiering_sql` on the store's server (on its cluster's local tables in cluster
    mode, `sinks.ledger.cluster`); the statements run. Idempotent: a deployment's archive job."""
    cluster = cluster_of(load_migrations(), store.cluster, store.database)
    statements = [
        sql
        for statement in server_tiering_sql(None, cold_after_days)
        for sql in applied_form(statement, cluster)
    ]
    for sql in statements:
        store.command(sql)
    return len(statements)


# --- CLI ------------------------------------------------------------------------------------
@click.command("archive")
@click.option("--dry-run", is_flag=True, help="Show what would move or expire; change nothing.")
@click.option(
    "--days",
    type=click.IntRange(min=1),
    help="Move rows older than this many days (default SHIPLEDGER_COLD_AFTER_DAYS, 90).",
)
@click.option(
    "--apply",
    "apply_tiering",
    is_flag=True,
    help="With a ClickHouse server: run the tiering DDL rather than print it (idempotent).",
)
@data_dir_option
def archive_command(
    dry_run: bool, days: int | None, apply_tiering: bool, data_dir: Path | None
) -> None:
    """Move old ledger rows to cold Parquet files (embedded ClickHouse).

    \b
    Rows older than --days (by occurred_at / started_at) leave the hot tables for
    <data-dir>/cold/<table>/tenant=<tenant>/<month>-<run>.parquet, written by ClickHouse,
    verified, then deleted from hot. `shipledger query` reads hot and cold rows together.
    Cold rows past their retain_until are dropped: a file partly past it is rewritten without
    them, one wholly past it deleted. `shipledger up` runs this at
    start and every SHIPLEDGER_ARCHIVE_INTERVAL_S (3600) seconds by itself.

    \b
    Examples:
      shipledger archive --dry-run          # what would move, per table/tenant/month
      shipledger archive                    # move it
      SHIPLEDGER_COLD_AFTER_DAYS=30 shipledger archive

    With SHIPLEDGER_CLICKHOUSE_URL naming a server, prints the storage-policy/TTL DDL that
    tiers old parts to a cold volume instead (see docs/operations.md); --apply runs it (the
    archive job of deploy/compose and deploy/k8s; on the cluster's local tables with
    SHIPLEDGER_CLICKHOUSE_CLUSTER).
    """
    settings = ledger_settings("`shipledger archive`", None, data_dir)
    configure_logging(settings)
    days = days or settings.cold_after_days
    url = settings.resolved_clickhouse_url
    if chdb_path(url) is None and apply_tiering and not dry_run:
        try:
            with LedgerStore.open(settings) as store:
                ran = apply_server_tiering(store, days)
        except StoreError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"{ran} statements run: parts older than {days} days move to volume 'cold'")
        return
    if chdb_path(url) is None:
        click.echo("-- A server tiers by TTL to a cold volume; apply once (untested here):")
        for statement in server_tiering_sql(settings.ledger_database, days):
            click.echo(statement + ";")
        return
    running = read_stack(settings)
    if running is not None:
        raise click.ClickException(
            f"`shipledger up` (pid {running.pid}) owns {url} and archives by itself at start "
            f"and every {settings.archive_interval_s:.0f}s; stop it to archive by hand"
        )
    try:
        with LedgerStore.open(settings) as store:
            if not store.database_exists():
                raise click.ClickException(f"no ledger in {url} yet: run `shipledger up` first")
            store.ensure_schema()
            report = archive(store, days, dry_run=dry_run)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    _print_report(report, dry_run=dry_run)


def _print_report(report: ArchiveReport, *, dry_run: bool) -> None:
    verb = "would move" if dry_run else "moved"
    click.echo(f"cutoff {report.cutoff:%Y-%m-%d %H:%M} UTC: {verb} {report.rows_moved} rows")
    for batch in report.moved:
        click.echo(f"  {batch.table}  tenant={batch.tenant}  {batch.month}  {batch.rows} rows")
    for name in report.recovered:
        click.echo(f"  finished an interrupted move: {name}")
    expired_verb = "would delete" if dry_run else "deleted"
    for name in report.expired_files:
        click.echo(f"  {expired_verb} (past retention): {name}")
    rewrite_verb = "would rewrite" if dry_run else "rewrote"
    for name, dropped in report.rewritten_files.items():
        click.echo(f"  {rewrite_verb} without {dropped} rows past retention: {name}")
    for name in report.skipped:
        click.echo(f"  skipped (verification failed, retried next run): {name}")
