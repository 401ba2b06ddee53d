"""The emitter against a real broker (Tansu): events arrive decoded and keyed, the spool is
sent exactly once when Kafka comes back, and `run` reports both ends of a command."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from shipledger.cli import cli
from shipledger.producers.emitter.publisher import Publisher
from shipledger.producers.emitter.spool import Spool
from shipledger.schemas.topics import Topics
from shipledger.settings import Settings
from shipledger.up.broker import free_port
from tests.kit import META, SHA, CliEnv, Consume, deployment_event, invoke, run_shipledger

pytestmark = pytest.mark.integration


@pytest.fixture
def env(
    settings: Settings,
    broker: str,
    topics: Topics,
    cli_env: CliEnv,
    use_env: Callable[[dict[str, str]], None],
) -> Iterator[dict[str, str]]:
    """os.environ of a CI job whose SHIPLEDGER_BOOTSTRAP_SERVERS is the test broker."""
    clean = cli_env(settings, broker)
    use_env(clean)
    yield clean


def test_emit_arrives_decoded_and_keyed(
    consume: Consume, env: dict[str, str], broker: str, topics: Topics, settings: Settings
) -> None:
    env_ci = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_SHA": SHA,
        "GITHUB_ACTOR": "octocat",
        "GITHUB_REPOSITORY": "acme/checkout",
        "GITHUB_RUN_ID": "77",
        "GITHUB_SERVER_URL": "https://github.com",
    }
    result = CliRunner().invoke(
        cli,
        [
            "emit",
            "succeeded",
            "--service",
            "checkout",
            "--environment",
            "prod",
            "--deployment-id",
            "dep-emit",
            "--artifact-digest",
            "ab" * 32,
            "--attr",
            "canary=10%",
            "--occurred-at",
            "2026-11-26T10:00:00.123Z",
        ],
        env=env_ci,
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.stderr
    event_id = result.stdout.strip()
    ((key, event, _),) = consume(broker, topics.raw, 1)
    assert key == b"default/dep-emit"
    assert event.event_id == event_id
    assert (event.event_type, event.service, event.environment) == ("succeeded", "checkout", "prod")
    assert (event.commit_sha, event.actor, event.repository) == (SHA, "octocat", "acme/checkout")
    assert event.pipeline_provider == "github_actions"
    assert event.pipeline_run_url == "https://github.com/acme/checkout/actions/runs/77"
    assert event.artifact_digest == "sha256:" + "ab" * 32
    assert event.attributes == {"canary": "10%"}
    assert event.occurred_at.isoformat() == "2026-11-26T10:00:00.123000+00:00"
    assert Spool(settings).pending() == 0


def test_run_failing_command_subprocess(
    consume: Consume, env: dict[str, str], broker: str, topics: Topics, tmp_path: Path
) -> None:
    fails = ["sh", "-c", "exit 3"]
    proc = run_shipledger(
        "run", *META, "--deployment-id", "dep-run", "--", *fails, env=env, cwd=tmp_path
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == ""  # run's stdout belongs to the command
    events = consume(broker, topics.raw, 2)
    assert [e.event_type for _, e, _ in events] == ["started", "failed"]
    (_, started, p1), (_, failed, p2) = events
    assert p1 == p2  # one deployment, one partition, in order
    assert failed.exit_code == 3
    assert failed.duration_ms is not None
    assert started.deployment_id == failed.deployment_id == "dep-run"


def test_spool_survives_an_outage_and_flush_sends_it_exactly_once(
    consume: Consume, env: dict[str, str], broker: str, topics: Topics, settings: Settings
) -> None:
    down = f"127.0.0.1:{free_port()}"
    ids = []
    for event_type in ("started", "succeeded"):
        result = invoke("emit", event_type, *META, "--deployment-id", "dep-sp", "--bootstrap", down)
        assert result.exit_code == 0
        assert "spooled to" in result.stderr
        ids.append(result.stdout.strip())
    spool = Spool(settings)
    assert spool.pending() == 2

    still_down = invoke("flush", "--bootstrap", down)
    assert still_down.exit_code == 1
    assert still_down.stdout.startswith("sent 0, 2 remaining")
    assert spool.pending() == 2

    flushed = invoke("flush")
    assert flushed.exit_code == 0, flushed.stderr
    assert flushed.stdout.startswith("sent 2, 0 remaining")
    assert spool.pending() == 0
    again = invoke("flush")
    assert again.stdout.startswith("sent 0, 0 remaining")

    events = consume(broker, topics.raw, 2, settle_s=1.0)
    assert [e.event_id for _, e, _ in events] == ids  # exactly once, in order
    assert [e.event_type for _, e, _ in events] == ["started", "succeeded"]


def test_publish_many_fast_path(
    consume: Consume, settings: Settings, broker: str, topics: Topics
) -> None:
    events = [
        deployment_event(deployment_id=f"d-{i % 20}", service="svc", actor="bot")
        for i in range(2000)
    ]
    delivered: list[int] = []
    with Publisher(settings, broker) as publisher:
        count = publisher.publish_many(events, on_delivery=lambda err, msg: delivered.append(1))
    assert count == len(delivered) == 2000
    received = consume(broker, topics.raw, 2000)
    assert sorted(e.event_id for _, e, _ in received) == sorted(e.event_id for e in events)
    by_key: dict[bytes, set[int]] = {}
    for key, _, partition in received:
        by_key.setdefault(key, set()).add(partition)
    assert all(len(parts) == 1 for parts in by_key.values())
