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
    new_migration_file,
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
    with pytest.raises(MigrationError, match="nothing to squash"):
        baseline_migration([BASELINE], "SELECT 1;\n")


LATER = Migration(3, "next", "SELECT 3;\n")
#: The baseline squashed again with the file after it: ledgers recorded either history.
AGAIN = baseline_migration([BASELINE, LATER], "SELECT 13;\n")


def test_a_baseline_squashed_again_is_kept_in_the_new_header() -> None:
    assert AGAIN.filename == "0003_baseline.sql"
    assert [(r.filename, r.checksum) for r in AGAIN.replaces] == [
        *((m.filename, m.checksum) for m in OLD),
        ("0002_baseline.sql", BASELINE.checksum),
        ("0003_next.sql", LATER.checksum),
    ]
    assert "-- 0002_baseline.sql stands for 0001..0002: a ledger that applied" in AGAIN.sql


def test_a_ledger_at_the_earlier_baseline_is_at_the_new_one() -> None:
    """The common case: a ledger created from the earlier baseline, then migrated by the files
    after it (before the fix, a second squash was refused: such a ledger had no way on)."""
    check_history([AGAIN], _recorded(BASELINE, LATER))
    check_history([AGAIN], _recorded(*OLD, LATER))
    check_history([AGAIN], _recorded(AGAIN))
    check_history([AGAIN], {})
    assert status_lines([AGAIN], _recorded(BASELINE, LATER)) == [
        f"{'0003_baseline.sql':40} 2026-11-30T00:00:00+00:00 as 0002_baseline.sql .. "
        "0003_next.sql, which it replaces"
    ]
    with pytest.raises(MigrationError, match=r"this database is at migration 0002_baseline\.sql;"):
        check_history([AGAIN], _recorded(BASELINE))
    partway = r"at migration 0002_more\.sql; .* up to 0003_next\.sql"
    with pytest.raises(MigrationError, match=partway):
        check_history([AGAIN], _recorded(*OLD))
    edited = Migration(2, "baseline", BASELINE.sql + "-- edited\n")
    with pytest.raises(MigrationError, match=r"0002_baseline\.sql was changed after it was"):
        check_history([AGAIN], _recorded(edited, LATER))


def test_a_migration_cannot_be_named_baseline(tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="not 'baseline'"):
        new_migration_file(tmp_path, "baseline", "SELECT 1;\n", OLD)


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
    (tmp_path / "0003_baseline.sql").unlink()
    (tmp_path / "0002_baseline.sql").write_text(AGAIN.sql)  # names the 0002 baseline: not before
    with pytest.raises(MigrationError, match=r"replaces versions 0001\.\.0002, each once"):
        load_migrations(tmp_path)
    (tmp_path / "0002_baseline.sql").unlink()
    (tmp_path / AGAIN.filename).write_text(AGAIN.sql)
    assert load_migrations(tmp_path) == [AGAIN]


def test_history_judged_against_the_baseline() -> None:
    check_history([BASELINE, LATER], {})
    check_history([BASELINE, LATER], _recorded(BASELINE, LATER))
    check_history([BASELINE, LATER], _recorded(*OLD, LATER))
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
