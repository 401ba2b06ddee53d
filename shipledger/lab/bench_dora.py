"""The DORA report's latency for `shipledger bench --only dora`: one team's quarter, weekly,
over a ledger of N deployments (`bench_ledger.synthetic_ledger`), folded by the materialized
views as rows are inserted."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from shipledger.lab.bench_ledger import FIRST_DAY, TENANT, synthetic_ledger
from shipledger.sinks.ledger.dora import DoraQuery, read_dora


def bench_dora(deployments: int = 10_000_000, samples: int = 50) -> dict[str, Any]:
    """Build a ledger of `deployments` (timing the inserts through the views), then p50/p99
    (ms) of the weekly DORA report of one team's quarter, `samples` runs."""
    with synthetic_ledger(deployments, "shipledger-dora-bench-") as (store, load_s):
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
