"""End to end on real components: the `shipledger` CLI → Tansu → Faust worker → Tansu →
ClickHouse sink → chDB, with alerts read back from the alert topic."""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from shipledger.producers.emitter.spool import Spool
from shipledger.schemas.families import DEPLOYMENT
from shipledger.schemas.models import Alert
from shipledger.schemas.registry import AvroCodec
from shipledger.settings import Settings
from shipledger.sinks.ledger.audit import verify
from shipledger.up.broker import free_port
from shipledger.up.stack import Stack
from tests.kit import SHA, deployment_event, emit_options, poll, run_shipledger, wait_drained

pytestmark = pytest.mark.integration

POLICY = """
version: it-1
defaults:
  timezone: Europe/Berlin
  require_change_ticket: [prod]
  # About other rules: their prod deployments carry no built digest.
  require_artifact_digest: []
  change_windows:
    prod:
      - {days: [mon, tue, wed, thu], start: "09:00", end: "17:00"}
  freezes:
    - name: year-end
      start: 2026-12-21T00:00:00+01:00
      end: 2027-01-04T00:00:00+01:00
      environments: [prod]
tenants:
  bank:
    require_change_ticket: [prod, stage]
"""


@pytest.fixture
def stack_settings(stack_settings: Settings, tmp_path: Path) -> Settings:
    """The `stack` runs with POLICY, whose windows and freezes are judged on fixed dates, some
    still ahead."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    return stack_settings.model_copy(
        update={"policy_file": policy, "max_future_skew_s": 2 * 365 * 86400}
    )


def ci_env(stack: Stack) -> dict[str, str]:
    """The environment of a CI job using the stack: configured only through variables."""
    env = {
        **os.environ,
        **stack.settings.to_env(),
        "SHIPLEDGER_BOOTSTRAP_SERVERS": stack.bootstrap,
        "SHIPLEDGER_STRICT": "true",
    }
    env.pop("GITHUB_ACTIONS", None)
    env.pop("GITLAB_CI", None)
    env.pop("JENKINS_URL", None)
    return env


def emit(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real `shipledger emit` as a CI job would."""
    done = run_shipledger("emit", *args, env=ci_env(stack))
    assert done.returncode == 0, done.stderr
    return done


def identity(dep: str, *extra: str) -> list[str]:
    """The flags naming deployment `dep` of checkout by alice (retail), plus `extra`."""
    return [
        "--deployment-id", dep, "--service", "checkout", "--commit-sha", SHA,
        "--actor", "alice", "--tenant", "retail", *extra,
    ]  # fmt: skip


def deploy(stack: Stack, dep: str, at: str, *extra: str) -> None:
    common = identity(dep, *extra)
    emit(stack, "started", "--occurred-at", at, *common)
    emit(stack, "succeeded", "--occurred-at", at.replace(":00+", ":05+"), *common)


def wait_rows(
    stack: Stack, table: str, want: int, timeout: float = 60, *, supervise: bool = False
) -> int:
    """Poll `table` until it has `want` rows; with `supervise`, restart an exited worker as
    `up` does (a restarted worker may exit once more by design: `processors.offsets`)."""
    store = stack.store
    assert store is not None
    return poll(
        stack, lambda: store.count(table), lambda n: n >= want, timeout, supervise=supervise
    )


def read_topic(
    bootstrap: str, topic: str, want: int, timeout: float = 30
) -> list[tuple[bytes | None, list[tuple[str, bytes]]]]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"it-{topic}",
            "fetch.wait.max.ms": 10,
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(2)])
    out: list[tuple[bytes | None, list[tuple[str, bytes]]]] = []
    deadline = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is not None and msg.error() is None:
            raw = msg.headers() or []
            pairs = list(raw.items()) if isinstance(raw, dict) else raw
            headers = [(k, v) for k, v in pairs if isinstance(v, bytes)]
            out.append((msg.value(), headers))
    consumer.close()
    return out


