"""`shipledger alerts tail` and `alerts list` on a real stack (ingest API → Tansu → Faust
worker → alerts topic → sink → chDB), run as child processes the way an SRE runs them.

Two deployments of tenant retail (of builds their CI published) raise alerts: dep-pay (team
payments, change CHG-P not yet approved) and dep-search (team search, no change ticket);
CHG-P's approval then arrives and resolves dep-pay's alert. `tail --follow` sees them live
and exits 0 on Ctrl-C; `tail` and `list` filter and show the resolution; a team-scoped API
token bounds what `list` returns, and what `tail` (history and --follow) returns through the
API.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from shipledger.alert_view import SEVERITIES
from shipledger.schemas.registry import topic_codec
from shipledger.schemas.topics import ALERTS
from shipledger.settings import Settings
from shipledger.topics import ensure_topics
from shipledger.up.stack import Stack
from tests.kit import (
    SHIPLEDGER,
    api_build,
    api_change,
    api_token,
    built,
    ledger_env,
    policy_stack,
    post_events,
    run_shipledger,
    sample_alert,
    wait_for,
    wait_until,
)

pytestmark = pytest.mark.integration

TENANT = "retail"
TEAMS = ("payments", "search")
POLICY = """
version: alerts-1
defaults:
  timezone: UTC
  require_change_ticket: [prod]
"""


@pytest.fixture(scope="module")
def stack(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with policy_stack(broker, tmp_path_factory.mktemp("alerts"), POLICY) as running:
        yield running


@pytest.fixture(scope="module")
def env(stack: Stack, broker: str) -> dict[str, str]:
    """The environment of an SRE's shell on the stack's machine."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SHIPLEDGER_")}
    return {
        **clean,
        "SHIPLEDGER_STACKS_DIR": os.environ["SHIPLEDGER_STACKS_DIR"],
        **ledger_env(stack.settings.data_dir),
        "SHIPLEDGER_TOPIC_PREFIX": stack.settings.topic_prefix,
        "SHIPLEDGER_BOOTSTRAP_SERVERS": broker,
    }


def _token(stack: Stack, scopes: tuple[str, ...], teams: tuple[str, ...] = ()) -> str:
    return api_token(stack.settings, TENANT, scopes, name="alerts-test", teams=teams)


def _post(stack: Stack, *objects: dict[str, Any]) -> None:
    post_events(stack, _token(stack, ("ingest",)), TENANT, *objects)


def _deployment(dep: str, team: str, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": f"{dep}-started",
        "deployment_id": dep,
        "event_type": "started",
        "service": f"svc-{team}",
        "environment": "production",
        "team": team,
        "commit_sha": "0f" * 20,
        "actor": "ci-bot",
        "occurred_at": "2026-11-25T10:00:00+00:00",
        **built(f"svc-{team}"),
        **extra,
    }


