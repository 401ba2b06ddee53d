"""`make bench` runs its sections one after another on one embedded stack: a smoke run of the
sections that share it, each tiny, so that one section's leftovers (topics, ledger rows, builds
published with the same ids) cannot break the next. Figures are not checked here: speed is
judged by `make bench` itself, never by timing assertions in tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.kit import run_shipledger, up_env

pytestmark = pytest.mark.integration

#: The stack's sections that publish to the pipeline, in `make bench`'s order, at toy sizes.
SECTIONS = ("pipeline", "gate", "stream")


def test_the_stack_sections_run_one_after_another(tmp_path: Path) -> None:
    """The stream section publishes the same build ids as the pipeline section (they derive
    from the digest): it used to wait for the builds' row count to grow, which a ledger that
    stores each id once never does."""
    out = tmp_path / "out"
    only = [arg for section in SECTIONS for arg in ("--only", section)]
    sizes = ("--events", "400", "--rate", "200", "--seconds", "2", "--gate-requests", "5")
    done = run_shipledger(
        "bench",
        "--out",
        str(out),
        *only,
        *sizes,
        "--stream-clients",
        "3",
        env=up_env(tmp_path / "data"),
        timeout_s=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert 0 < results["pipeline"]["throughput_events"] <= 400
    assert results["gate"]["requests"] == 5
    assert results["stream"]["deliveries"] == results["stream"]["deliveries_expected"] > 0
    assert "Live dashboard stream" in (out / "results.md").read_text(encoding="utf-8")