def test_cli_events_become_rows_and_alerts(stack: Stack) -> None:
    # Wednesday 10:00 Berlin with a ticket: in window, but no change system ever reported
    # CHG1 (nor CHG2 below): change_ticket_unknown.
    deploy(
        stack,
        "dep-ok",
        "2026-11-25T10:00:00+01:00",
        "--environment",
        "production",
        "--change-id",
        "CHG1",
    )
    # Sunday night, no ticket, region in the env name: missing ticket + out of window.
    deploy(stack, "dep-night", "2026-11-22T23:00:00+01:00", "--environment", "prod-eu-west-1")
    # In the year-end freeze (a Monday in office hours, with a ticket).
    deploy(
        stack,
        "dep-frozen",
        "2026-12-21T10:00:00+01:00",
        "--environment",
        "prd",
        "--change-id",
        "CHG2",
    )
    # A failed deploy to staging: no rules apply, status failed.
    deploy(stack, "dep-fail", "2026-11-25T11:00:00+01:00", "--environment", "staging")
    emit(
        stack,
        "failed",
        "--occurred-at",
        "2026-11-25T11:09:00+01:00",
        *identity("dep-fail", "--environment", "staging"),
    )

    assert wait_rows(stack, "deployment_events", 9) == 9
    assert wait_rows(stack, "deployment_records", 9) == 9
    assert wait_rows(stack, "alerts", 5) == 5
    wait_drained(stack)  # nothing more arrives: exactly one row per event
    assert stack.store is not None
    assert stack.store.count("deployment_events") == 9
    assert stack.store.count("alerts") == 5

    _, rows = stack.store.query(
        "SELECT deployment_id, environment, region, status FROM deployments ORDER BY deployment_id"
    )
    assert rows == [
        ("dep-fail", "stage", None, "failed"),
        ("dep-frozen", "prod", None, "succeeded"),
        ("dep-night", "prod", "eu-west-1", "succeeded"),
        ("dep-ok", "prod", None, "succeeded"),
    ]

    codec = AvroCodec("io.shipledger.v1.Alert")
    alerts = [
        Alert.model_validate(codec.decode(v))
        for v, _ in read_topic(stack.bootstrap, stack.topics.alerts, 5)
    ]
    assert sorted((a.deployment_id, a.rule) for a in alerts) == [
        ("dep-frozen", "change_ticket_unknown"),
        ("dep-frozen", "freeze_violation"),
        ("dep-night", "missing_change_ticket"),
        ("dep-night", "out_of_window"),
        ("dep-ok", "change_ticket_unknown"),
    ]
    assert all(a.policy_version.startswith("it-1+") for a in alerts)
    night = next(a for a in alerts if a.rule == "out_of_window")
    assert night.evidence["timezone"] == "Europe/Berlin"
    assert night.severity == "medium"

    # Every row the pipeline stored is chained: the ledger verifies clean.
    report = verify(stack.store)
    assert report.clean, report.text()
    assert report.rows == 9 + 9 + 5


def test_malformed_events_reach_the_dead_letter_topic(stack: Stack) -> None:
    codec = AvroCodec("io.shipledger.v1.DeploymentEvent")
    valid = deployment_event(event_id="e-bad", deployment_id="dep-bad")
    bad_sha = {**valid.to_avro(), "commit_sha": "abc123"}  # what a non-validating producer sends
    producer = Producer(stack.settings.kafka_producer(stack.bootstrap))
    producer.produce(stack.topics.raw, key=b"dep-bad", value=codec.encode(bad_sha))
    producer.produce(stack.topics.raw, key=b"dep-junk", value=b"{not avro}")
    assert producer.flush(10) == 0

    letters = read_topic(stack.bootstrap, stack.topics.dlq, 2, timeout=60)
    assert len(letters) == 2
    reasons = {dict(h)["reason"].decode(): dict(h) for _, h in letters}
    sha_reason = next(r for r in reasons if r.startswith("commit_sha:"))
    assert "full commit SHA" in sha_reason
    assert reasons[sha_reason]["field"] == b"commit_sha"
    assert any("magic byte" in r for r in reasons)
    assert {v for v, _ in letters} >= {b"{not avro}"}
    # Rejected input never becomes a record (once the worker's outputs are stored).
    assert stack.store is not None
    wait_drained(stack)
    assert stack.store.count("deployment_records") == 0


