"""`shipledger jobs` (the periodic jobs alone, as a production deployment runs them beside the
worker, the sink and the API: deploy/compose, deploy/k8s) on real components: a ledger written
by a real stack (Tansu, Faust, the chDB sink), stopped; then `shipledger jobs` as a child
process takes the jobs' lease on that broker, decides the verification verdicts, serves its
runs on /metrics, and stops on SIGTERM (test_jobs_lease: several of them)."""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from shipledger.settings import Settings
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.up.stack import Stack
from tests.kit import (
    SHA,
    SHIPLEDGER,
    api_token,
    ledger_settings,
    own_settings,
    post_events,
    query_until,
    run_shipledger,
    up_env,
    wait_for,
)

pytestmark = pytest.mark.integration

TENANT = "shop"
NOW = datetime.now(UTC).replace(microsecond=0)
_RUNS = re.compile(r'^shipledger_jobs_runs_total\{job="verifier",outcome="ok"\} (\S+)$', re.M)


def _ago(minutes: float) -> str:
    return (NOW - timedelta(minutes=minutes)).isoformat()


@pytest.fixture
def ledger(broker: str, tmp_path: Path) -> Iterator[Settings]:
    """A ledger where checkout succeeded in prod 20 minutes ago with a passing check in its
    window (15 min), written by a stack that decides no verdict itself, then stopped."""
    settings = own_settings(tmp_path, sink_batch_ms=100, verification_interval_s=0)
    common = {"deployment_id": "dep-1", "service": "checkout", "environment": "production"}
    common |= {"commit_sha": SHA, "actor": "ci-bot"}
    with Stack(settings, bootstrap=broker, log_dir=tmp_path / "logs", api=True) as stack:
        post_events(
            stack,
            api_token(settings, TENANT),
            TENANT,
            {**common, "event_type": "started", "occurred_at": _ago(22)},
            {**common, "event_type": "succeeded", "occurred_at": _ago(20)},
            {
                "family": "signal",
                "event_id": "check-1",
                "kind": "pipeline_finished",
                "service": "checkout",
                "environment": "production",
                "outcome": "success",
                "title": "smoke checkout",
                "occurred_at": _ago(17),
            },
        )
        query_until(
            stack,
            "SELECT (SELECT count() FROM deployment_records WHERE status = 'succeeded'),"
            " (SELECT count() FROM signal_events), (SELECT count() FROM deployment_verifications)",
            [(1, 1, 0)],
        )
    yield settings


def _verifier_runs(port: int) -> float:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return 0.0
    found = _RUNS.search(text)
    return float(found.group(1)) if found else 0.0


def test_jobs_decides_verdicts_serves_its_runs_and_stops_on_sigterm(
    ledger: Settings, broker: str, unused_port: int
) -> None:
    env = up_env(
        ledger.data_dir,
        SHIPLEDGER_BOOTSTRAP_SERVERS=broker,
        SHIPLEDGER_TOPIC_PREFIX=ledger.topic_prefix,
        SHIPLEDGER_VERIFICATION_INTERVAL_S="0.5",
        SHIPLEDGER_TRIAGE_INTERVAL_S="0",
        SHIPLEDGER_JOBS_METRICS_PORT=str(unused_port),
    )
    jobs = subprocess.Popen(
        [SHIPLEDGER, "jobs"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: jobs.poll() is not None or _verifier_runs(unused_port) >= 2, "2 runs")
        assert jobs.poll() is None, jobs.communicate()
        jobs.send_signal(signal.SIGTERM)
        out, err = jobs.communicate(timeout=60)
    finally:
        if jobs.poll() is None:
            jobs.kill()
    assert jobs.returncode == 0, err
    assert "shipledger jobs: verifier on " in out
    assert f"holds the lease ({ledger.topic_prefix}jobs-lease)" in out
    assert '"jobs_lease_taken"' in err and '"jobs_lease_released"' in err
    with LedgerStore.open(ledger_settings(ledger.data_dir), existing=True) as store:
        _, rows = store.query(
            "SELECT deployment_id, verdict, check_count FROM deployment_verifications"
        )
    # Decided once: the passes after the first find nothing new to write.
    assert rows == [("dep-1", "verified", 1)]


def test_jobs_with_every_job_off_says_which_settings_turn_them_on(ledger: Settings) -> None:
    env = up_env(
        ledger.data_dir,
        SHIPLEDGER_VERIFICATION_INTERVAL_S="0",
        SHIPLEDGER_TRIAGE_INTERVAL_S="0",
    )
    done = run_shipledger("jobs", env=env)
    assert done.returncode == 1
    assert "no job is turned on: set SHIPLEDGER_VERIFICATION_INTERVAL_S" in done.stderr


def test_jobs_without_a_broker_says_why_it_needs_one(ledger: Settings) -> None:
    done = run_shipledger("jobs", env=up_env(ledger.data_dir))
    assert done.returncode == 1
    assert "SHIPLEDGER_BOOTSTRAP_SERVERS is not set: the jobs run under a lease" in done.stderr


def test_jobs_without_a_ledger_says_so(tmp_path: Path) -> None:
    done = run_shipledger("jobs", env=up_env(tmp_path / "nothing-here"))
    assert done.returncode == 1
    assert "no ledger" in done.stderr, done.stderr
