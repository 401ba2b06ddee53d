"""The history import's rate for `shipledger bench --only import`: a file of N deployment
events (days of demo traffic, NDJSON as `shipledger import` reads it) into a fresh chDB ledger,
judged under the demo policy, then the same file again (what a resume after a crash costs:
every event found stored, skipped, not judged again).

Beside the rate: CPU seconds of the process (chDB's threads included) and the CPU cost per
event of each stage, in the thread that runs it (load-independent: comparable between runs on
a busy machine): reading (file, JSON), validating (the ingest API's model), asking the ledger
which events it holds and the records of deployments of earlier chunks, judging (the
processors' chain), building rows, and the sink's write path split into the id check, the
chain stamping, the inserts and the chain heads (the client's side: chDB's own threads are in
the process's CPU only), then the change sets."""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

from shipledger.history.judging import Judge
from shipledger.history.mapping import Defaults
from shipledger.history.run import Outcome, import_file, import_ledger
from shipledger.lab.traffic import day_of_traffic, demo_policy
from shipledger.processors.step import nobody_known
from shipledger.schemas.policy import load_policy
from shipledger.settings import Settings
from shipledger.sinks import writer
from shipledger.sinks.ledger.ddl import EVENTS
from shipledger.sinks.ledger.store import LedgerStore

TARGET_EVENTS_PER_S = 50_000
#: Events a day of demo traffic holds per unit of its scale.
_EVENTS_PER_SCALE = 264
_DAY = date(2026, 6, 3)
_T = TypeVar("_T")


def history_file(path: Path, events: int) -> int:
    """Write about `events` deployment events of demo traffic to `path` (NDJSON); how many."""
    written = 0
    with path.open("w", encoding="utf-8") as out:
        for event in day_of_traffic(_DAY, scale=math.ceil(events / _EVENTS_PER_SCALE)):
            out.write(json.dumps(event.model_dump(mode="json")) + "\n")
            written += 1
    return written


def _timed(
    seconds: defaultdict[str, float], name: str, call: Callable[..., _T]
) -> Callable[..., _T]:
    @functools.wraps(call)
    def timed(*args: Any, **kwargs: Any) -> _T:
        started = time.thread_time()
        try:
            return call(*args, **kwargs)
        finally:
            seconds[name] += time.thread_time() - started

    return timed


#: What is timed of the store (on the instance), and of the writer (its module's `stamp`).
_STORE_CALLS = ("existing_ids", "insert", "append_heads")
_STAMP = "stamp"


def _run(
    settings: Settings, store: LedgerStore, path: Path
) -> tuple[Outcome, float, defaultdict[str, float]]:
    """One import of `path` into `store`: its outcome, CPU seconds, and CPU seconds by call."""
    policy = load_policy(settings.policy_file)
    calls: defaultdict[str, float] = defaultdict(float)
    # Timed on this instance and this run only: the writer and change sets are the product's.
    for name in _STORE_CALLS:
        setattr(store, name, _timed(calls, name, getattr(store, name)))
    unstamped = getattr(writer, _STAMP)
    setattr(writer, _STAMP, _timed(calls, "chain", unstamped))
    try:
        ledger = import_ledger(settings, policy, store)
        judge = Judge(settings, policy, None, nobody_known, datetime.now(UTC))
        cpu = time.process_time()
        outcome = import_file(path, "ndjson", Defaults(), judge, ledger)
        return outcome, time.process_time() - cpu, calls
    finally:
        setattr(writer, _STAMP, unstamped)
        for name in _STORE_CALLS:
            delattr(store, name)


def _per_event_us(outcome: Outcome, calls: defaultdict[str, float]) -> dict[str, float]:
    events = max(outcome.events, 1)
    stages = {
        "read": outcome.stages["read"],
        "validate": outcome.stages["validate"],
        "lookup": outcome.stages["lookup"] - outcome.stages["records"],
        "records": outcome.stages["records"],
        "judge": outcome.stages["judge"],
        "rows": outcome.stages["rows"],
        # The store's id checks, less the import's own before judging (in `lookup`).
        "dedup": calls["existing_ids"] - outcome.stages["lookup"] + outcome.stages["records"],
        "chain": calls["chain"],
        "insert": calls["insert"],
        "chain_heads": calls["append_heads"],
        "change_sets": outcome.stages["change_sets"],
    }
    return {name: round(seconds / events * 1e6, 1) for name, seconds in stages.items()}


def bench_import(events: int = 100_000) -> dict[str, Any]:
    """Import a file of about `events` events into a fresh ledger, then again: the rates,
    CPU seconds and the cost per event of each stage (see the module docstring)."""
    tmp = Path(tempfile.mkdtemp(prefix="shipledger-import-bench-"))
    try:
        policy = tmp / "policy.yaml"
        policy.write_text(demo_policy(_DAY), encoding="utf-8")
        settings = Settings(data_dir=tmp, log_level="warning", policy_file=policy)
        path = tmp / "history.ndjson"
        written = history_file(path, events)
        with LedgerStore.open(settings) as store:
            store.ensure_schema()
            first, first_cpu, first_calls = _run(settings, store, path)
            again, again_cpu, _ = _run(settings, store, path)
            _, rows = store.query(f"SELECT count() FROM {EVENTS}")  # noqa: S608
        return {
            "events": written,
            "file_bytes": path.stat().st_size,
            "alerts": first.alerts,
            "seconds": round(first.seconds, 2),
            "events_per_second": round(first.rate),
            "target_events_per_second": TARGET_EVENTS_PER_S,
            "cpu_seconds": round(first_cpu, 2),
            "load_average": round(os.getloadavg()[0], 1),
            "per_event_us": _per_event_us(first, first_calls),
            "reimport": {
                "seconds": round(again.seconds, 2),
                "events_per_second": round(again.rate),
                "cpu_seconds": round(again_cpu, 2),
            },
            "stored_events": int(rows[0][0]),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def import_markdown(result: dict[str, Any]) -> list[str]:
    """The section of results.md."""
    met = "met" if result["events_per_second"] >= result["target_events_per_second"] else "not met"
    stages = ", ".join(f"{name} {us}" for name, us in result["per_event_us"].items())
    again = result["reimport"]
    return [
        f"History import (`shipledger import`, {result['events']:,} deployment events of NDJSON, "
        f"{result['file_bytes']:,} bytes, into a fresh chDB ledger, judged under the demo "
        f"policy: {result['alerts']:,} alerts): {result['events_per_second']:,} events/s "
        f"({result['seconds']} s wall, {result['cpu_seconds']} s CPU, load average "
        f"{result['load_average']}; target ≥ {result['target_events_per_second']:,} events/s: "
        f"{met}). CPU per event of each stage, µs: {stages}. "
        f"The same file again (a resume: every event found stored, skipped): "
        f"{again['events_per_second']:,} events/s ({again['cpu_seconds']} s CPU); "
        f"{result['stored_events']:,} events stored once.",
        "",
    ]