def test_state_survives_a_worker_restart(stack: Stack) -> None:
    """The deployments table is rebuilt from its changelog: a deployment started before the
    restart finishes after it as seq 2, with its alert rules kept and no second judgement."""
    common = [
        "--deployment-id",
        "dep-restart",
        "--service",
        "cart",
        "--commit-sha",
        SHA,
        "--actor",
        "bob",
        "--tenant",
        "retail",
        "--environment",
        "prod",
    ]
    emit(stack, "started", "--occurred-at", "2026-11-22T23:00:00+01:00", *common)
    assert wait_rows(stack, "deployment_records", 1) == 1
    assert wait_rows(stack, "alerts", 2) == 2
    stack.restart_workers()
    emit(stack, "succeeded", "--occurred-at", "2026-11-22T23:04:00+01:00", *common)
    assert wait_rows(stack, "deployment_records", 2, timeout=90) == 2
    assert stack.store is not None
    _, rows = stack.store.query(
        "SELECT seq, status, event_count, duration_ms, alert_rules FROM deployments"
    )
    assert rows == [(2, "succeeded", 2, 240_000, ["missing_change_ticket", "out_of_window"])]
    wait_drained(stack)  # an alert of the second judgement would be stored by now
    assert stack.store.count("alerts") == 2


def test_supervisor_restarts_a_killed_worker(stack: Stack) -> None:
    """A worker killed outright (no commit, no goodbye) is restarted by `supervise()`, and
    the new one picks the work up."""
    deploy(stack, "dep-before", "2026-11-25T10:00:00+01:00", "--environment", "dev")
    assert wait_rows(stack, "deployment_records", 2) == 2
    worker = stack._procs[0]
    worker.kill()
    worker.wait()
    stack.supervise()
    assert stack._procs[0] is not worker and stack._procs[0].poll() is None
    deploy(stack, "dep-after", "2026-11-25T10:10:00+01:00", "--environment", "dev")
    # Faust may drop an event fetched right after the kill; the offset guard then stops the
    # new worker before it acks past it (exit 70) and `up` restarts it, as here.
    assert wait_rows(stack, "deployment_records", 4, timeout=90, supervise=True) == 4


