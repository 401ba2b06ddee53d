"""The DORA report's latency for `shipledger bench --only dora`: one team's quarter, weekly,
over the benchmarks' large ledger (`bench_ledger.synthetic_ledger`), folded by the
materialized views as its rows were inserted."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from shipledger.lab.bench_ledger import FIRST_DAY, TENANT
from shipledger.lab.percentiles import p50_p99
from shipledger.sinks.ledger.dora import DoraQuery, read_dora
from shipledger.sinks.ledger.store import LedgerStore


def bench_dora(store: LedgerStore, samples: int = 200) -> dict[str, Any]:
    """p50/p99 (ms) of the weekly DORA report of one team's quarter over `store` (the
    synthetic ledger), `samples` runs (with 50, the nearest-rank p99 was the slowest run)."""
    quarter = DoraQuery(
        since=FIRST_DAY + timedelta(days=90),
        until=FIRST_DAY + timedelta(days=180),
        period="week",
        tenant=TENANT,
        teams=("team-7",),
    )
    rows = read_dora(store, quarter)
    timings = []
    for _ in range(samples):
        began = time.perf_counter()
        read_dora(store, quarter)
        timings.append((time.perf_counter() - began) * 1000)
    return {
        "samples": samples,
        "team_quarter_rows": len(rows),
        "team_quarter_deployments": sum(r.deployments for r in rows),
        "team_quarter_ms": p50_p99(timings),
    }
