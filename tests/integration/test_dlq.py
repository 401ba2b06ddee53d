"""`shipledger dlq list|show|replay` against a running stack on the session's Tansu broker."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from click.testing import CliRunner, Result
from confluent_kafka import Consumer, Producer, TopicPartition

from shipledger.cli import cli
from shipledger.dlq import read_letters
from shipledger.logging import configure_logging
from shipledger.schemas.registry import AvroCodec
from shipledger.settings import Settings
from shipledger.up.stack import Stack
from tests.kit import deployment_event, ledger_env

pytestmark = pytest.mark.integration

#: What a producer that skips validation sends: a valid event with a short commit SHA.
BAD_SHA_EVENT = {
    **deployment_event(event_id="e-dlq-bad", deployment_id="dep-dlq-bad").to_avro(),
    "commit_sha": "abc123",
}


@pytest.fixture(autouse=True)
def logs_on_stderr(stack_settings: Settings) -> None:
    """As `up` does at its start: the stack's logs go to stderr, never into a command's stdout
    (its sink runs on a thread of this process, beside the commands under test). Autouse, so
    it is set up before `stack`."""
    configure_logging(stack_settings)


def run(stack: Stack, *args: str) -> Result:
    env = {
        "SHIPLEDGER_BOOTSTRAP_SERVERS": stack.bootstrap,
        "SHIPLEDGER_TOPIC_PREFIX": stack.settings.topic_prefix,
        **ledger_env(stack.settings.data_dir),
    }
    result = CliRunner().invoke(cli, ["dlq", *args], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def wait_letters(stack: Stack, want: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    have = 0
    while time.monotonic() < deadline:
        stack.check()
        have = len(read_letters(stack.settings, stack.bootstrap, stack.topics.dlq))
        if have >= want:
            return have
        time.sleep(0.3)
    return have


def raw_messages(stack: Stack) -> list[tuple[bytes | None, dict[str, bytes]]]:
    consumer = Consumer(
        {
            "bootstrap.servers": stack.bootstrap,
            "group.id": "it-dlq-raw",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,
        }
    )
    consumer.assign([TopicPartition(stack.topics.raw, p, 0) for p in range(2)])
    out: list[tuple[bytes | None, dict[str, bytes]]] = []
    pending = {0, 1}
    deadline = time.monotonic() + 30
    while pending and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        if msg.error() is not None:
            pending.discard(msg.partition())
            continue
        headers: Any = msg.headers() or []
        out.append((msg.value(), {k: v for k, v in headers if isinstance(v, bytes)}))
    consumer.close()
    return out


def test_list_show_and_replay_dead_letters(stack: Stack) -> None:
    assert "No dead letters" in run(stack, "list").stdout

    codec = AvroCodec("io.shipledger.v1.DeploymentEvent")
    producer = Producer(stack.settings.kafka_producer(stack.bootstrap))
    producer.produce(stack.topics.raw, key=b"dep-dlq-bad", value=codec.encode(BAD_SHA_EVENT))
    producer.produce(stack.topics.raw, key=b"dep-dlq-junk", value=b"{not avro}")
    assert producer.flush(10) == 0
    assert wait_letters(stack, 2) == 2

    table = run(stack, "list").stdout
    lines = table.splitlines()
    assert lines[0].split()[:5] == ["ID", "STAGE", "SOURCE", "FIELD", "REASON"]
    assert len(lines) == 4  # header, rule, two letters
    assert all(" processors " in line for line in lines[2:])
    assert any(" commit_sha " in line for line in lines[2:])
    assert stack.topics.raw in table

    letters = [
        json.loads(line) for line in run(stack, "list", "--format", "json").stdout.splitlines()
    ]
    assert {x["stage"] for x in letters} == {"processors"}
    assert {x["source_topic"] for x in letters} == {stack.topics.raw}
    sha = next(x for x in letters if x["field"] == "commit_sha")
    junk = next(x for x in letters if x is not sha)
    assert "full commit SHA" in sha["reason"]
    assert "magic byte" in junk["reason"]
    # The sink (a thread of this process, reading the DLQ into the ledger) may log first.
    listed = run(stack, "list", "--stage", "sink").stdout.splitlines()
    assert listed[-1].startswith("No dead letters")
    assert len(run(stack, "list", "--limit", "1").stdout.splitlines()) == 3

    shown = run(stack, "show", sha["id"]).stdout
    assert "payload (DeploymentEvent):" in shown
    assert '"commit_sha": "abc123"' in shown
    assert '"deployment_id": "dep-dlq-bad"' in shown
    assert "source_offset" in shown and "stage" in shown
    shown = run(stack, "show", junk["id"]).stdout
    assert "payload (raw bytes):" in shown
    assert "b'{not avro}'" in shown and "not a valid Avro" in shown

    dry = run(stack, "replay", "--all", "--dry-run").stdout
    assert "2 letter(s) would be replayed" in dry
    time.sleep(1.0)
    # A dry run sends nothing.
    assert len(read_letters(stack.settings, stack.bootstrap, stack.topics.dlq)) == 2

    assert "Replayed 2 letter(s)." in run(stack, "replay", "--all").stdout
    # Still bad: both come back as new letters, with their reasons, naming their origin.
    assert wait_letters(stack, 4) == 4
    again = [
        json.loads(line) for line in run(stack, "list", "--format", "json").stdout.splitlines()
    ]
    returned = [x for x in again if x["id"] not in {sha["id"], junk["id"]}]
    assert len(returned) == 2
    assert {x["field"] for x in returned} == {"commit_sha", None}
    assert sorted(x["reason"] for x in returned) == sorted([sha["reason"], junk["reason"]])

    replayed = [h for _, h in raw_messages(stack) if "replayed_from" in h]
    assert sorted(h["replayed_from"].decode() for h in replayed) == sorted([sha["id"], junk["id"]])
    assert {v for v, h in raw_messages(stack) if "replayed_from" in h} >= {b"{not avro}"}


def test_show_and_replay_of_a_missing_letter_fail_clearly(stack: Stack) -> None:
    # The data dir too: another test file's stack may be running in this session (two pytest
    # workers), and a command that finds two stacks asks which one.
    env = {
        "SHIPLEDGER_BOOTSTRAP_SERVERS": stack.bootstrap,
        "SHIPLEDGER_TOPIC_PREFIX": stack.settings.topic_prefix,
        **ledger_env(stack.settings.data_dir),
    }
    shown = CliRunner().invoke(cli, ["dlq", "show", "0:99"], env=env)
    assert shown.exit_code == 1 and "no letter 0:99" in shown.output
    replayed = CliRunner().invoke(cli, ["dlq", "replay", "1:5"], env=env)
    assert replayed.exit_code == 1 and "no such letter(s)" in replayed.output
