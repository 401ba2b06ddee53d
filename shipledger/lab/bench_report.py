"""The monthly compliance pack's generation time for `shipledger bench --only report`: one
month of production deployments out of the benchmarks' large ledger
(`bench_ledger.synthetic_ledger`), every
file written and the manifest signed, as `shipledger report monthly` does."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shipledger.lab.bench_ledger import TENANT
from shipledger.report.pack import generate
from shipledger.sinks.ledger.reader import LedgerReader
from shipledger.sinks.ledger.store import LedgerStore

#: The month packed: the synthetic ledger spreads deployments over 2026.
MONTH = "2026-06"


def bench_report(store: LedgerStore) -> dict[str, Any]:
    """The time the pack of one month of one tenant takes over `store` (the synthetic
    ledger)."""
    out = Path(tempfile.mkdtemp(prefix="shipledger-report-bench-"))
    try:
        began = time.perf_counter()
        summary = generate(LedgerReader(store), MONTH, TENANT, out, Ed25519PrivateKey.generate())
        seconds = time.perf_counter() - began
        return {
            "month": MONTH,
            "month_prod_deployments": summary.deployments,
            "pack_s": round(seconds, 2),
            "pack_bytes": sum(p.stat().st_size for p in out.iterdir()),
        }
    finally:
        shutil.rmtree(out, ignore_errors=True)
