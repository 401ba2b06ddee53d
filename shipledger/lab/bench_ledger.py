"""A synthetic ledger of N deployments for the benchmarks that read a large ledger (`bench
--only dora`, `--only report`): one tenant (`acme`), two records each (in progress, then the
outcome; a tenth failed, one in twenty a rollback), spread over a year, a commit pushed hours
before each, and the verification verdict and change set each has in a ledger that ran that
year.

The rows are generated inside ClickHouse (`numbers()`) rather than by the sink's writer: at
10 million deployments the writer's hash chain would take most of an hour, and the
materialized views fire on any insert into `deployment_records`, so the DORA aggregates are
built the same way. The rows are not chained (chain columns zero): no benchmark verifies them."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

from shipledger.settings import Settings
from shipledger.sinks.ledger.ddl import CHANGE_SETS, RECORDS, SOURCE
from shipledger.sinks.ledger.ddl import DEPLOYMENT_VERIFICATIONS as VERIFICATIONS
from shipledger.sinks.ledger.store import LedgerStore

TENANT = "acme"
TEAMS = 50
SERVICES = 500
DAYS = 365
FIRST_DAY = date(2026, 1, 1)
#: Rows per INSERT ... SELECT: each one block through the views.
CHUNK = 1_000_000

#: Deployment n and its start (`start`, within the year): what every insert below derives its
#: rows from (its records and, as a year's ledger has them, its verdict and change set).
_DEPLOYMENTS = (
    "FROM (SELECT number AS n,\n"
    "        toDateTime64({first}, 3, 'UTC') + INTERVAL (intHash32(n) % {days}) DAY\n"
    "        + INTERVAL (n % 1440) MINUTE AS start FROM numbers({offset}, {count}))"
)
# One deployment n: service n % SERVICES (owned by team service % TEAMS), environment by
# n % 3, started intHash32(n) % DAYS days after FIRST_DAY; seq 1 in progress, seq 2 its outcome.
_RECORDS = (
    f"INSERT INTO {RECORDS} (tenant, deployment_id, record_id, seq, status, kind, service,\n"
    "    environment, environment_raw, team, commit_sha, actor, `trigger`, policy_version,\n"
    "    started_at, finished_at, updated_at, event_count, last_event_id, last_event_type,\n"
    "    rollback_of, retain_until)\n"
    f"SELECT '{TENANT}', concat('d', toString(n)), concat('d', toString(n), '-', toString(s)),\n"
    "    s, if(s = 1, 'in_progress', if(n % 10 = 3, 'failed', 'succeeded')),\n"
    "    if(n % 20 = 7, 'rollback', 'release'), concat('svc-', toString(n % {services})),\n"
    "    ['prod', 'stage', 'dev'][n % 3 + 1], 'prod',\n"
    "    concat('team-', toString(n % {services} % {teams})),\n"
    "    hex(cityHash64(n)), 'bench', 'automated', 'p-1', start,\n"
    "    if(s = 1, NULL, start + INTERVAL 10 MINUTE), start + INTERVAL (s * 10) MINUTE, s,\n"
    "    concat('d', toString(n), '-', toString(s)), if(s = 1, 'started', 'succeeded'),\n"
    "    if(n % 20 = 7, concat('d', toString(n - 1)), NULL), toDateTime64('2100-01-01', 3, 'UTC')\n"
    + _DEPLOYMENTS
    + "\nARRAY JOIN [1, 2] AS s"
)
_PUSHES = (
    f"INSERT INTO {SOURCE} (tenant, event_id, kind, repository, commit_sha, occurred_at,\n"
    "    retain_until)\n"
    f"SELECT '{TENANT}', concat('push-', toString(number)), 'push', 'acme/app',\n"
    "    hex(cityHash64(number)),\n"
    "    toDateTime64({first}, 3, 'UTC') + INTERVAL (intHash32(number) % {days}) DAY\n"
    "        + INTERVAL (number % 1440) MINUTE - INTERVAL 3 HOUR,\n"
    "    toDateTime64('2100-01-01', 3, 'UTC')\n"
    "FROM numbers({offset}, {count})"
)


def settled(store: LedgerStore, timeout_s: float = 600.0) -> float:
    """Wait until ClickHouse has no merge running in `store`'s database (at most `timeout_s`);
    the seconds waited. A freshly loaded ledger merges its parts in the background for a while:
    a query timed meanwhile measures the merges' contention, not the steady state a ledger
    that grew over months is in."""
    began = time.perf_counter()
    sql = "SELECT count() FROM system.merges WHERE database = currentDatabase()"
    while store.query(sql)[1][0][0] and time.perf_counter() - began < timeout_s:
        time.sleep(0.5)
    return time.perf_counter() - began


# What a ledger that ran for a year also holds for each deployment, and the suspects ranking
# looks up by id: a verification verdict and a change set (3 commits).
_VERDICTS = (
    f"INSERT INTO {VERIFICATIONS} (tenant, deployment_id, service, environment, verdict,\n"
    "    score, evidence, window_end, decided_at, window_start, check_count, policy_version,\n"
    "    team, started_at, retain_until)\n"
    f"SELECT '{TENANT}', concat('d', toString(n)), concat('svc-', toString(n % {{services}})),\n"
    "    ['prod', 'stage', 'dev'][n % 3 + 1],\n"
    "    ['verified', 'suspect', 'unverified'][n % 3 + 1], 1.0, '{{}}',\n"
    "    start + INTERVAL 25 MINUTE, start + INTERVAL 26 MINUTE, start + INTERVAL 10 MINUTE, 1,\n"
    "    'p-1', concat('team-', toString(n % {services} % {teams})), start,\n"
    "    toDateTime64('2100-01-01', 3, 'UTC')\n" + _DEPLOYMENTS
)
_CHANGE_SETS = (
    f"INSERT INTO {CHANGE_SETS} (tenant, deployment_id, service, environment, from_sha, to_sha,\n"
    "    commit_count, pr_count, reverse, computed_at, status, deployed_at, complete, started_at,\n"
    "    retain_until)\n"
    f"SELECT '{TENANT}', concat('d', toString(n)), concat('svc-', toString(n % {{services}})),\n"
    "    ['prod', 'stage', 'dev'][n % 3 + 1], hex(cityHash64(n - 1)), hex(cityHash64(n)), 3, 1,\n"
    "    0, start + INTERVAL 11 MINUTE, 'succeeded', start + INTERVAL 10 MINUTE, 1, start,\n"
    "    toDateTime64('2100-01-01', 3, 'UTC')\n"
    + _DEPLOYMENTS
    # One partition a tenant and month: a year is more than the 100 one insert may write.
    + "\nSETTINGS max_partitions_per_insert_block = 0"
)


@contextmanager
def synthetic_ledger(deployments: int, prefix: str) -> Iterator[tuple[LedgerStore, float, float]]:
    """A fresh embedded ledger (in a temporary data dir named `prefix`..., removed after)
    holding `deployments` deployments, its background merges done, the seconds their
    inserts took and the seconds then waited for the merges (`settled`)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        with LedgerStore.open(Settings(data_dir=tmp, log_level="warning")) as store:
            store.ensure_schema()
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
                store.command(_VERDICTS.format(**values))
                store.command(_CHANGE_SETS.format(**values))
            load_s = time.perf_counter() - started
            yield store, load_s, settled(store)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
