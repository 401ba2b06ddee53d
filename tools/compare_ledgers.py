"""Compare the rows of two embedded ledgers, stamps aside: does a change leave the ledger an
import (or any writer) builds the same? E.g. the same file imported with main's .venv and with
a branch's, each into its own data dir:

    .venv/bin/python tools/compare_ledgers.py DATA_DIR_A DATA_DIR_B

Left out of the comparison: what depends on when a row was written or judged (`ledger_at`,
`retain_until`, `prev_retain_until`, the hashes that cover them, and the judging run's `now`:
`received_at`, `updated_at`, `detected_at`, `computed_at`). Every other column of every row of
every chained table and of the change sets is compared, rows matched by their table's id.
Exit code 0: the same rows."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from shipledger.settings import Settings
from shipledger.sinks.ledger.ddl import CHANGE_SETS, tables
from shipledger.sinks.ledger.store import LedgerStore

STAMPS = frozenset(
    {
        "ledger_at",
        "retain_until",
        "prev_retain_until",
        "row_hash",
        "prev_hash",
        "received_at",
        "updated_at",
        "detected_at",
        "computed_at",
    }
)


def _rows(data_dir: Path) -> dict[str, dict[tuple[Any, ...], dict[str, Any]]]:
    """Every table's rows without their stamps, by (tenant, id)."""
    found: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {}
    with LedgerStore.open(Settings(data_dir=data_dir), existing=True) as store:
        ids = {name: spec.id_column for name, spec in tables().items()}
        for name, id_column in {**ids, CHANGE_SETS: "deployment_id"}.items():
            source = store.source(name) if name in ids else name
            columns, rows = store.query(f"SELECT * FROM {source}")  # noqa: S608
            kept = [c for c in columns if c not in STAMPS]
            found[name] = {
                (row[columns.index("tenant")], row[columns.index(id_column)]): {
                    c: v for c, v in zip(columns, row, strict=True) if c in kept
                }
                for row in rows
            }
    return found


def main(first: Path, second: Path) -> int:
    """Print each table's row count and differences; 0 when the ledgers hold the same rows."""
    a, b = _rows(first), _rows(second)
    differences = 0
    for name in sorted(a):
        left, right = a[name], b.get(name, {})
        only = sorted(set(left) ^ set(right))
        changed = [key for key in left.keys() & right.keys() if left[key] != right[key]]
        print(
            f"{name}: {len(left):,} / {len(right):,} rows, {len(only)} unmatched, "
            f"{len(changed)} different"
        )
        for key in changed[:3]:
            diff = {
                c: (left[key][c], right[key].get(c))
                for c in left[key]
                if left[key][c] != right[key].get(c)
            }
            print(f"  {key}: {diff}")
        differences += len(only) + len(changed)
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
