"""Chaos at start-up: kill -9 of `shipledger up` again and again while it starts (migrate,
restore of the state and the journal, worker join), with events acknowledged between the kills,
loses nothing acknowledged and stores nothing twice.

`test_chaos` kills a serving `up`; here most kills land before `up` serves: a restore that is
cut short must be redone whole by the next start. SHIPLEDGER_CHAOS_SEED picks the run.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from shipledger.settings import Settings
from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.store import LedgerStore
from tests.integration.test_chaos import Up, chaos_rng, ingest_token, repeated_ids
from tests.kit import api_deployment, ledger_settings, run_shipledger, up_env

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

#: Rounds of kills: 3 in `make test` (about a minute), 6 in `make chaos`.
ROUNDS = int(os.environ.get("SHIPLEDGER_CHAOS_ROUNDS") or 3)
PER_ROUND = 20  # deployments acknowledged while `up` serves, before the next kills


def api_stack(data: Path, log: Path) -> tuple[Settings, dict[str, str], dict[str, str], Up]:
    """A stack keeping its data in `data` (not started), with the API unthrottled: its
    settings, environment, the headers of an ingest token for every tenant, and `up`."""
    settings = ledger_settings(data, topic_partitions=2)
    env = up_env(data, SHIPLEDGER_API_RATE_PER_S="100000", SHIPLEDGER_API_RATE_BURST="100000")
    data.mkdir(parents=True)
    headers = {"Authorization": f"Bearer {ingest_token(settings)}"}
    return settings, env, headers, Up(env, settings, log)


def test_kill_9_during_start_up_loses_nothing(tmp_path: Path) -> None:
    seed, rng = chaos_rng("chaos restarts")
    data = tmp_path / "data"
    settings, env, headers, up = api_stack(data, tmp_path / "up.log")
    acked: list[str] = []
    try:
        for round_ in range(ROUNDS):
            up.start()
            url = up.ready()
            for n in range(PER_ROUND):
                dep = f"r{round_}-{n}"
                body = {"events": api_deployment(dep, f"svc-{n % 3}", [("started", "")])}
                body["events"][0].pop("occurred_at")
                answer = httpx.post(f"{url}/v1/events", json=body, headers=headers, timeout=60)
                assert answer.status_code == 202, answer.text
                acked.append(f"{dep}-started")
            up.kill()
            # Starts cut short at random moments: migrate, restore, worker join.
            for _ in range(rng.randint(1, 3)):
                up.start()
                time.sleep(rng.uniform(0.2, 6.0))
                up.kill()
        up.start()
        up.ready()
    finally:
        tail = up.stop() if up.proc is not None and up.proc.poll() is None else up.tail()
    # As in test_chaos: a drain cut short by a worker redoing a batch finishes at a next start.
    for _ in range(2):
        if "shipledger stopped cleanly." in tail.splitlines()[-1]:
            break
        up.start()
        up.ready()
        tail = up.stop()
    assert "shipledger stopped cleanly." in tail, tail
    ids, duplicated = stored_events(settings)
    lost = sorted(set(acked) - ids)
    print(f"seed={seed} acked={len(acked)} lost={len(lost)} duplicated={duplicated}")
    assert not lost, lost[:10]
    assert duplicated == 0
    verify = run_shipledger("audit", "verify", "--data-dir", str(data), env=env, timeout_s=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def stored_events(settings: Settings) -> tuple[set[str], int]:
    """The event ids of the stopped stack's ledger, and how many rows of any table repeat an
    id of their table."""
    with LedgerStore.open(settings) as store:
        duplicated = repeated_ids(store)
        _, rows = store.query(f"SELECT event_id FROM {ddl.EVENTS}")
    return {str(r[0]) for r in rows}, duplicated
