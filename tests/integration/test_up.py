"""`shipledger up` as a user runs it: its own Tansu, discovery through the data dir by the
emitter, and a clean stop on Ctrl-C (SIGINT) with everything committed to ClickHouse."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition

from shipledger.producers.api.auth import AuthStore
from shipledger.sinks.ledger.store import LedgerStore
from tests.kit import ledger_settings, up_env

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent / "shipledger"


def record_arrives(bootstrap: str, topic: str, timeout_s: float = 60) -> bool:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "t", "fetch.wait.max.ms": 10})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(2)])
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                return True
        return False
    finally:
        consumer.close()


def test_up_runs_until_ctrl_c(tmp_path: Path) -> None:
    env = up_env(tmp_path / "data")
    stack_file = tmp_path / "data" / "stack.json"
    with (tmp_path / "up.log").open("wb") as log:
        up = subprocess.Popen([BIN, "up"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while not stack_file.exists():
                assert up.poll() is None, (tmp_path / "up.log").read_text()
                assert time.monotonic() < deadline, "stack file never appeared"
                time.sleep(0.2)
            info = json.loads(stack_file.read_text())
            bootstrap = info["bootstrap"]
            assert bootstrap.startswith("127.0.0.1:")
            # The ingest API runs inside `up`, at the URL the stack file records.
            assert httpx.get(f"{info['api_url']}/readyz").json() == {"status": "ready"}
            # No bootstrap given: the emitter finds the running stack through the data dir.
            emitted = subprocess.run(
                [
                    BIN,
                    "emit",
                    "started",
                    "--strict",
                    "--deployment-id",
                    "up-1",
                    "--service",
                    "cart",
                    "--environment",
                    "staging",
                    "--commit-sha",
                    "c" * 40,
                    "--actor",
                    "eve",
                ],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            assert emitted.returncode == 0, emitted.stderr
            assert record_arrives(bootstrap, "shipledger.deployments.records")
            # `up` owns the chDB dir: `shipledger query` goes through its API, with the local
            # read token the 0600 stack file hands it.
            assert stack_file.stat().st_mode & 0o777 == 0o600 and info["api_token"]
            deadline = time.monotonic() + 30
            while True:
                queried = subprocess.run(
                    [BIN, "query", "--format", "csv", "SELECT service, status FROM deployments"],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                assert queried.returncode == 0, queried.stderr + queried.stdout
                if "cart" in queried.stdout or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert queried.stdout.splitlines()[-1] == "cart,in_progress", queried.stdout
            # A second `up` on the data dir fails (the first owns its chDB dir) and leaves the
            # running stack's file alone: it deleted it on the way out, and every command
            # then took the running stack for a stopped one.
            second = subprocess.run(
                [BIN, "up"], env=env, capture_output=True, text=True, timeout=120, check=False
            )
            assert second.returncode == 1, second.stderr
            assert json.loads(stack_file.read_text()) == info
        finally:
            up.send_signal(signal.SIGINT)
            code = up.wait(timeout=60)
    output = (tmp_path / "up.log").read_text()
    assert code == 0, output
    assert "shipledger stopped cleanly." in output
    assert not stack_file.exists()
    auth = AuthStore(tmp_path / "data" / "auth.sqlite3")
    try:  # the local read token died with `up`, leaving no revoked row behind
        assert auth.list_tokens() == []
    finally:
        auth.close()
    with LedgerStore.open(ledger_settings(tmp_path / "data")) as store:
        assert store.count("deployment_events") == 1
        _, rows = store.query("SELECT environment, status FROM deployments")
        assert rows == [("stage", "in_progress")]


def test_up_leaves_no_local_read_tokens_behind(tmp_path: Path) -> None:
    """Each `up` makes a local read token: deleted when it stops, and those of a killed `up`
    (or revoked by an older version) deleted at the next start; other tokens are kept."""
    from shipledger.producers.api.server import ApiServer

    settings = ledger_settings(tmp_path / "data", api_port=0)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    auth = AuthStore(settings.resolved_auth_db)
    try:
        auth.create_token("*", ("read",), name=f"shipledger up (pid {dead.pid})")  # kill -9
        revoked = auth.create_token("*", ("read",), name="shipledger up (pid 1)")[1]
        auth.revoke(revoked.id)
        live = auth.create_token("*", ("read",), name=f"shipledger up (pid {os.getppid()})")[1]
        mine = auth.create_token("acme", ("read",), name="shipledger up (pid x) is mine")[1]
    finally:
        auth.close()
    for _ in range(3):
        with ApiServer(settings, "127.0.0.1:1") as server:
            server.operator_token()
            during = AuthStore(settings.resolved_auth_db)
            try:
                names = sorted(t.id for t in during.list_tokens())
            finally:
                during.close()
            assert len(names) == 3 and {live.id, mine.id} <= set(names)
    after = AuthStore(settings.resolved_auth_db)
    try:
        assert sorted(t.id for t in after.list_tokens()) == sorted([live.id, mine.id])
    finally:
        after.close()
