"""The cost of the read-query guard: a typical tenant query through `run_read_query` (the
engine's normalization, two `EXPLAIN AST`, the allow-list, a read-only capped session, the
tenant filter) beside the same SQL run straight on the store's client, over a ledger built
the way the sink stores rows. `shipledger bench --only query` runs it."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shipledger.lab.bench_sink import sample_events
from shipledger.lab.percentiles import p50_p99
from shipledger.schemas.policy import load_policy
from shipledger.schemas.scopes import RowScope
from shipledger.settings import Settings
from shipledger.sinks.ledger import query_guard, tiers
from shipledger.sinks.ledger.ddl import EVENTS
from shipledger.sinks.ledger.query import QueryLimits, policy_for, run_read_query
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.sinks.rows import KafkaMeta, event_row
from shipledger.sinks.writer import LedgerWriter

#: What a dashboard asks of its own tenant: last week's deployments and failures per service.
TYPICAL = (
    "SELECT service, environment, count() AS events, countIf(event_type = 'failed') AS failed "
    "FROM deployment_events WHERE occurred_at > now() - INTERVAL 7 DAY "
    "GROUP BY service, environment ORDER BY events DESC LIMIT 20"
)


def bench_query(events: int = 200_000, samples: int = 200) -> dict[str, Any]:
    """p50/p99 (ms) of `TYPICAL` as tenant `acme` through `run_read_query`, as an operator,
    straight on the store's client (no guard, no session), and of the allow-list check alone
    (pure Python over the `EXPLAIN AST` rows)."""
    tmp = Path(tempfile.mkdtemp(prefix="shipledger-query-bench-"))
    settings = Settings(data_dir=tmp, log_level="warning")
    limits = QueryLimits.of(settings)
    try:
        with LedgerStore.open(settings) as store:
            store.ensure_schema()
            rows = [
                event_row(e.to_avro(), KafkaMeta("raw", 0, i, None))
                for i, e in enumerate(sample_events(events))
            ]
            LedgerWriter(store, load_policy(settings.policy_file)).write_rows({EVENTS: rows})
            database = tiers.query_database(store)
            wrapped = f"SELECT * FROM ({TYPICAL}) LIMIT 1001"  # noqa: S608
            canonical = str(
                store.query("SELECT formatQuerySingleLine(%(q)s)", {"q": TYPICAL})[1][0][0]
            )
            tree = [str(r[0]) for r in store.query(f"EXPLAIN AST {wrapped}")[1]]
            policy = policy_for(store, database, RowScope("acme"))

            def tenant() -> None:
                run_read_query(store, TYPICAL, tenant="acme", max_rows=1000, limits=limits)

            def operator() -> None:
                run_read_query(store, TYPICAL, tenant=None, max_rows=1000, limits=limits)

            # The same rows (the query database's hot+cold view), no guard, no session.
            qualified = TYPICAL.replace("FROM deployment_events", f"FROM {database}.{EVENTS}")

            def direct() -> None:
                store.query(qualified)

            def check_only() -> None:
                query_guard.check(tree, canonical, policy)

            return {
                "events": events,
                "samples": samples,
                "query": TYPICAL,
                "tenant_run_read_query_ms": _timed(tenant, samples),
                "operator_run_read_query_ms": _timed(operator, samples),
                "direct_on_store_client_ms": _timed(direct, samples),
                "allow_list_check_only_ms": _timed(check_only, samples, digits=3),
            }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _timed(call: Callable[[], None], samples: int, digits: int = 1) -> dict[str, float]:
    call()  # warm-up: caches, the function catalog
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return p50_p99(times, digits)
