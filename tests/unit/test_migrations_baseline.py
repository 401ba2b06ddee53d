"""A baseline migration in place of the files before it: how files are numbered around it and how
a ledger's recorded history is judged against its header (no database: see
tests/integration/test_migrations.py for the same on chDB)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from shipledger.sinks.ledger.migrate import (
    Applied,
    Migration,
    MigrationError,
    baseline_migration,
    check_history,
    load_migrations,
    status_lines,
)

OLD = [Migration(1, "initial", "SELECT 1;\n"), Migration(2, "more", "SELECT 2;\n")]
BASELINE = baseline_migration(OLD, "SELECT 12;\n")
AT = datetime(2026, 11, 30, tzinfo=UTC)


def _recorded(*migrations: Migration) -> dict[int, Applied]:
    return {m.version: Applied(m.version, m.name, m.checksum, AT) for m in migrations}


def test_the_baseline_names_each_replaced_file_and_its_checksum() -> None:
    assert BASELINE.filename == "0002_baseline.sql"
    assert BASELINE.sql.endswith(
        "is refused.\n"
        + "".join(f"-- replaces {m.filename} sha256 {m.checksum}\n" for m in OLD)
        + "\nSELECT 12;\n"
    )
    assert [(r.filename, r.checksum) for r in BASELINE.replaces] == [
        (m.filename, m.checksum) for m in OLD
    ]
    assert Migration(3, "later", "-- replaces nothing\n\nSELECT 3;\n").replaces == ()
    with pytest.raises(MigrationError, match="squashing a baseline again is not supported"):
        baseline_migration([BASELINE], "SELECT 1;\n")


def test_files_run_on_from_the_baseline(tmp_path: Path) -> None:
    (tmp_path / BASELINE.filename).write_text(BASELINE.sql)
    (tmp_path / "0003_next.sql").write_text("SELECT 3;\n")
    assert [m.version for m in load_migrations(tmp_path)] == [2, 3]
    (tmp_path / "0004_baseline.sql").write_text(baseline_migration(OLD, "SELECT 4;\n").sql)
    with pytest.raises(
        MigrationError, match=r"0004_baseline\.sql: only the first migration can be a baseline"
    ):
        load_migrations(tmp_path)


def test_a_baseline_must_replace_every_version_before_it(tmp_path: Path) -> None:
    (tmp_path / "0003_baseline.sql").write_text(BASELINE.sql)  # replaces 0001..0002 only
    with pytest.raises(MigrationError, match=r"replaces versions 0001\.\.0003, each once"):
        load_migrations(tmp_path)


def test_history_judged_against_the_baseline() -> None:
    later = Migration(3, "next", "SELECT 3;\n")
    check_history([BASELINE, later], {})
    check_history([BASELINE, later], _recorded(BASELINE, later))
    check_history([BASELINE, later], _recorded(*OLD, later))
    with pytest.raises(MigrationError, match=r"this database is at migration 0001_initial\.sql;"):
        check_history([BASELINE], _recorded(OLD[0]))
    with pytest.raises(MigrationError, match=r"0002_more\.sql was changed after it was applied"):
        check_history([BASELINE], _recorded(OLD[0], Migration(2, "more", "SELECT 22;\n")))
    with pytest.raises(MigrationError, match=r"0002_other is applied .* unknown"):
        check_history([BASELINE], _recorded(OLD[0], Migration(2, "other", "SELECT 2;\n")))


def test_status_shows_a_history_of_replaced_files_as_the_baseline() -> None:
    assert status_lines([BASELINE], _recorded(*OLD)) == [
        f"{'0002_baseline.sql':40} 2026-11-30T00:00:00+00:00 as 0001_initial.sql .. "
        "0002_more.sql, which it replaces"
    ]
    assert status_lines([BASELINE], _recorded(OLD[0])) == [f"{'0002_baseline.sql':40} pending"]
    changed = Migration(2, "baseline", BASELINE.sql + "-- edited\n")
    assert status_lines([changed], _recorded(BASELINE))[0].endswith("CHANGED SINCE APPLIED")