class _ExitsAfterItsFirstPoll:
    """A worker process that exits right after the supervisor's restart pass looked at it
    (still running then): as a worker whose main thread had ended while others still ran."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.polled = False

    def poll(self) -> int | None:
        if self.polled:
            return self.proc.poll()
        self.polled = True
        code = self.proc.poll()
        self.proc.kill()
        self.proc.wait()
        return code

    def __getattr__(self, name: str) -> Any:
        return getattr(self.proc, name)


def test_a_worker_exiting_during_supervision_is_restarted_not_a_crash(stack: Stack) -> None:
    """`supervise()` restarts exited workers, then checks the other components: a worker
    that exits just after the restart pass is restarted by the next call, not reported as a
    stack crash (a second poll used to see it exited and raise)."""
    worker = stack._procs[0]
    stack._procs[0] = _ExitsAfterItsFirstPoll(worker)  # type: ignore[call-overload]
    stack.supervise()
    assert worker.poll() is not None
    stack.supervise()
    assert stack._procs[0].poll() is None and stack._procs[0].pid != worker.pid
    deploy(stack, "dep-restarted", "2026-11-25T10:00:00+01:00", "--environment", "dev")
    assert wait_rows(stack, "deployment_records", 2, timeout=90, supervise=True) == 2


def test_an_event_delivered_twice_is_applied_once(stack: Stack) -> None:
    """A resent event (spool flush after a lost ack, a replay) must not advance the record."""
    codec = AvroCodec("io.shipledger.v1.DeploymentEvent")
    event = deployment_event(event_id="evt-twice", deployment_id="dep-twice", environment="dev")
    producer = Producer(stack.settings.kafka_producer(stack.bootstrap))
    for _ in range(2):
        producer.produce(stack.topics.raw, key=b"dep-twice", value=codec.encode(event.to_avro()))
    assert producer.flush(10) == 0
    emit(stack, "succeeded", *emit_options(event))  # the same deployment goes on
    assert wait_rows(stack, "deployment_records", 2) == 2
    assert stack.store is not None
    _, rows = stack.store.query("SELECT seq, event_count, status FROM deployments")
    assert rows == [(2, 2, "succeeded")]
    # The records come from the worker, the events' rows from the sink reading the raw topic:
    # those (the copy's too) may still be on their way.
    wait_drained(stack)
    assert stack.store.count("deployment_events") == 2  # the copy is deduplicated by id too
    report = verify(stack.store)  # a replayed event leaves the chains intact
    assert report.clean, report.text()


def test_a_flush_repeated_after_a_crash_is_recorded_once(stack: Stack) -> None:
    """A flusher killed after Kafka acknowledged its events but before it deleted their files
    leaves the spool as it was before the flush: that state is restored here from a copy (a
    kill -9 cannot be aimed between those two steps without a hook in the code). The next
    flush sends the events again (at-least-once on the wire, same event_id, same bytes) and
    the ledger still holds each once."""
    down = f"127.0.0.1:{free_port()}"
    for event_type in ("started", "succeeded"):
        emit(stack, event_type, *identity("dep-crash", "--environment", "dev"),
             "--bootstrap", down, "--no-strict")  # fmt: skip
    spool = Spool(stack.settings)
    before = {path: path.read_bytes() for path in spool.files()}
    assert len(before) == 2
    for attempt in range(2):
        if attempt:
            for path, data in before.items():
                path.write_bytes(data)
        flushed = run_shipledger("flush", env=ci_env(stack))
        assert flushed.returncode == 0, flushed.stderr
        assert flushed.stdout.startswith("sent 2, 0 remaining")

    wire = read_topic(stack.bootstrap, stack.topics.raw, 4)
    codec = AvroCodec("io.shipledger.v1.DeploymentEvent")
    sent = Counter((value, codec.decode(value)["event_id"]) for value, _ in wire if value)
    assert sorted(sent.values()) == [2, 2]  # each event twice, byte for byte
    # A marker after the copies, on the same partition (same key): once it is in the ledger,
    # the copies before it have been processed too.
    emit(stack, "succeeded", *identity("dep-crash", "--environment", "dev"))
    assert wait_rows(stack, "deployment_records", 3) == 3
    assert wait_rows(stack, "deployment_events", 3) == 3
    assert stack.store is not None
    _, rows = stack.store.query(
        "SELECT seq, event_count, status FROM deployments WHERE deployment_id = 'dep-crash'"
    )
    assert rows == [(3, 3, "succeeded")]  # the copies advanced nothing
    assert stack.store.count("deployment_events") == 3


def test_tenants_with_the_same_deployment_and_event_ids_stay_apart(stack: Stack) -> None:
    """Two tenants' Jenkins jobs share `job:42` (and even an event id): each tenant gets its
    own record, judged by its own policy, and every event row is stored."""
    codec = AvroCodec("io.shipledger.v1.DeploymentEvent")
    producer = Producer(stack.settings.kafka_producer(stack.bootstrap))

    def send(tenant: str, event_id: str, event_type: str, environment: str, at: str) -> None:
        event = deployment_event(
            event_id=event_id,
            deployment_id="job:42",
            event_type=event_type,
            environment=environment,
            tenant=tenant,
            change_id="CHG1" if tenant == "retail" else None,
            actor="jenkins",
            occurred_at=at,
        )
        producer.produce(
            stack.topics.raw, key=DEPLOYMENT.key(event), value=codec.encode(event.to_avro())
        )

    # Wednesday 10:00 Berlin: in the prod window; retail names a ticket no change system
    # reported (change_ticket_unknown).
    send("retail", "evt-same", "started", "prod", "2026-11-25T10:00:00+01:00")
    send("bank", "evt-same", "started", "staging", "2026-11-25T10:01:00+01:00")
    send("retail", "evt-retail-2", "failed", "prod", "2026-11-25T10:05:00+01:00")
    assert producer.flush(10) == 0

    assert wait_rows(stack, "deployment_records", 3) == 3
    assert wait_rows(stack, "deployment_events", 3) == 3
    assert wait_rows(stack, "alerts", 2) == 2
    assert stack.store is not None
    _, rows = stack.store.query(
        "SELECT tenant, environment, status, event_count, seq, started_at, alert_rules "
        "FROM deployments WHERE deployment_id = 'job:42' ORDER BY tenant"
    )
    bank, retail = rows
    assert bank[:5] == ("bank", "stage", "in_progress", 1, 1)
    assert bank[6] == ["missing_change_ticket"]  # the bank's policy: tickets for stage too
    assert retail[:5] == ("retail", "prod", "failed", 2, 2)
    assert retail[6] == ["change_ticket_unknown"]
    assert retail[5].isoformat().startswith("2026-11-25T09:00:00")  # retail's own start (UTC)
    _, alerts = stack.store.query("SELECT tenant, rule FROM alerts ORDER BY tenant")
    assert alerts == [("bank", "missing_change_ticket"), ("retail", "change_ticket_unknown")]
    _, events = stack.store.query(
        "SELECT tenant, event_id FROM deployment_events ORDER BY tenant, event_id"
    )
    assert events == [("bank", "evt-same"), ("retail", "evt-retail-2"), ("retail", "evt-same")]
