"""Schema migrations on a real chDB: they reproduce sinks/ledger/ddl.py exactly, are recorded, are
never rewritten, `migrate --new` writes the next one from the difference, and the baseline
(0023_baseline.sql, which replaced 0001..0023, and 0011_baseline.sql, the baseline before it)
takes over ledgers that applied those files, or the earlier baseline and the files after it."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.migrate import (
    MIGRATIONS_TABLE,
    Migration,
    MigrationError,
    Replaced,
    applied_migrations,
    baseline_migration,
    compare,
    load_migrations,
    migrate,
    migrations_dir,
    next_migration,
    scratch_schemas,
    snapshot,
    status_lines,
)
from shipledger.sinks.ledger.migrate_cli import migrate as migrate_cmd
from shipledger.sinks.ledger.store import LedgerStore, StoreError
from tests.kit import ledger_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LedgerStore]:
    with LedgerStore.open(ledger_settings(tmp_path / "data")) as s:
        yield s


def test_migrations_produce_exactly_the_desired_schema() -> None:
    """Every table, column (type, comment, position), sort and partition key, TTL, index and
    view of sinks/ledger/ddl.py. Fails for a schema change committed without its migration."""
    desired, migrated = scratch_schemas()
    assert set(desired) == {*ddl.tables(), ddl.CHAIN_HEADS, *ddl.AGGREGATES, *ddl.VIEWS}
    differences = compare(desired, migrated)
    assert not differences, (
        "the migrations do not produce sinks/ledger/ddl.py's schema; run "
        "`shipledger migrate --new NAME`, review and commit the file:\n" + "\n".join(differences)
    )
    events = migrated[ddl.EVENTS]
    assert events.sorting_key.startswith("tenant, ifNull(region, '')")
    assert events.partition_key == "(tenant, toYYYYMM(occurred_at))"
    assert "TTL retain_until" in events.engine_full


def _without(sql: str, pattern: str) -> str:
    return re.sub(pattern, "", sql, flags=re.DOTALL)


def test_next_migration_covers_added_columns_tables_and_key_changes() -> None:
    """An older schema (the baseline without kafka_offset and alerts, records sorted without
    region): the generated migration takes it to the desired schema."""
    baseline = load_migrations()[0]
    body = baseline.sql.split("\n\n", 1)[1]  # without the header naming the replaced files
    old = _without(body, r"\n    `kafka_offset` [^\n]*")
    old = _without(old, r"CREATE TABLE `alerts`.*?;\n")
    old = _without(old, r"CREATE VIEW `open_alerts`.*?;\n")
    old = old.replace(
        "ORDER BY (`tenant`, ifNull(`region`, ''), `environment`, `service`, `started_at`",
        "ORDER BY (`tenant`, `environment`, `service`, `started_at`",
    )
    assert old.count("CREATE") == body.count("CREATE") - 2 and "kafka_offset" not in old
    first = Migration(1, "initial", old)
    desired, migrated = scratch_schemas([first])
    sql = next_migration(desired, migrated)
    assert "ADD COLUMN `kafka_offset` Int64" in sql and "AFTER `kafka_partition`" in sql
    assert "CREATE TABLE `alerts`" in sql and "CREATE VIEW `open_alerts`" in sql
    assert "EXCHANGE TABLES `deployment_records__rebuild` AND `deployment_records`" in sql
    assert "-- REVIEW:" in sql
    desired, migrated = scratch_schemas([first, Migration(2, "catch_up", sql)])
    assert compare(desired, migrated) == []


def test_a_fresh_ledger_applies_and_records_the_baseline(tmp_path: Path) -> None:
    desired, _ = scratch_schemas()  # before the store opens: one chDB path per process
    migrations = load_migrations()
    baseline = migrations[0]
    assert (baseline.filename, len(baseline.replaces)) == ("0023_baseline.sql", 24)
    with LedgerStore.open(ledger_settings(tmp_path / "data")) as store:
        assert store.ensure_schema() == [m.filename for m in migrations]
        assert store.ensure_schema() == []
        row = applied_migrations(store)[23]
        assert (row.version, row.name, row.checksum) == (23, "baseline", baseline.checksum)
        assert compare(desired, snapshot(store)) == []


def _files(*, earlier_baseline: bool = False) -> list[Replaced]:
    """The files the baseline replaced, as a ledger applied them: every one from 0001, or (the
    ledgers made since the squash before) 0011_baseline.sql and the files after it."""
    replaced = load_migrations()[0].replaces
    if not earlier_baseline:
        return [r for r in replaced if r.name != "baseline"]
    (at,) = (i for i, r in enumerate(replaced) if r.name == "baseline")
    return list(replaced[at:])


def _applied_one_by_one(store: LedgerStore, replaced: list[Replaced]) -> None:
    """A ledger migrated by the files the baseline replaced: the baseline's schema, and
    schema_migrations holding what applying those files recorded."""
    store.select_database(store.database)
    migrate(store, load_migrations()[:1])
    store.command(f"TRUNCATE TABLE {MIGRATIONS_TABLE}")
    store.command(
        f"INSERT INTO {MIGRATIONS_TABLE} (version, name, checksum) VALUES "
        + ", ".join(f"({r.version}, {ddl.quote_str(r.name)}, '{r.checksum}')" for r in replaced)
    )


def test_a_ledger_that_applied_the_replaced_files_is_at_the_baseline(store: LedgerStore) -> None:
    migrations = load_migrations()
    _applied_one_by_one(store, _files())
    assert store.ensure_schema() == [m.filename for m in migrations[1:]]  # nothing of 1..23
    applied = applied_migrations(store)
    assert [(v, r.name) for v, r in applied.items()][:2] == [
        (1, "initial"),
        (2, "contract_v2_and_families"),
    ]
    assert len(applied) == len(migrations) + 22  # its history is kept as it was
    (line, *_) = status_lines(migrations, applied)
    assert line.startswith("0023_baseline.sql") and "pending" not in line
    assert line.endswith("as 0001_initial.sql .. 0023_chain_lanes.sql, which it replaces")


def test_a_ledger_at_the_earlier_baseline_and_the_files_after_it_is_at_the_baseline(
    store: LedgerStore,
) -> None:
    """Most ledgers: created from 0011_baseline.sql, then migrated by 0012..0023."""
    migrations = load_migrations()
    _applied_one_by_one(store, _files(earlier_baseline=True))
    assert store.ensure_schema() == [m.filename for m in migrations[1:]]
    applied = applied_migrations(store)
    assert (applied[11].name, list(applied)[-1]) == ("baseline", 23)
    (line, *_) = status_lines(migrations, applied)
    assert line.endswith("as 0011_baseline.sql .. 0023_chain_lanes.sql, which it replaces")


def test_a_ledger_partway_from_the_earlier_baseline_is_refused(store: LedgerStore) -> None:
    _applied_one_by_one(store, _files(earlier_baseline=True)[:5])  # 0011_baseline .. 0015
    with pytest.raises(MigrationError) as refused:
        migrate(store)
    message = str(refused.value)
    assert message.startswith("this database is at migration 0015_dora_per_deployment.sql;")
    assert "release that still has those files, up to 0023_chain_lanes.sql" in message


def test_a_ledger_that_applied_only_some_replaced_files_is_refused(store: LedgerStore) -> None:
    _applied_one_by_one(store, _files()[:7])
    with pytest.raises(MigrationError) as refused:
        migrate(store)
    message = str(refused.value)
    assert message.startswith("this database is at migration 0007_governance_enrichment.sql;")
    assert "release that still has those files, up to 0023_chain_lanes.sql" in message
    with pytest.raises(StoreError, match=r"at migration 0007_governance_enrichment\.sql"):
        store.ensure_schema()


def test_a_changed_replaced_file_is_an_error_naming_it(store: LedgerStore) -> None:
    replaced = _files()
    replaced[2] = Replaced(3, "compress_hashes", "0" * 64)
    _applied_one_by_one(store, replaced)
    with pytest.raises(
        MigrationError,
        match=r"0003_compress_hashes\.sql was changed after it was applied \(checksum 000000000000 "
        r"recorded, ebb33aeb779c in the header of 0023_baseline\.sql",
    ):
        migrate(store)


def test_migrations_are_recorded_and_applied_once(store: LedgerStore) -> None:
    names = [m.filename for m in load_migrations()]
    assert names[0] == "0023_baseline.sql"
    assert store.ensure_schema() == names
    assert store.ensure_schema() == []
    row = applied_migrations(store)[23]
    assert (row.version, row.name) == (23, "baseline")
    assert row.checksum == load_migrations()[0].checksum


def test_a_changed_applied_migration_is_an_error_naming_it(store: LedgerStore) -> None:
    store.ensure_schema()
    baseline, *later = load_migrations()
    edited = Migration(23, "baseline", baseline.sql + "\n-- an innocent comment\n")
    with pytest.raises(
        MigrationError, match=r"0023_baseline\.sql was changed after it was applied"
    ):
        migrate(store, [edited, *later])
    with pytest.raises(MigrationError, match="unknown to this shipledger"):
        migrate(store, [])


class _Killed(BaseException):
    """Not an `Exception`: nothing may catch it, as nothing runs after a kill -9."""


#: Where the first migrate dies (the nth statement it runs): its migrations table, among the
#: baseline's tables, among its materialized views, among its last views, and the one insert
#: recording the migrations.
_FIRST_MIGRATE_KILLS = (2, 9, 20, 40, -1)


@pytest.mark.parametrize("dies_at", _FIRST_MIGRATE_KILLS)
def test_a_first_migrate_killed_midway_is_done_again_by_the_next_start(
    store: LedgerStore, monkeypatch: pytest.MonkeyPatch, dies_at: int
) -> None:
    """kill -9 of the first `shipledger up` (or `migrate`) during its migrate: the next start
    migrates the ledger to exactly the schema of one that was never interrupted (it failed to
    start before: `CREATE TABLE` of a table the killed run made, or `predates migrations`)."""
    statements: list[str] = []
    real = LedgerStore.command

    def dies(self: LedgerStore, sql: str, *args: object, **kwargs: object) -> None:
        statements.append(sql)
        recording = sql.startswith(f"INSERT INTO {MIGRATIONS_TABLE}")
        if len(statements) == dies_at or (dies_at == -1 and recording):
            raise _Killed
        real(self, sql, *args, **kwargs)  # type: ignore[arg-type]

    store.select_database(store.database)
    monkeypatch.setattr(LedgerStore, "command", dies)
    with pytest.raises(_Killed):
        migrate(store)
    monkeypatch.undo()
    assert store.ensure_schema() == [m.filename for m in load_migrations()]
    resumed = snapshot(store)
    store.database = "never_interrupted"
    store.select_database(store.database)
    migrate(store)
    assert not compare(snapshot(store), resumed)


def test_an_interrupted_first_migrate_with_rows_is_refused_not_dropped(
    store: LedgerStore,
) -> None:
    """What an interrupted first migrate left is dropped only while no table holds a row."""
    store.select_database(store.database)
    migrate(store, load_migrations()[:1])  # the baseline recorded, as a first migrate would...
    store.command(f"TRUNCATE TABLE {MIGRATIONS_TABLE}")  # ...had it died before recording
    store.command("INSERT INTO chain_heads (tenant) VALUES ('acme')")
    with pytest.raises(StoreError, match=r"chain_heads \(1 rows\) hold rows: not dropped"):
        store.ensure_schema()


def test_a_ledger_from_before_migrations_is_refused(store: LedgerStore) -> None:
    store.select_database(store.database)
    store.command(ddl.desired_schema()[ddl.EVENTS])
    with pytest.raises(StoreError, match="predates migrations"):
        store.ensure_schema()


def test_misnumbered_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "0002_second.sql").write_text("SELECT 1;\n")
    with pytest.raises(MigrationError, match="expected version 0001"):
        load_migrations(tmp_path)


def test_cli_status_and_new(tmp_path: Path) -> None:
    data = tmp_path / "data"
    runner = CliRunner()
    pending = runner.invoke(migrate_cmd, ["--status", "--data-dir", str(data)])
    assert pending.exit_code == 0, pending.output
    assert "0023_baseline.sql" in pending.output and "pending" in pending.output
    applied = runner.invoke(migrate_cmd, ["--data-dir", str(data)])
    assert applied.exit_code == 0 and "0023_baseline.sql" in applied.output
    status = runner.invoke(migrate_cmd, ["--status", "--data-dir", str(data)])
    assert "pending" not in status.output

    source = tmp_path / "migrations"
    shutil.copytree(Path(str(migrations_dir())), source)
    nothing = runner.invoke(migrate_cmd, ["--new", "noop", "--dir", str(source)])
    assert nothing.exit_code == 0 and "nothing to write" in nothing.output
    (creates,) = [f for f in source.glob("*.sql") if "CREATE VIEW `running_at`" in f.read_text()]
    creates.write_text(_without(creates.read_text(), r"CREATE VIEW `running_at`.*?;\n"))
    wrote = runner.invoke(migrate_cmd, ["--new", "add_view", "--dir", str(source)])
    assert wrote.exit_code == 0, wrote.output
    (added,) = source.glob("*_add_view.sql")
    assert added.name == f"{load_migrations()[-1].version + 1:04d}_add_view.sql"  # 0024 on
    assert "CREATE VIEW `running_at`" in added.read_text()


def test_cli_squash_writes_one_baseline_in_place_of_the_files(tmp_path: Path) -> None:
    """From files that produce the desired schema (here one: the generator's own from an
    empty database, as a baseline holds)."""
    desired, _ = scratch_schemas([])
    body = next_migration(desired, {})
    source = tmp_path / "migrations"
    source.mkdir()
    (source / "0001_everything.sql").write_text(body)
    runner = CliRunner()
    squashed = runner.invoke(migrate_cmd, ["--squash", "--dir", str(source)])
    assert squashed.exit_code == 0, squashed.output
    (baseline,) = load_migrations(source)
    assert baseline.filename == "0001_baseline.sql"
    assert baseline.replaces == (
        Replaced(1, "everything", Migration(1, "everything", body).checksum),
    )
    assert baseline.sql.endswith(body)
    again = runner.invoke(migrate_cmd, ["--squash", "--dir", str(source)])
    assert again.exit_code != 0 and "nothing to squash" in again.output


def test_cli_squash_takes_over_a_baseline_and_the_files_after_it(tmp_path: Path) -> None:
    """A baseline from before a view existed, then the file adding it: squashed again, the new
    baseline produces, to the letter, what the two applied one by one produce (the CLI compares
    the snapshots before writing), and a ledger migrated by the two is at it."""
    desired, _ = scratch_schemas([])
    body = next_migration(desired, {})
    view = ddl.desired_schema()["running_at"]
    without_view = body.replace(f"{view};\n\n", "")
    assert without_view != body
    first = baseline_migration([Migration(1, "without_view", without_view)], without_view)
    source = tmp_path / "migrations"
    source.mkdir()
    (source / first.filename).write_text(first.sql)
    (source / "0002_add_view.sql").write_text(f"{view};\n")
    one_by_one = load_migrations(source)
    squashed = CliRunner().invoke(migrate_cmd, ["--squash", "--dir", str(source)])
    assert squashed.exit_code == 0, squashed.output
    (baseline,) = load_migrations(source)
    assert [r.filename for r in baseline.replaces] == [
        "0001_without_view.sql",
        "0001_baseline.sql",
        "0002_add_view.sql",
    ]
    assert baseline.sql.endswith(body)
    with LedgerStore.open(ledger_settings(tmp_path / "data")) as store:
        store.select_database(store.database)
        assert [m.filename for m in migrate(store, one_by_one)] == [
            "0001_baseline.sql",
            "0002_add_view.sql",
        ]
        assert migrate(store, [baseline]) == []
        assert status_lines([baseline], applied_migrations(store))[0].endswith(
            "as 0001_baseline.sql .. 0002_add_view.sql, which it replaces"
        )
