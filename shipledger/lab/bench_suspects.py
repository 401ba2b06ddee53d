"""The incident-triage ranking's latency for `shipledger bench --only suspects`: suspects of
an incident over the benchmarks' large ledger (`bench_ledger.synthetic_ledger`: N deployments of
500 services over a year), with a catalog where every service depends on three others, so
one incident's candidates are the deployments of up to 40 services (three hops) in 24 h."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from shipledger.lab.bench_ledger import FIRST_DAY, SERVICES, TENANT
from shipledger.lab.percentiles import p50_p99
from shipledger.sinks.ledger.ddl import CATALOG
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.sinks.ledger.suspects import SuspectsQuery, read_suspects

# Service i depends on i+1, i+7 and i+31 (mod SERVICES): a connected graph with fan-out 3.
_CATALOG_SQL = (
    f"INSERT INTO {CATALOG} (tenant, event_id, occurred_at, entity, action, name,\n"
    "    owner_team, dependencies, retain_until)\n"
    "SELECT 'acme', concat('cat-', toString(number)), toDateTime64({first}, 3, 'UTC'),\n"
    "    'service', 'created', concat('svc-', toString(number)),\n"
    "    concat('team-', toString(number % 50)),\n"
    "    arrayMap(d -> concat('svc-', toString((number + d) % {services})), [1, 7, 31]),\n"
    "    toDateTime64('2100-01-01', 3, 'UTC')\n"
    "FROM numbers({services})"
)


def bench_suspects(store: LedgerStore, samples: int = 200) -> dict[str, Any]:
    """p50/p99 (ms) of the suspects of `samples` incidents (a service and a time each, spread
    over the year) over `store` (the synthetic ledger, given a catalog here), each read as
    `GET /v1/suspects` reads it."""
    store.command(_CATALOG_SQL.format(first=f"'{FIRST_DAY.isoformat()}'", services=SERVICES))
    first = datetime(FIRST_DAY.year, FIRST_DAY.month, FIRST_DAY.day, tzinfo=UTC)
    timings: list[float] = []
    candidates = 0
    for index in range(samples + 5):  # the first five warm the caches
        query = SuspectsQuery(
            tenant=TENANT,
            service=f"svc-{index * 37 % SERVICES}",
            at=first + timedelta(days=30 + index * 3 % 300, hours=index % 24),
            limit=10,
        )
        began = time.perf_counter()
        found = read_suspects(store, query)
        if index >= 5:
            timings.append((time.perf_counter() - began) * 1000)
            candidates += len(found)
    return {
        "samples": samples,
        "suspects_per_incident": round(candidates / samples, 1),
        "suspects_ms": p50_p99(timings),
    }
