"""Chaos: kill -9 of `shipledger up` and of its Faust worker under load loses nothing acknowledged.

A real `shipledger up` (its own data dir, Tansu, chDB, API on a free port) takes the builds
most deployments ship (published first, as a CI does), deployment events from several tenants
(multi-stage deployments, some judged into alerts, shared deployment ids across tenants),
change events, a few invalid events (dead-lettered) from a producer that skips validation,
and CLI emits; meanwhile the test kills `up` (restarted each time) and the worker alone (`up`
restarts it) at random moments. Clients retry what was not acknowledged with the same body,
as real clients do. Then: every acknowledged event is in the ledger once, every deployment's
record and the alerts that hold equal the pure chain's over its events in send order judged
against every change request and build (an alert raised before its change request arrived is
resolved by a resolution row, never twice; a build acknowledged before the kills is seen
after them), dead letters are there once, `audit verify` is clean.

`make chaos` runs only this; `make test` runs it too. SHIPLEDGER_CHAOS_SEED picks the run
(random otherwise, printed), SHIPLEDGER_CHAOS_DEPLOYMENTS its size (600 in `make test`, whose
15-minute budget it shares; 1200 in `make chaos`).
"""

from __future__ import annotations

import os
import queue
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from shipledger.processors.enrichment import fold
from shipledger.processors.step import process
from shipledger.producers.api.auth import ANY_TENANT, AuthStore
from shipledger.producers.emitter.publisher import Publisher
from shipledger.schemas.family_models import ArtifactEvent, ChangeEvent
from shipledger.schemas.models import DeploymentEvent, DeploymentRecord
from shipledger.schemas.policy import load_policy
from shipledger.settings import Settings
from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.stackfile import read_stack
from tests.kit import (
    LONG_TEST_TIMEOUT_S,
    SHIPLEDGER,
    api_build,
    built,
    emit_options,
    ledger_settings,
    run_shipledger,
    up_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

TENANTS = ("acme", "globex", "initech")
SHAPES = (
    ("started", "succeeded"),
    ("started", "started", "succeeded"),
    ("started", "failed"),
    ("started", "started", "started", "rolled_back"),
    ("succeeded",),
)
ENVIRONMENTS = ("production", "staging", "dev", "prod-eu-west-1")
MONDAY_NIGHT = datetime(2026, 11, 23, 23, 0, tzinfo=UTC)  # prod: out of window
TUESDAY_NOON = datetime(2026, 11, 24, 11, 0, tzinfo=UTC)  # prod: in window
CLIENTS = 4
PER_REQUEST = 6  # deployments whose next stage one request carries
EMITS = 8  # deployments sent stage by stage with `shipledger emit`
INVALID = 5
CHANGES = 12
SERVICES = 7
UNBUILT = 4  # every 4th deployment ships no digest: artifact_digest_missing in prod


@dataclass
class Deployment:
    events: list[DeploymentEvent]
    emit: bool = False


def _plan(rng: random.Random, count: int) -> list[Deployment]:
    plans = []
    for index in range(count):
        tenant = TENANTS[index % len(TENANTS)]
        # Ids repeat across tenants (a Jenkins job:build): each tenant's is its own deployment.
        deployment_id = f"job:{index // len(TENANTS)}"
        environment = rng.choice(ENVIRONMENTS)
        start = rng.choice((MONDAY_NIGHT, TUESDAY_NOON)) + timedelta(minutes=index)
        shape = rng.choice(SHAPES)
        events = [
            DeploymentEvent(
                event_id=f"{tenant}-{index}-{stage}",
                deployment_id=deployment_id,
                event_type=event_type,
                service=f"svc-{index % SERVICES}",
                environment=environment,
                tenant=tenant,
                commit_sha=f"{index:040x}",
                actor="ci-bot",
                change_id="CHG1" if index % 5 == 0 else None,
                occurred_at=start + timedelta(seconds=30 * stage),
                **({} if index % UNBUILT == 0 else built(f"svc-{index % SERVICES}")),
            )
            for stage, event_type in enumerate(shape)
        ]
        plans.append(Deployment(events))
    return plans


def _api_body(event: DeploymentEvent) -> dict[str, Any]:
    body: dict[str, Any] = event.model_dump(mode="json", exclude_none=True)
    return body


#: The end of the Faust worker's command line (`up` runs it as `python -m shipledger.cli worker`).
WORKER_CMDLINE = b"shipledger.cli\0worker\0"


def ingest_token(settings: Settings) -> str:
    """A token that may send every tenant's events to the stack of `settings`."""
    auth = AuthStore(settings.resolved_auth_db)
    try:
        token, _ = auth.create_token(ANY_TENANT, ("ingest",), name="chaos")
    finally:
        auth.close()
    return token


def repeated_ids(store: LedgerStore) -> int:
    """How many rows of any ledger table repeat an id (per tenant) of their table."""
    repeated = 0
    for name, spec in ddl.tables().items():
        source = ddl.qualified(store.database, name)
        column = ddl.quote_ident(spec.id_column)
        _, rows = store.query(f"SELECT count() - uniqExact(tenant, {column}) FROM {source}")
        repeated += int(rows[0][0])
    return repeated


def chaos_rng(name: str) -> tuple[int, random.Random]:
    """The run's seed (SHIPLEDGER_CHAOS_SEED, else random; printed as `name seed=N`) and a
    generator seeded with it."""
    seed = int(os.environ.get("SHIPLEDGER_CHAOS_SEED") or random.randrange(1 << 30))
    print(f"{name} seed={seed}")
    return seed, random.Random(seed)


def audit_clean(data: Path, env: dict[str, str]) -> None:
    """`shipledger audit verify` of the stopped stack keeping its data in `data` is clean."""
    verify = run_shipledger("audit", "verify", "--data-dir", str(data), env=env, timeout_s=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def query_rows(env: dict[str, str], sql: str) -> list[str]:
    """`shipledger query`'s CSV rows of `sql`, header dropped (through the running `up`'s API,
    else straight from the data dir of `env`)."""
    done = run_shipledger("query", "--format", "csv", sql, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()[1:]


class Up:
    """The `shipledger up` under test: start, kill, find its worker, stop."""

    def __init__(self, env: dict[str, str], settings: Settings, log: Path) -> None:
        self.env = env
        self.settings = settings
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [SHIPLEDGER, "up"], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        self.starts += 1

    def ready(self, timeout_s: float = 120) -> str:
        """The API URL of this `up`, once it serves (restore done)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while True:
            info = read_stack(self.settings)
            if info is not None and info.pid == self.proc.pid and info.api_url:
                return info.api_url
            assert self.proc.poll() is None, f"up exited {self.proc.returncode}: {self.tail()}"
            assert time.monotonic() < deadline, f"up not ready: {self.tail()}"
            time.sleep(0.1)

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def worker_pid(self) -> int | None:
        """The pid of `up`'s Faust worker, if it runs."""
        return self.child(WORKER_CMDLINE)

    def child(self, marker: bytes) -> int | None:
        """The pid of a child process of `up` whose command line holds `marker`."""
        assert self.proc is not None
        for task in Path(f"/proc/{self.proc.pid}/task").glob("*"):
            try:
                kids = (task / "children").read_text().split()
            except OSError:
                continue
            for kid in kids:
                try:
                    cmd = Path(f"/proc/{kid}/cmdline").read_bytes()
                except OSError:
                    continue
                if marker in cmd:
                    return int(kid)
        return None

    def kill_if_running(self) -> None:
        """kill -9 unless it has exited (a test's clean-up)."""
        if self.proc is not None and self.proc.poll() is None:
            self.kill()

    def stop(self) -> str:
        """SIGINT (Ctrl-C), wait; returns the log's tail."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=120)
        assert code == 0, self.tail()
        return self.tail()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@dataclass
class Ledger:
    """What the clients got acknowledged."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    events: list[DeploymentEvent] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)
    builds: list[dict[str, Any]] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    retries: int = 0
    spooled: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, events: list[DeploymentEvent]) -> None:
        with self.lock:
            self.events.extend(events)

    def progress(self) -> int:
        """Grows with every acknowledgement and retry: what the stall check watches."""
        with self.lock:
            return len(self.events) + len(self.changes) + len(self.invalid) + self.retries


#: Clients that acknowledge nothing for this long are stuck, not slow: a fixed deadline for the
#: whole traffic failed on a loaded machine (CI shares its 2 cores) while every client moved.
STALL_S = 180.0


def _join_while_progressing(threads: list[threading.Thread], acked: Ledger) -> None:
    """Waits for `threads` as long as they keep getting acknowledgements."""
    seen, since = acked.progress(), time.monotonic()
    while any(t.is_alive() for t in threads):
        for thread in threads:
            thread.join(timeout=1.0)
        if (now := acked.progress()) != seen:
            seen, since = now, time.monotonic()
        assert time.monotonic() - since < STALL_S, f"no client progressed for {STALL_S:.0f} s"


def _post_until_acknowledged(
    url: Callable[[], str], token: str, body: dict[str, Any], acked: Ledger, stop: threading.Event
) -> None:
    """POST the same body until a 202, as a client that must not lose it does."""
    while not stop.is_set():
        try:
            answer = httpx.post(
                f"{url()}/v1/events",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            if answer.status_code == 202:
                return
            assert answer.status_code in (429, 503), answer.text
        except httpx.HTTPError:
            pass
        with acked.lock:
            acked.retries += 1
        time.sleep(0.2)


def _flush_until_sent(env: dict[str, str], stop: threading.Event) -> None:
    """`shipledger flush` until the spool is empty (exit 0)."""
    while not stop.is_set():
        done = run_shipledger("flush", env=env)
        if done.returncode == 0:
            return
        time.sleep(0.5)


@pytest.mark.timeout(LONG_TEST_TIMEOUT_S)
def test_kill_9_under_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    seed = int(os.environ.get("SHIPLEDGER_CHAOS_SEED") or random.randrange(1 << 30))
    count = int(os.environ.get("SHIPLEDGER_CHAOS_DEPLOYMENTS", "600"))
    print(f"chaos seed={seed} deployments={count}")
    rng = random.Random(seed)
    data = tmp_path / "data"
    settings = ledger_settings(data, topic_partitions=2)
    env = up_env(
        data,
        SHIPLEDGER_API_RATE_PER_S="100000",
        SHIPLEDGER_API_RATE_BURST="100000",
        SHIPLEDGER_EMIT_TIMEOUT_S="3",
    )
    data.mkdir(parents=True)
    token = ingest_token(settings)

    plans = _plan(rng, count)
    for plan in rng.sample(plans, EMITS):
        plan.emit = True
    acked = Ledger()
    up = Up(env, settings, tmp_path / "up.log")
    up.start()
    current = {"url": up.ready()}
    url_lock = threading.Lock()
    stop = threading.Event()

    def url() -> str:
        with url_lock:
            return current["url"]

    # The builds, before any deployment of them and before the kills: each tenant's CI.
    for tenant in TENANTS:
        for service in range(SERVICES):
            built_at = (MONDAY_NIGHT - timedelta(hours=1)).isoformat()
            build = {**api_build(f"svc-{service}", built_at), "tenant": tenant}
            _post_until_acknowledged(url, token, build, acked, stop)
            acked.builds.append(build)

    work: queue.SimpleQueue[list[Deployment]] = queue.SimpleQueue()
    api_plans = [p for p in plans if not p.emit]
    for start in range(0, len(api_plans), PER_REQUEST):
        work.put(api_plans[start : start + PER_REQUEST])

    def api_client() -> None:
        try:
            while not stop.is_set():
                try:
                    group = work.get_nowait()
                except queue.Empty:
                    return
                for stage in range(max(len(p.events) for p in group)):
                    batch = [p.events[stage] for p in group if stage < len(p.events)]
                    body = {"events": [_api_body(e) for e in batch]}
                    _post_until_acknowledged(url, token, body, acked, stop)
                    if not stop.is_set():
                        acked.add(batch)
                time.sleep(rng.uniform(0.05, 0.25))  # a CI fleet, not a benchmark
        except BaseException as exc:
            acked.errors.append(repr(exc))
            raise

    def emitter() -> None:
        """CI jobs: one `shipledger emit` per stage; exit 0 is the acknowledgement (sent, or
        spooled while `up` was down: `shipledger flush` sends those at the end)."""
        try:
            for plan in (p for p in plans if p.emit):
                sent = []
                for event in plan.events:
                    done = run_shipledger(
                        "emit",
                        event.event_type,
                        *emit_options(event),
                        "--occurred-at",
                        event.occurred_at.isoformat(),
                        *(["--change-id", event.change_id] if event.change_id else []),
                        env=env,
                    )
                    assert done.returncode == 0, done.stderr
                    event_id = done.stdout.strip().splitlines()[-1]
                    sent.append(event.model_copy(update={"event_id": event_id}))
                    if "spooled" in done.stderr:
                        # `up` was down: a careful pipeline flushes before its next stage, so
                        # its events reach the ledger in stage order (the reference's order).
                        with acked.lock:
                            acked.spooled += 1
                        _flush_until_sent(env, stop)
                plan.events = sent
                acked.add(sent)
        except BaseException as exc:
            acked.errors.append(repr(exc))
            raise

    def side_traffic() -> None:
        """Change requests through the API; invalid events from a producer that skips
        validation (acknowledged by the embedded stack, dead-lettered by the processors)."""
        try:
            # Newest ids first: CHG1, which deployments name from the start, comes late, so
            # they are judged without it and judged again (resolutions) under the kills.
            for i in reversed(range(CHANGES)):
                change = {
                    "family": "change",
                    "event_id": f"chg-{i}",
                    "tenant": TENANTS[i % len(TENANTS)],
                    "change_id": f"CHG{i}",
                    "system": "servicenow",
                    "state": "approved",
                    "occurred_at": TUESDAY_NOON.isoformat(),
                }
                _post_until_acknowledged(url, token, change, acked, stop)
                acked.changes.append(change)
                time.sleep(rng.uniform(0.2, 1.5))
            for i in range(INVALID):
                bad = DeploymentEvent.model_construct(
                    **{
                        **plans[0].events[0].model_dump(),
                        "event_id": f"bad-{i}",
                        "deployment_id": f"bad-{i}",
                        "commit_sha": "abc123",
                    }
                )
                while not stop.is_set():
                    with Publisher(settings) as publisher:
                        if publisher.publish([bad], spool_on_failure=False).sent == 1:
                            acked.invalid.append(f"bad-{i}")
                            break
                    time.sleep(0.3)
                time.sleep(rng.uniform(0.2, 1.5))
        except BaseException as exc:
            acked.errors.append(repr(exc))
            raise

    threads = [threading.Thread(target=api_client) for _ in range(CLIENTS)]
    threads += [threading.Thread(target=emitter), threading.Thread(target=side_traffic)]
    for thread in threads:
        thread.start()

    kills = {"up": 0, "worker": 0}
    actions = ["up", "up", "up", "worker", "worker"]
    rng.shuffle(actions)
    try:
        for action in actions:
            time.sleep(rng.uniform(1.0, 8.0))
            if not any(t.is_alive() for t in threads):
                break
            if action == "worker":
                pid = up.worker_pid()
                if pid is None:  # between restarts: take up instead
                    action = "up"
                else:
                    os.kill(pid, signal.SIGKILL)
                    kills["worker"] += 1
                    continue
            up.kill()
            kills["up"] += 1
            up.start()
            new = up.ready()
            with url_lock:
                current["url"] = new
        _join_while_progressing(threads, acked)
        assert not acked.errors, acked.errors
        flushed = run_shipledger("flush", env=env)
        assert flushed.returncode == 0, flushed.stdout + flushed.stderr
    finally:
        stop.set()
        tail = up.stop() if up.proc is not None and up.proc.poll() is None else up.tail()
    # A stop drains the broker for at most 30 s; a worker that redoes a batch then (it exits
    # on purpose, see processors.offsets) can make it miss that: the next start sends the
    # rest again from the journal. Nothing may be missing after that.
    restarts = 0
    while "shipledger stopped cleanly." not in tail.splitlines()[-1] and restarts < 2:
        restarts += 1
        up.start()
        up.ready()
        tail = up.stop()
    assert "shipledger stopped cleanly." in tail, tail
    kills["extra_starts"] = restarts
    report = _judge(settings, acked, kills, seed)
    print(report)
    verify = run_shipledger("audit", "verify", "--data-dir", str(data), env=env, timeout_s=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def _judge(settings: Settings, acked: Ledger, kills: dict[str, int], seed: int) -> str:
    """Compare the ledger with what was acknowledged; assert, and return the summary line."""
    policy = load_policy(None)
    view = fold(
        [
            *(
                ChangeEvent.model_validate({k: v for k, v in c.items() if k != "family"})
                for c in acked.changes
            ),
            *(
                ArtifactEvent.model_validate({k: v for k, v in b.items() if k != "family"})
                for b in acked.builds
            ),
        ]
    )
    by_deployment: dict[tuple[str, str], list[DeploymentEvent]] = {}
    for event in acked.events:
        by_deployment.setdefault((event.tenant, event.deployment_id), []).append(event)
    want_records: dict[tuple[str, str], tuple[Any, ...]] = {}
    want_alerts: set[tuple[str, str]] = set()
    for key, events in by_deployment.items():
        events.sort(key=lambda e: e.occurred_at)  # send order: stage by stage
        record: DeploymentRecord | None = None
        for event in events:
            step = process(event, record, policy, view=view)
            record = step.record
            want_alerts.update((a.tenant, a.alert_id) for a in step.alerts)
        assert record is not None
        # A re-judgement (a change request arriving after the deployment) adds a record
        # version: every event has its record, and the latest says which rules hold.
        want_records[key] = (
            record.status,
            record.event_count,
            tuple(sorted(record.alert_rules)),
            len(events),
        )
    with LedgerStore.open(settings) as store:
        duplicated = repeated_ids(store)
        _, rows = store.query("SELECT tenant, event_id FROM deployment_events")
        stored = {(str(t), str(i)) for t, i in rows}
        lost = [
            (e.tenant, e.event_id) for e in acked.events if (e.tenant, e.event_id) not in stored
        ]
        _, rows = store.query(
            "SELECT d.tenant, d.deployment_id, d.status, d.event_count, d.alert_rules, "
            "r.n FROM deployments AS d INNER JOIN (SELECT tenant, deployment_id, "
            "countIf(record_id = last_event_id) AS n FROM deployment_records "
            "GROUP BY tenant, deployment_id) AS r USING (tenant, deployment_id)"
        )
        got_records = {
            (str(t), str(d)): (st, n, tuple(sorted(rules)), int(count))
            for t, d, st, n, rules, count in rows
            if not str(d).startswith("bad-")
        }
        wrong = sorted(k for k in want_records if got_records.get(k) != want_records[k])
        extra_records = sorted(set(got_records) - set(want_records))
        _, rows = store.query("SELECT tenant, alert_id FROM open_alerts")
        got_alerts = {(str(t), str(i)) for t, i in rows}
        # Every resolution names a stored alert, and an alert is resolved at most once.
        _, rows = store.query(
            "SELECT countIf(a.alert_id = ''), count() - uniqExact(r.resolves) "
            "FROM alerts AS r LEFT JOIN alerts AS a "
            "ON a.tenant = r.tenant AND a.alert_id = r.resolves WHERE r.kind = 'resolution'"
        )
        orphans, resolved_twice = (int(v) for v in rows[0])
        _, rows = store.query("SELECT event_id FROM change_events")
        changes = sorted(str(r[0]) for r in rows)
        _, rows = store.query("SELECT event_id, count() FROM dead_letters GROUP BY 1")
        letters = {str(i): int(n) for i, n in rows}
    summary = (
        f"chaos seed={seed}: kills up={kills['up']} worker={kills['worker']} (extra starts "
        f"to finish the drain {kills['extra_starts']}) / acknowledged "
        f"{len(acked.events) + len(acked.changes) + len(acked.invalid)} / lost {len(lost)} / "
        f"duplicated {duplicated} / wrong records {len(wrong) + len(extra_records)} / alerts "
        f"holding missing {len(want_alerts - got_alerts)} extra {len(got_alerts - want_alerts)}"
        f" / resolutions orphaned {orphans} twice {resolved_twice} / dead "
        f"letters {sum(letters.values())} of {len(acked.invalid)} / client retries "
        f"{acked.retries}, emits spooled {acked.spooled}"
    )
    print(summary)
    for key in wrong[:10]:  # pytest cuts a long assertion message: the whole of each here
        print(f"wrong record {key}: stored {got_records.get(key)} want {want_records[key]}")
    assert not lost, (summary, lost[:10])
    assert duplicated == 0, summary
    assert not wrong and not extra_records, (
        summary,
        [(k, got_records.get(k), want_records[k]) for k in wrong[:5]],
        extra_records[:5],
    )
    assert got_alerts == want_alerts, summary
    assert orphans == 0 and resolved_twice == 0, summary
    assert changes == sorted(c["event_id"] for c in acked.changes), summary
    assert letters == dict.fromkeys(acked.invalid, 1), summary
    return summary