class Follower:
    """`shipledger alerts tail --follow --format json` in the background; its lines parsed."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [SHIPLEDGER, "alerts", "tail", "--follow", "--format", "json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.alerts: list[dict[str, Any]] = []
        self._stderr: list[str] = []
        # stderr is drained as it comes too: a full pipe would block the follower's notices.
        self._readers = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.alerts.append(json.loads(line))

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        self._stderr.extend(self.proc.stderr)

    def stop(self) -> tuple[int, str]:
        """Ctrl-C; the exit code and stderr."""
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=60)
        for reader in self._readers:
            reader.join(timeout=10)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.proc.stdout.close()
        self.proc.stderr.close()
        return code, "".join(self._stderr)


@pytest.fixture(scope="module")
def raised(stack: Stack, env: dict[str, str]) -> dict[str, Any]:
    """Both alerts and the resolution, as `tail --follow` printed them while they happened."""
    follower = Follower(env)
    try:
        _post(
            stack,
            api_change("p-open", "CHG-P", "opened", "2026-11-25T08:00:00+00:00"),
            *(api_build(f"svc-{team}", "2026-11-25T09:00:00+00:00") for team in TEAMS),
        )
        wait_until(stack, lambda: _count(stack, "change_events") == 1, "the change request")
        wait_until(stack, lambda: _count(stack, "artifact_events") == len(TEAMS), "the builds")
        _post(stack, _deployment("dep-pay", "payments", change_id="CHG-P"))
        _post(stack, _deployment("dep-search", "search"))
        wait_for(lambda: len(_alerts(follower, "alert")) >= 2, "both alerts, live", 120)
        _post(stack, api_change("p-approve", "CHG-P", "approved", "2026-11-25T09:45:00+00:00"))
        wait_for(lambda: bool(_alerts(follower, "resolution")), "the resolution, live", 120)
        wait_until(stack, lambda: _count(stack, "alerts") == 3, "the alerts in the ledger")
    finally:
        code, stderr = follower.stop()
    assert code == 0, stderr
    assert "Traceback" not in stderr, stderr
    return {"alerts": follower.alerts}


def _count(stack: Stack, table: str) -> int:
    assert stack.store is not None
    return int(stack.store.query(f"SELECT count() FROM shipledger.{table}")[1][0][0])


def _alerts(follower: Follower, kind: str) -> list[dict[str, Any]]:
    return [a for a in follower.alerts if a["kind"] == kind]


def _lines(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_tail_follow_sees_alerts_and_their_resolution_live(raised: dict[str, Any]) -> None:
    live = raised["alerts"]
    by_deployment = {a["deployment_id"]: a for a in live if a["kind"] == "alert"}
    assert set(by_deployment) == {"dep-pay", "dep-search"}
    assert by_deployment["dep-pay"]["rule"] == "change_not_approved"
    assert by_deployment["dep-pay"]["team"] == "payments"
    (resolution,) = [a for a in live if a["kind"] == "resolution"]
    assert resolution["resolves"] == by_deployment["dep-pay"]["alert_id"]
    assert resolution["deployment_id"] == "dep-pay"
    # JSON lines for jq: the schema's fields, ISO timestamps.
    assert resolution["detected_at"].endswith("+00:00")


def test_tail_without_follow_prints_what_is_there_and_filters(
    raised: dict[str, Any], env: dict[str, str]
) -> None:
    every = _lines(run_shipledger("alerts", "tail", "--format", "json", env=env))
    assert sorted(a["alert_id"] for a in every) == sorted(a["alert_id"] for a in raised["alerts"])
    payments = _lines(
        run_shipledger("alerts", "tail", "--format", "json", "--team", "payments", env=env)
    )
    assert {a["deployment_id"] for a in payments} == {"dep-pay"} and len(payments) == 2
    by_service = _lines(
        run_shipledger(
            "alerts", "tail", "--format", "json", "--service", "svc-search", "--rule",
            "missing_change_ticket,change_not_approved", env=env,
        )
    )  # fmt: skip
    assert [a["deployment_id"] for a in by_service] == ["dep-search"]
    for severity in SEVERITIES:
        shown = _lines(
            run_shipledger(
                "alerts", "tail", "--format", "json", "--min-severity", severity, env=env
            )
        )
        rank = SEVERITIES.index(severity)
        expected = [a for a in every if SEVERITIES.index(a["severity"]) >= rank]
        assert sorted(a["alert_id"] for a in shown) == sorted(a["alert_id"] for a in expected)
    none = run_shipledger("alerts", "tail", "--environment", "staging", "--since", "1h", env=env)
    assert none.returncode == 0 and none.stdout == "", none.stderr


def test_tail_reads_each_partition_to_its_true_end(
    broker: str, settings: Settings, tmp_path: Path
) -> None:
    """Tansu answers ListOffsets(latest) with the base offset of a partition's last record
    batch + 1 (`shipledger.lag`): `tail` bounded by it printed the first alert of that batch
    and none after. Ten alerts produced in one batch to one partition: all ten are printed."""
    ensure_topics(settings, broker)
    codec = topic_codec(ALERTS)
    producer = Producer({**settings.kafka_producer(broker), "linger.ms": 500})
    ids = [f"evt-{i}:missing_change_ticket" for i in range(10)]
    for alert_id in ids:
        alert = sample_alert(alert_id=alert_id, event_id=alert_id.split(":")[0])
        producer.produce(settings.topic(ALERTS), codec.encode(alert.to_avro()), partition=0)
    assert producer.flush(30) == 0
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SHIPLEDGER_")}
    env = {
        **clean,
        "SHIPLEDGER_STACKS_DIR": str(tmp_path),  # no stack: tail reads the broker itself
        "SHIPLEDGER_TOPIC_PREFIX": settings.topic_prefix,
        "SHIPLEDGER_BOOTSTRAP_SERVERS": broker,
    }
    done = run_shipledger("alerts", "tail", "--format", "json", env=env)
    assert done.returncode == 0, done.stderr
    assert sorted(a["alert_id"] for a in _lines(done)) == ids


def test_tail_text_shows_the_resolution_as_such(
    raised: dict[str, Any], env: dict[str, str]
) -> None:
    text = run_shipledger("alerts", "tail", "--tenant", TENANT, env=env)
    assert text.returncode == 0, text.stderr
    alert_id = next(a["alert_id"] for a in raised["alerts"] if a["deployment_id"] == "dep-pay")
    (resolved,) = [line for line in text.stdout.splitlines() if " RESOLVED " in line]
    assert f"resolves {alert_id}:" in resolved
    assert "change_not_approved  retail/svc-payments/prod (payments)  deploy dep-pay" in resolved
    assert len(text.stdout.splitlines()) == 3


def test_list_reads_the_ledger_with_the_same_filters(
    raised: dict[str, Any], env: dict[str, str]
) -> None:
    stored = _lines(run_shipledger("alerts", "list", "--format", "json", env=env))
    assert sorted(a["alert_id"] for a in stored) == sorted(a["alert_id"] for a in raised["alerts"])
    tail = {a["alert_id"]: a for a in raised["alerts"]}
    for alert in stored:  # the same JSON, whichever way it was read
        assert alert == tail[alert["alert_id"]]
    latest = _lines(run_shipledger("alerts", "list", "--format", "json", "--limit", "1", env=env))
    assert latest == [max(stored, key=lambda a: (a["detected_at"], a["alert_id"]))]
    search = _lines(
        run_shipledger("alerts", "list", "--format", "json", "--team", "search", env=env)
    )
    assert [a["deployment_id"] for a in search] == ["dep-search"]


def test_list_through_the_api_is_bounded_by_the_tokens_team(
    stack: Stack, raised: dict[str, Any], env: dict[str, str]
) -> None:
    assert stack.api is not None and raised
    scoped = {
        **env,
        "SHIPLEDGER_API_URL": stack.api.url,
        "SHIPLEDGER_API_TOKEN": _token(stack, ("read",), teams=("payments",)),
    }
    mine = _lines(run_shipledger("alerts", "list", "--format", "json", env=scoped))
    assert {a["deployment_id"] for a in mine} == {"dep-pay"} and len(mine) == 2
    # Asking for another team's alerts finds none: the token's scope wins over the filter.
    other = run_shipledger("alerts", "list", "--team", "search", env=scoped)
    assert other.returncode == 0 and other.stdout == "", other.stderr


def _deployments(alerts: list[dict[str, Any]]) -> set[str]:
    return {a["deployment_id"] for a in alerts}


def test_tail_through_the_api_is_bounded_by_the_tokens_team(
    stack: Stack, raised: dict[str, Any], env: dict[str, str]
) -> None:
    assert stack.api is not None and raised
    api = {**env, "SHIPLEDGER_API_URL": stack.api.url}
    del api["SHIPLEDGER_BOOTSTRAP_SERVERS"]  # the API, not Kafka, is what is read
    tenant_wide = {**api, "SHIPLEDGER_API_TOKEN": _token(stack, ("read",))}
    search = {**api, "SHIPLEDGER_API_TOKEN": _token(stack, ("read",), teams=("search",))}
    history = _lines(run_shipledger("alerts", "tail", "--format", "json", env=search))
    assert _deployments(history) == {"dep-search"}
    # The same JSON as from Kafka, whichever way it was read.
    assert history == [a for a in raised["alerts"] if a["deployment_id"] == "dep-search"]

    everyone, team = Follower(tenant_wide), Follower(search)
    try:
        # Each prints the ledger's alerts after opening the stream: then it is subscribed.
        wait_for(lambda: "dep-pay" in _deployments(everyone.alerts), "the tenant's history", 60)
        wait_for(lambda: "dep-search" in _deployments(team.alerts), "the team's history", 60)
        _post(stack, _deployment("dep-pay-2", "payments"), _deployment("dep-search-2", "search"))
        wait_for(
            lambda: {"dep-pay-2", "dep-search-2"} <= _deployments(everyone.alerts),
            "both new alerts on the tenant-wide stream",
            120,
        )
        # Later on the stream than dep-pay-2 for every client: once the team's client has it,
        # it was offered dep-pay-2 too.
        _post(stack, _deployment("dep-search-marker", "search"))
        wait_for(lambda: "dep-search-marker" in _deployments(team.alerts), "the marker", 120)
    finally:
        codes = [follower.stop() for follower in (everyone, team)]
    for code, stderr in codes:
        assert code == 0, stderr
        assert "Traceback" not in stderr, stderr
    assert _deployments(team.alerts) == {"dep-search", "dep-search-2", "dep-search-marker"}
    assert {a["team"] for a in team.alerts} == {"search"}
    assert len(team.alerts) == len({a["alert_id"] for a in team.alerts})  # each shown once
    live = next(a for a in team.alerts if a["deployment_id"] == "dep-search-2")
    assert list(live) == list(history[0]) and live["detected_at"].endswith("+00:00")
    assert live["actor"] == "ci-bot"  # a field the dashboard does not show: the whole alert


def test_bad_flags_are_usage_errors_naming_the_flag(env: dict[str, str]) -> None:
    for args, flag in (
        (["tail", "--min-severity", "urgent"], "--min-severity"),
        (["tail", "--since", "yesterday"], "--since"),
        (["list", "--limit", "0"], "--limit"),
        (["list", "--team", "a,,b"], "--team"),
        (["tail", "--format", "yaml"], "--format"),
    ):
        result = run_shipledger("alerts", *args, env=env)
        assert result.returncode == 2, (args, result.stderr)
        assert flag in result.stderr, (args, result.stderr)


def test_help_teaches_with_examples(env: dict[str, str]) -> None:
    for command in ("tail", "list"):
        result = run_shipledger("alerts", command, "--help", env=env)
        assert result.returncode == 0
        assert f"shipledger alerts {command} --" in result.stdout
    assert "operator" in run_shipledger("alerts", "tail", "--help", env=env).stdout
