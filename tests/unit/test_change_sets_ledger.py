"""`ChangeSets.compute` on a real chDB ledger: the previous succeeded deployment is found
when it started before the batch's first deployment, where the read keeps only the latest
two of those (`ChangeSets._succeeded`), the deployment itself among them included."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from shipledger.lab import bench_changes
from shipledger.schemas.policy import Policy
from shipledger.settings import Settings
from shipledger.sinks.ledger.change_sets import ChangeSets, Deployed, read_change_set
from shipledger.sinks.ledger.ddl import RECORDS
from shipledger.sinks.ledger.store import LedgerStore


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[tuple[LedgerStore, list[Deployed]]]:
    """Five succeeded deployments d0..d4 of one service, 30 minutes apart, each its commit
    (the change-set bench's records, no pushes)."""
    with LedgerStore.open(Settings(data_dir=tmp_path, log_level="warning")) as store:
        store.ensure_schema()
        store.command(
            bench_changes._RECORDS.format(first="'2026-01-01'", services=1, per=3, deployments=5)
        )
        names, rows = store.query(f"SELECT * FROM {RECORDS} ORDER BY started_at")
        found = [Deployed.of(dict(zip(names, row, strict=True))) for row in rows]
        yield store, [d for d in found if d is not None]


def _from(store: LedgerStore, d: Deployed) -> str | None:
    stored = read_change_set(store, d.tenant, d.deployment_id)
    assert stored is not None
    previous: str | None = stored.summary["previous_deployment_id"]
    return previous


def test_previous_started_before_the_batch_is_found(
    ledger: tuple[LedgerStore, list[Deployed]],
) -> None:
    store, deployed = ledger
    ChangeSets(store, Policy.model_validate({"version": "t"})).compute(deployed[3:])
    assert [_from(store, d) for d in deployed[3:]] == ["d2", "d3"]


def test_a_deployment_stored_earlier_than_it_starts_skips_itself(
    ledger: tuple[LedgerStore, list[Deployed]],
) -> None:
    # d2's record says it started a minute later than the ledger's: the latest deployment
    # started before the batch is d2 itself, the previous one is d1.
    store, deployed = ledger
    later = deployed[2]._replace(started_at=deployed[2].started_at + timedelta(minutes=1))
    ChangeSets(store, Policy.model_validate({"version": "t"})).compute([later])
    assert _from(store, later) == "d1"
