"""kill -9 of `shipledger dlq replay` midway, on the real embedded stack: the replay sent some
letters and not the others; the same replay run again sends them all; every letter's event
is then stored once, none is lost, no letter is added, and after a restart the DLQ lists none
of them (each event is in the ledger: nothing left to replay).

The letters: events framed with a schema id the registry does not know (a producer ahead of
the stack), fixed by registering that id before a restart (as in test_dlq_restart; the
registry is the loopback stand-in of tests/conftest.py, because no real one can run here).
The replay runs as a child process at one letter a second (`--rate`), so that the test can
kill it once the ledger holds some of the replayed events and before it sent them all.

It caught `dlq list` (and so `replay --all`) reading 6 of the 12 letters the restore wrote
back: it took Tansu's ListOffsets answer (the base offset of a partition's last batch + 1)
for the end of each partition."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.up.stack import Stack
from tests.conftest import StandInSchemaRegistry
from tests.integration.test_dlq_restart import dlq, dlq_env, letters, rejected_then_fixed
from tests.kit import SHIPLEDGER, deployment_event, up_env, wait_until

pytestmark = pytest.mark.integration

LETTERS = 12
EVENTS = [
    deployment_event(event_id=f"e-{n}", deployment_id=f"dep-{n}", tenant="acme")
    for n in range(LETTERS)
]


def _copies(store: LedgerStore) -> dict[str, int]:
    """How many rows of each event the ledger holds."""
    _, rows = store.query("SELECT event_id, count() FROM deployment_events GROUP BY event_id")
    return {str(event_id): int(count) for event_id, count in rows}


def test_a_replay_killed_midway_and_run_again_stores_every_event_once(
    tmp_path: Path, schema_registry: StandInSchemaRegistry
) -> None:
    settings, before = rejected_then_fixed(tmp_path, schema_registry, *EVENTS)
    assert len(before) == LETTERS

    with Stack(settings, log_dir=tmp_path / "logs") as stack:
        store = stack.store
        assert store is not None and stack.restored is not None
        assert stack.restored.dead_letters == LETTERS
        listed = letters(stack)
        assert len(listed) == LETTERS
        replay = subprocess.Popen(
            [SHIPLEDGER, "dlq", "replay", "--all", "--rate", "1"],
            env=up_env(settings.data_dir, **dlq_env(stack)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_until(stack, lambda: len(_copies(store)) >= 2, "two replayed events stored")
        finally:
            replay.kill()  # SIGKILL
        _, err = replay.communicate(timeout=30)
        assert replay.returncode == -9, err.decode()
        wait_until(stack, lambda: not any(stack.pending().values()), "drained")
        sent = len(_copies(store))
        assert 2 <= sent < LETTERS, f"{sent} events stored: the kill came too late"

        assert f"Replayed {LETTERS} letter(s)." in dlq(stack, "replay", "--all")
        wait_until(stack, lambda: len(_copies(store)) == LETTERS, "every event stored")
        wait_until(stack, lambda: store.count(ddl.RECORDS) == LETTERS, "their records")
        wait_until(stack, lambda: not any(stack.pending().values()), "drained")
        assert _copies(store) == {e.event_id: 1 for e in EVENTS}
        assert store.count(ddl.RECORDS) == LETTERS
        assert store.count(ddl.DEAD_LETTERS) == LETTERS  # accepted: no new letter
        assert letters(stack) == listed

    with Stack(settings, log_dir=tmp_path / "logs") as stack:
        again = stack.store
        assert again is not None and stack.restored is not None
        assert stack.restored.dead_letters == 0  # before: all 12, replayed or not
        assert letters(stack) == []
        wait_until(stack, lambda: not any(stack.pending().values()), "drained")
        assert _copies(again) == {e.event_id: 1 for e in EVENTS}
        assert again.count(ddl.RECORDS) == LETTERS
