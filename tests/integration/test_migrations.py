"""Schema migrations on a real chDB: they reproduce sinks/ledger/ddl.py exactly, are recorded, are
never rewritten, and `migrate --new` writes the next one from the difference."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from shipledger.settings import Settings
from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.migrate import (
    Migration,
    MigrationError,
    applied_migrations,
    compare,
    load_migrations,
    migrate,
    migrations_dir,
    next_migration,
    scratch_schemas,
)
from shipledger.sinks.ledger.migrate_cli import migrate as migrate_cmd
from shipledger.sinks.ledger.store import LedgerStore, StoreError

pytestmark = pytest.mark.integration


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LedgerStore]:
    with LedgerStore.open(Settings(data_dir=tmp_path / "data")) as s:
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
    """An older 0001 (no kafka_offset, no alerts, records sorted without region): the
    generated 0002 takes it to the desired schema."""
    initial = load_migrations()[0]
    old = _without(initial.sql, r"\n    `kafka_offset` [^\n]*")
    old = _without(old, r"CREATE TABLE `alerts`.*?;\n")
    old = old.replace(
        "ORDER BY (`tenant`, ifNull(`region`, ''), `environment`, `service`, `started_at`",
        "ORDER BY (`tenant`, `environment`, `service`, `started_at`",
    )
    assert old != initial.sql
    first = Migration(1, "initial", old)
    desired, migrated = scratch_schemas([first])
    sql = next_migration(desired, migrated)
    assert "ADD COLUMN `kafka_offset` Int64" in sql and "AFTER `kafka_partition`" in sql
    assert "CREATE TABLE `alerts`" in sql
    assert "EXCHANGE TABLES `deployment_records__rebuild` AND `deployment_records`" in sql
    assert "-- REVIEW:" in sql
    desired, migrated = scratch_schemas([first, Migration(2, "catch_up", sql)])
    assert compare(desired, migrated) == []


def test_migrations_are_recorded_and_applied_once(store: LedgerStore) -> None:
    names = [m.filename for m in load_migrations()]
    assert names[:2] == ["0001_initial.sql", "0002_contract_v2_and_families.sql"]
    assert store.ensure_schema() == names
    assert store.ensure_schema() == []
    row = applied_migrations(store)[1]
    assert (row.version, row.name) == (1, "initial")
    assert row.checksum == load_migrations()[0].checksum


def test_a_changed_applied_migration_is_an_error_naming_it(store: LedgerStore) -> None:
    store.ensure_schema()
    initial = load_migrations()[0]
    edited = Migration(1, "initial", initial.sql + "\n-- an innocent comment\n")
    with pytest.raises(MigrationError, match=r"0001_initial\.sql was changed after it was applied"):
        migrate(store, [edited])
    with pytest.raises(MigrationError, match="unknown to this shipledger"):
        migrate(store, [])


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
    assert "0001_initial.sql" in pending.output and "pending" in pending.output
    applied = runner.invoke(migrate_cmd, ["--data-dir", str(data)])
    assert applied.exit_code == 0 and "0001_initial.sql" in applied.output
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
    assert "CREATE VIEW `running_at`" in added.read_text()
