"""The change-set computation's cost for `shipledger bench --only changes`: what the sink
spends per finished deployment (docs/changes.md), over a ledger of N deployments of S services,
each service its own repository with a linear history of pushes (three commits between two
deployments) and, for every commit, the paths it changed (the monorepo filter runs on them).

The ledger's rows are generated inside ClickHouse (`numbers()`), as the DORA bench does: the
computation only reads `deployment_records` and `source_events`, however they were written.
Timed: `ChangeSets.compute` for one deployment at a time (a flush holding one finished
deployment) and for batches of 50 (a busy flush), per deployment."""

from __future__ import annotations

import shutil
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from shipledger.lab.percentiles import p50_p99
from shipledger.schemas.policy import Policy
from shipledger.settings import Settings
from shipledger.sinks.ledger.change_sets import ChangeSets, Deployed
from shipledger.sinks.ledger.ddl import RECORDS, SOURCE
from shipledger.sinks.ledger.store import LedgerStore

SERVICES = 200
#: Commits pushed between two deployments of a service.
COMMITS_PER_DEPLOYMENT = 3
FIRST_DAY = date(2026, 1, 1)
BATCH = 50

# Commit j of repository r: a 40-hex SHA from two hashes.
_SHA = "lower(concat(hex(cityHash64({r}, {j})), hex(cityHash64({j}, {r})), substring(hex(cityHash64({r} + {j})), 1, 8)))"  # noqa: E501
# Push n: repository n % S, its commit j = n / S, every push one commit, 10 minutes apart.
_PUSHES = (
    f"INSERT INTO {SOURCE} (tenant, event_id, kind, repository, ref, commit_sha, previous_sha,\n"  # noqa: S608
    "    commit_shas, author, changed_paths, occurred_at, retain_until)\n"
    "SELECT 'acme', concat('push-', toString(n)), 'push', concat('acme/svc-', toString(r)),\n"
    f"    'refs/heads/main', {_SHA.format(r='r', j='j')},\n"
    f"    if(j = 0, NULL, {_SHA.format(r='r', j='j - 1')}), [{_SHA.format(r='r', j='j')}],\n"
    "    'dev', map(" + _SHA.format(r="r", j="j") + ",\n"
    "        [concat('services/svc-', toString(r), '/src/f', toString(j % 7), '.py')]),\n"
    "    toDateTime64({first}, 3, 'UTC') + INTERVAL (j * 10) MINUTE,\n"
    "    toDateTime64('2100-01-01', 3, 'UTC')\n"
    "FROM (SELECT number AS n, n % {services} AS r, intDiv(n, {services}) AS j\n"
    "    FROM numbers({pushes}))"
)
# Deployment k of service r ships commit (k + 1) * C - 1 of its repository, 5 minutes after.
_RECORDS = (
    f"INSERT INTO {RECORDS} (tenant, deployment_id, record_id, seq, status, kind, service,\n"  # noqa: S608
    "    environment, environment_raw, repository, commit_sha, actor, `trigger`,\n"
    "    policy_version, started_at, finished_at, updated_at, event_count, last_event_id,\n"
    "    last_event_type, retain_until)\n"
    "SELECT 'acme', concat('d', toString(n)), concat('d', toString(n)), 1, 'succeeded',\n"
    "    'release', concat('svc-', toString(r)), 'prod', 'prod',\n"
    "    concat('acme/svc-', toString(r)),\n"
    f"    {_SHA.format(r='r', j='j')}, 'bench', 'automated', 'p-1', start,\n"
    "    start + INTERVAL 2 MINUTE, start + INTERVAL 2 MINUTE, 2, concat('d', toString(n)),\n"
    "    'succeeded', toDateTime64('2100-01-01', 3, 'UTC')\n"
    "FROM (SELECT number AS n, n % {services} AS r, intDiv(n, {services}) AS k,\n"
    "        (k + 1) * {per} - 1 AS j,\n"
    "        toDateTime64({first}, 3, 'UTC') + INTERVAL (j * 10 + 5) MINUTE AS start\n"
    "    FROM numbers({deployments}))"
)


def bench_changes(deployments: int = 20_000, samples: int = 100) -> dict[str, Any]:
    """Build a ledger of `deployments`, then time the change sets of the `samples` latest
    deployments one by one and in batches of 50: ms per deployment, p50 and p99."""
    tmp = Path(tempfile.mkdtemp(prefix="shipledger-changes-bench-"))
    try:
        with LedgerStore.open(Settings(data_dir=tmp, log_level="warning")) as store:
            store.ensure_schema()
            values = {
                "first": f"'{FIRST_DAY.isoformat()}'",
                "services": SERVICES,
                "per": COMMITS_PER_DEPLOYMENT,
                "deployments": deployments,
                "pushes": deployments * COMMITS_PER_DEPLOYMENT,
            }
            started = time.perf_counter()
            store.command(_PUSHES.format(**values))
            store.command(_RECORDS.format(**values))
            load_s = time.perf_counter() - started
            names, rows = store.query(
                f"SELECT * FROM {RECORDS} ORDER BY started_at DESC LIMIT {{n:UInt32}}",  # noqa: S608
                {"n": samples},
            )
            latest = [Deployed.of(dict(zip(names, row, strict=True))) for row in rows]
            targets = [d for d in latest if d is not None]
            policy = Policy.model_validate(
                {
                    "version": "bench",
                    "monorepos": {
                        f"acme/svc-{r}": {f"svc-{r}": [f"services/svc-{r}/**"]}
                        for r in range(SERVICES)
                    },
                }
            )
            sets = ChangeSets(store, policy)
            # The client's first insert imports its column libraries (~2 s, once a process).
            sets.compute(targets[:1])
            single = []
            for d in targets:
                began = time.perf_counter()
                sets.compute([d])
                single.append((time.perf_counter() - began) * 1000)
            batched = []
            for i in range(0, len(targets), BATCH):
                chunk = targets[i : i + BATCH]
                began = time.perf_counter()
                sets.compute(chunk)
                batched.append((time.perf_counter() - began) * 1000 / len(chunk))
            _, counts = store.query("SELECT avg(commit_count) FROM deployment_change_sets")
            return {
                "deployments": deployments,
                "services": SERVICES,
                "source_events": deployments * COMMITS_PER_DEPLOYMENT,
                "samples": len(single),
                "load_s": round(load_s, 1),
                "commits_per_set": round(float(counts[0][0]), 1),
                "per_deployment_ms": p50_p99(single, 2),
                "per_deployment_in_batches_of_50_ms": p50_p99(batched, 2),
            }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
