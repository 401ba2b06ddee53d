"""The DORA report's latency for `shipledger bench --only dora`: one team's quarter, weekly,
over a ledger of N deployments (two records each, a tenth failed, one in twenty rolled back,
a commit pushed hours before each), folded by the materialized views as rows are inserted.

The rows are generated inside ClickHouse (`numbers()`) rather than by the sink's writer: at
10 million deployments the writer's hash chain would take most of an hour, and the views fire
on any insert into `deployment_records`, so the aggregates are built the same way."""

from __future__ import annotations

import shutil
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from shipledger.settings import Settings
from shipledger.sinks.ledger.ddl import RECORDS, SOURCE
from shipledger.sinks.ledger.dora import DoraQuery, read_dora
from shipledger.sinks.ledger.store import LedgerStore

TEAMS = 50
SERVICES = 500
DAYS = 365
FIRST_DAY = date(2026, 1, 1)
#: Rows per INSERT ... SELECT: each one block through the views.
CHUNK = 1_000_000

# One deployment n: service n % SERVICES (owned by team service % TEAMS), environment by
# n % 3, started intHash32(n) % DAYS days after FIRST_DAY; seq 1 in progress, seq 2 its outcome.
_RECORDS = (
    f"INSERT INTO {RECORDS} (tenant, deployment_id, record_id, seq, status, kind, service,\n"  # noqa: S608
    "    environment, environment_raw, team, commit_sha, actor, `trigger`, policy_version,\n"
    "    started_at, finished_at, updated_at, event_count, last_event_id, last_event_type,\n"
    "    rollback_of, retain_until)\n"
    "SELECT 'acme', concat('d', toString(n)), concat('d', toString(n), '-', toString(s)), s,\n"
    "    if(s = 1, 'in_progress', if(n % 10 = 3, 'failed', 'succeeded')),\n"
    "    if(n % 20 = 7, 'rollback', 'release'), concat('svc-', toString(n % {services})),\n"
    "    ['prod', 'stage', 'dev'][n % 3 + 1], 'prod',\n"
    "    concat('team-', toString(n % {services} % {teams})),\n"
    "    hex(cityHash64(n)), 'bench', 'automated', 'p-1', start,\n"
    "    if(s = 1, NULL, start + INTERVAL 10 MINUTE), start + INTERVAL (s * 10) MINUTE, s,\n"
    "    concat('d', toString(n), '-', toString(s)), if(s = 1, 'started', 'succeeded'),\n"
    "    if(n % 20 = 7, concat('d', toString(n - 1)), NULL), toDateTime64('2100-01-01', 3, 'UTC')\n"
    "FROM (SELECT number AS n,\n"
    "        toDateTime64({first}, 3, 'UTC') + INTERVAL (intHash32(n) % {days}) DAY\n"
    "        + INTERVAL (n % 1440) MINUTE AS start FROM numbers({offset}, {count}))\n"
    "ARRAY JOIN [1, 2] AS s"
)
_PUSHES = (
    f"INSERT INTO {SOURCE} (tenant, event_id, kind, repository, commit_sha, occurred_at,\n"
    "    retain_until)\n"
    "SELECT 'acme', concat('push-', toString(number)), 'push', 'acme/app',\n"
    "    hex(cityHash64(number)),\n"
    "    toDateTime64({first}, 3, 'UTC') + INTERVAL (intHash32(number) % {days}) DAY\n"
    "        + INTERVAL (number % 1440) MINUTE - INTERVAL 3 HOUR,\n"
    "    toDateTime64('2100-01-01', 3, 'UTC')\n"
    "FROM numbers({offset}, {count})"
)


def load_deployments(store: LedgerStore, deployments: int) -> float:
    """Fill `store` with `deployments` deployments (and a push before each), as above; the
    seconds it took. Other ledger benchmarks (`bench_suspects`) load the same ledger."""
    started = time.perf_counter()
    for offset in range(0, deployments, CHUNK):
        values = {
            "first": f"'{FIRST_DAY.isoformat()}'",
            "days": DAYS,
            "teams": TEAMS,
            "services": SERVICES,
            "offset": offset,
            "count": min(CHUNK, deployments - offset),
        }
        store.command(_PUSHES.format(**values))
        store.command(_RECORDS.format(**values))
    return time.perf_counter() - started


def bench_dora(deployments: int = 10_000_000, samples: int = 50) -> dict[str, Any]:
    """Build a ledger of `deployments` (timing the inserts through the views), then p50/p99
    (ms) of the weekly DORA report of one team's quarter, `samples` runs."""
    tmp = Path(tempfile.mkdtemp(prefix="shipledger-dora-bench-"))
    try:
        with LedgerStore.open(Settings(data_dir=tmp, log_level="warning")) as store:
            store.ensure_schema()
            load_s = load_deployments(store, deployments)
            quarter = DoraQuery(
                since=FIRST_DAY + timedelta(days=90),
                until=FIRST_DAY + timedelta(days=180),
                period="week",
                tenant="acme",
                teams=("team-7",),
            )
            rows = read_dora(store, quarter)
            timings = []
            for _ in range(samples):
                began = time.perf_counter()
                read_dora(store, quarter)
                timings.append((time.perf_counter() - began) * 1000)
            timings.sort()
            return {
                "deployments": deployments,
                "samples": samples,
                "load_s": round(load_s, 1),
                "team_quarter_rows": len(rows),
                "team_quarter_deployments": sum(r.deployments for r in rows),
                "team_quarter_ms": {
                    "p50": round(timings[len(timings) // 2], 1),
                    "p99": round(timings[min(len(timings) - 1, int(len(timings) * 0.99))], 1),
                },
            }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
