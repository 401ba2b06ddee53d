"""Chaos by SIGSTOP: `shipledger up`'s Faust worker, its Tansu broker or `up` itself (API and
sink) frozen longer than the consumer session timeout while events arrive through the API, then
let go (SIGCONT): every acknowledged event is in the ledger once, each deployment's record
continues across the pause, `audit verify` is clean.

A frozen member's session expires (the group rebalances without it) and its connections go
quiet; a frozen broker answers nobody. `test_chaos` only kills; this freezes.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.store import LedgerStore
from tests.integration.test_chaos import WORKER_CMDLINE
from tests.integration.test_chaos_restarts import api_stack, stored_events
from tests.kit import api_deployment, run_shipledger, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

START, END = "2026-11-24T11:00:00Z", "2026-11-24T11:05:00Z"
PAUSE_S = 15.0  # > session_timeout_s (6 s by default)


@pytest.mark.parametrize("target", ["worker", "broker", "up"])
def test_sigstop_longer_than_session_loses_nothing(tmp_path: Path, target: str) -> None:
    data = tmp_path / "data"
    settings, env, headers, up = api_stack(data, tmp_path / "up.log")
    up.start()
    url = up.ready()
    acked: list[str] = []
    deployments: list[str] = []
    stop = threading.Event()
    errors: list[str] = []

    def client(name: str) -> None:
        n = 0
        try:
            while not stop.is_set():
                dep = f"{name}-{n}"
                n += 1
                stages = [
                    ("started", "2026-11-24T11:00:00Z"),
                    ("succeeded", "2026-11-24T11:05:00Z"),
                ]
                for event in api_deployment(dep, "svc", stages):
                    while True:
                        try:
                            answer = httpx.post(
                                f"{url}/v1/events", json=event, headers=headers, timeout=60
                            )
                            if answer.status_code == 202:
                                acked.append(event["event_id"])
                                break
                            assert answer.status_code in (429, 503), answer.text
                        except httpx.HTTPError:
                            pass
                        time.sleep(0.2)
                deployments.append(dep)
                time.sleep(0.05)
        except BaseException as exc:
            errors.append(repr(exc))
            raise

    threads = [threading.Thread(target=client, args=(f"c{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(acked) >= 20, "the clients' first acknowledged events", 120)
        assert up.proc is not None
        marker = {"worker": WORKER_CMDLINE, "broker": b"tansu"}.get(target)
        pid = up.proc.pid if marker is None else up.child(marker)
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        time.sleep(PAUSE_S)  # the pause itself: longer than the session timeout
        os.kill(pid, signal.SIGCONT)
        resumed = len(acked)
        wait_for(lambda: len(acked) >= resumed + 20, "acknowledged events after the pause", 120)
        stop.set()
        for thread in threads:
            thread.join(timeout=180)
        assert not errors, errors
    finally:
        stop.set()
        tail = up.stop() if up.proc is not None and up.proc.poll() is None else up.tail()
    assert "shipledger stopped cleanly." in tail.splitlines()[-1], tail
    ids, duplicated = stored_events(settings)
    with LedgerStore.open(settings) as store:
        _, rows = store.query(
            "SELECT deployment_id, status, event_count FROM "
            + ddl.qualified(store.database, "deployments")
        )
        records = {str(d): (str(s), int(c)) for d, s, c in rows}
    lost = sorted(set(acked) - ids)
    wrong = [d for d in deployments if records.get(d) != ("succeeded", 2)]
    print(f"{target}: acked={len(acked)} lost={len(lost)} dup={duplicated} wrong={len(wrong)}")
    assert not lost, lost[:10]
    assert duplicated == 0
    assert not wrong, [(d, records.get(d)) for d in wrong[:5]]
    verify = run_shipledger("audit", "verify", "--data-dir", str(data), env=env, timeout_s=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr
