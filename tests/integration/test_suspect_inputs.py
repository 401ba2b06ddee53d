"""The inputs of incident triage filed beside its candidates (`suspect_inputs`, docs/triage.md)
on real chDB: a verdict decided after the incident's first read, or again after its
deployment's start moved, is read beside the record it was decided for; a change set of a
replayed (unstamped) record gets the stored record's retention."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shipledger.schemas.policy import load_policy
from shipledger.sinks.ledger.change_sets import ChangeSets, Deployed
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.sinks.ledger.suspects import SuspectsQuery, read_suspects
from shipledger.up.verifier import verify_pass
from tests.kit import ledger_settings

pytestmark = pytest.mark.integration

AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

_RECORD = (
    "INSERT INTO deployment_records (tenant, deployment_id, record_id, seq, status, kind,\n"
    "    service, environment, environment_raw, commit_sha, actor, `trigger`, policy_version,\n"
    "    started_at, finished_at, updated_at, event_count, last_event_id, last_event_type,\n"
    "    retain_until)\n"
    "VALUES ('acme', {dep:String}, concat({dep:String}, '-', toString({seq:Int32})),\n"
    "    {seq:Int32}, {status:String}, 'release', 'checkout', 'prod', 'production',\n"
    "    {dep:String}, 'alice', 'automated', 'p-1', {start:DateTime64(3, 'UTC')},\n"
    "    {finished:Nullable(DateTime64(3, 'UTC'))}, {start:DateTime64(3, 'UTC')}, {seq:Int32},\n"
    "    'e', 'started', toDateTime64('2100-01-01', 3, 'UTC'))"
)


def _record(
    store: LedgerStore, dep: str, seq: int, start: datetime, finished: datetime | None = None
) -> None:
    status = "in_progress" if finished is None else "succeeded"
    params = {"dep": dep, "seq": seq, "status": status, "start": start, "finished": finished}
    store.command(_RECORD, params)


def _inputs(store: LedgerStore, at: datetime, lookback: timedelta) -> dict[str, tuple[object, ...]]:
    """Each suspect of checkout at `at`: its change size and verdict."""
    query = SuspectsQuery(tenant="acme", service="checkout", at=at, lookback=lookback)
    return {
        s.candidate.deployment_id: (s.candidate.commit_count, s.candidate.verdict)
        for s in read_suspects(store, query)
    }


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LedgerStore]:
    with LedgerStore.open(ledger_settings(tmp_path / "data")) as s:
        yield s


def test_a_verdict_decided_later_is_read_beside_its_record(store: LedgerStore) -> None:
    """No verdict yet: unknown. The verifier decides one (no check in the window:
    unverified): the next read has it. A late record moves the start an hour earlier: the
    next pass files the same verdict beside it, so a window holding only that start reads it."""
    store.ensure_schema()
    policy = load_policy(None)
    start, finished = AT - timedelta(minutes=30), AT - timedelta(minutes=25)
    _record(store, "d-1", 1, start)
    _record(store, "d-1", 2, start, finished)
    assert _inputs(store, AT, timedelta(hours=2)) == {"d-1": (None, None)}
    decided = verify_pass(store, policy, finished + timedelta(minutes=20))
    assert [d.verdict for d in decided] == ["unverified"]
    assert _inputs(store, AT, timedelta(hours=2)) == {"d-1": (None, "unverified")}

    _record(store, "d-1", 3, start - timedelta(hours=1), finished)
    assert _inputs(store, AT - timedelta(minutes=85), timedelta(minutes=15)) == {
        "d-1": (None, None)
    }
    assert len(verify_pass(store, policy, finished + timedelta(minutes=40))) == 1
    assert _inputs(store, AT - timedelta(minutes=85), timedelta(minutes=15)) == {
        "d-1": (None, "unverified")
    }
    assert verify_pass(store, policy, finished + timedelta(minutes=50)) == []  # nothing moved


def test_a_replayed_record_files_its_change_set_with_the_stored_retention(
    store: LedgerStore,
) -> None:
    """A flush replayed after a crash: the writer finds the record stored already and leaves
    it unstamped (no retain_until); its change set is still computed, filed with the stored
    record's retain_until."""
    store.ensure_schema()
    start = AT - timedelta(minutes=30)
    _record(store, "d-1", 1, start, AT - timedelta(minutes=20))
    row = {
        "tenant": "acme",
        "deployment_id": "d-1",
        "service": "checkout",
        "environment": "prod",
        "commit_sha": "d-1",
        "status": "succeeded",
        "started_at": start,
        "finished_at": AT - timedelta(minutes=20),
        "updated_at": start,
    }
    deployed = Deployed.of(row)
    assert deployed is not None and deployed.retain_until is None
    assert ChangeSets(store, load_policy(None)).compute([deployed]) == 1
    _, rows = store.query("SELECT started_at, retain_until FROM suspect_inputs")
    assert rows == [(start, datetime(2100, 1, 1, tzinfo=UTC))]
    assert _inputs(store, AT, timedelta(hours=1)) == {"d-1": (1, None)}
