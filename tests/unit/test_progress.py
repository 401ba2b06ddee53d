"""A worker's report of how far it acted on the enrichment topics (`processors.progress`)."""

from __future__ import annotations

from pathlib import Path

from shipledger.processors.progress import ProgressReport, read_progress, write_progress


def test_progress_round_trips_and_nothing_written_reads_as_none(tmp_path: Path) -> None:
    path = tmp_path / "workers" / "worker-0.progress.json"
    assert read_progress(path) is None
    write_progress(path, {("t.changes", 1): 7, ("t.changes", 0): 0})
    assert read_progress(path) == {("t.changes", 0): 0, ("t.changes", 1): 7}
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


def test_a_report_is_written_first_even_empty_then_only_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "progress.json"
    report = ProgressReport(path)
    report.report({})  # topics with no message yet: the worker still says it is there
    assert read_progress(path) == {}
    path.unlink()
    report.report({})
    assert not path.exists()
    report.report({("t.changes", 0): 3})
    assert read_progress(path) == {("t.changes", 0): 3}


def test_no_file_configured_writes_nothing(tmp_path: Path) -> None:
    ProgressReport(None).report({("t.changes", 0): 3})
    assert list(tmp_path.iterdir()) == []
