"""Judgement against change requests end to end on real components: the ingest API → Tansu →
Faust worker (enrichment view, change rules, re-judgement) → Tansu → sink → chDB.

Change requests, catalog entries and deployments go through `POST /v1/events`; late and
out-of-order change events too. What is checked is read back from ClickHouse: alerts,
resolutions (new rows naming the alert they resolve, never edits), the `open_alerts` and
`change_window_discrepancies` views, and the team, application and tier on every record and
alert.
"""

from __future__ import annotations

import functools
import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from shipledger.cli import cli
from shipledger.lag import committed_offsets, end_offsets, lag_by_topic, partitions_of
from shipledger.schemas.policy import parse_policy, text_sha256
from shipledger.sinks.ledger.audit import verify
from shipledger.up.stack import Stack
from tests.identity_kit import Slapd
from tests.kit import (
    api_change,
    api_token,
    invoke,
    ledger_env,
    policy_stack,
    post_events,
    query_until,
    wait_drained,
    wait_for,
    wait_until,
)

pytestmark = pytest.mark.integration

TENANT = "retail"
SHA = "0f" * 20
POLICY = """
version: gov-1
defaults:
  timezone: UTC
  require_change_ticket: [prod]
  # About other rules: their prod deployments carry no built digest.
  require_artifact_digest: []
  change_window_tolerance: 15m
"""
START = "2026-11-25T10:00:00+00:00"


@pytest.fixture
def stack(broker: str, tmp_path: Path) -> Iterator[Stack]:
    with policy_stack(broker, tmp_path, POLICY) as running:
        yield running


Post = Callable[..., None]


@pytest.fixture
def post(stack: Stack) -> Post:
    """POSTs objects to the stack's ingest API as tenant retail (202 or the test fails)."""
    return poster(stack)


def poster(stack: Stack) -> Post:
    """A `Post` to `stack`'s ingest API."""
    return functools.partial(post_events, stack, api_token(stack.settings, TENANT), TENANT)


#: CHG-W: approved for a window that closes at 09:00 on the day of the deployments.
WINDOW_APPROVED = api_change(
    "w-approve",
    "CHG-W",
    "approved",
    "2026-11-24T12:00:00+00:00",
    planned_start="2026-11-25T06:00:00+00:00",
    planned_end="2026-11-25T09:00:00+00:00",
)


def checkout_entry(**extra: Any) -> dict[str, Any]:
    """The service catalog's entry of checkout, owned by payments-team, with `extra` fields."""
    return {
        "family": "catalog",
        "event_id": "cat-checkout",
        "entity": "service",
        "action": "created",
        "name": "checkout",
        "owner_team": "payments-team",
        "occurred_at": "2026-11-01T00:00:00+00:00",
        **extra,
    }


def deployment(dep: str, change_id: str | None, at: str = START, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": f"{dep}-started",
        "deployment_id": dep,
        "event_type": "started",
        "service": "checkout",
        "environment": "production",
        "commit_sha": SHA,
        "actor": "ci-bot",
        "occurred_at": at,
        **({"change_id": change_id} if change_id else {}),
        **extra,
    }


def open_rules(dep: str) -> str:
    return f"SELECT rule FROM open_alerts WHERE deployment_id = '{dep}' ORDER BY rule"


def wait_open(stack: Stack, dep: str, *rules: str) -> None:
    """Wait until the open alerts of deployment `dep` are those of `rules` (in order); fail
    showing those open at the deadline."""
    want = [(rule,) for rule in rules]
    assert query_until(stack, open_rules(dep), want) == want


def judged_after(
    stack: Stack, post: Post, changes: list[dict[str, Any]], *deployments: dict[str, Any]
) -> None:
    """Post `changes` (change events and catalog entries), wait until the ledger holds their
    change events, then post `deployments`: the worker judges them knowing those changes."""
    post(*changes)
    count = sum(1 for c in changes if c.get("family") == "change")
    query_until(stack, "SELECT count() FROM change_events", [(count,)])
    post(*deployments)


def test_change_requests_judge_deployments_late_data_resolves(stack: Stack, post: Post) -> None:
    assert stack.store is not None
    judged_after(
        stack,
        post,
        [
            checkout_entry(application="webshop", tier="tier-1", repository="retail/checkout"),
            api_change("r-open", "CHG-R", "opened", "2026-11-25T08:00:00+00:00"),
            api_change("r-reject", "CHG-R", "rejected", "2026-11-25T09:30:00+00:00"),
            api_change("l-open", "CHG-L", "opened", "2026-11-25T08:00:00+00:00"),
            api_change("a-open", "CHG-A", "opened", "2026-11-25T08:00:00+00:00"),
            WINDOW_APPROVED,
        ],
        deployment("dep-rejected", "CHG-R"),
        deployment("dep-unknown", "CHG-NONE"),
        deployment("dep-late", "CHG-L"),
        deployment("dep-after", "CHG-A"),
        deployment("dep-window", "CHG-W"),
        deployment("dep-own-team", None, environment="dev", team="search-team"),
    )
    wait_open(stack, "dep-rejected", "change_not_approved")
    wait_open(stack, "dep-unknown", "change_ticket_unknown")
    # Started 10:00, the window ended 09:00: an hour late (tolerance 15m).
    wait_open(stack, "dep-window", "outside_change_window")
    wait_open(stack, "dep-late", "change_not_approved")
    wait_open(stack, "dep-after", "change_not_approved")

    # Late data: CHG-L's approval happened at 09:45, before the start, and arrives now;
    # CHG-A's happened at 10:05, after the start.
    post(
        api_change("l-approve", "CHG-L", "approved", "2026-11-25T09:45:00+00:00"),
        api_change("a-approve", "CHG-A", "approved", "2026-11-25T10:05:00+00:00"),
    )
    wait_open(stack, "dep-late")
    _, rows = stack.store.query(
        "SELECT r.rule, r.resolves = a.alert_id, r.message FROM alerts AS r "
        "INNER JOIN alerts AS a ON a.alert_id = r.resolves "
        "WHERE r.kind = 'resolution' AND r.deployment_id = 'dep-late'"
    )
    assert len(rows) == 1
    rule, names_the_alert, message = rows[0]
    assert (rule, names_the_alert) == ("change_not_approved", True)
    assert "'approved' when the deployment started" in message
    assert query_until(
        stack,
        "SELECT change_state, seq, event_count FROM deployments WHERE deployment_id = 'dep-late'",
        [("approved", 2, 1)],
    ) == [("approved", 2, 1)]
    # The approval after the start excuses nothing: the alert stands, never raised twice
    # (once what the worker made of the approvals is stored).
    wait_drained(stack)
    assert stack.store.query(open_rules("dep-after"))[1] == [("change_not_approved",)]
    _, rows = stack.store.query(
        "SELECT kind, count() FROM alerts WHERE deployment_id = 'dep-after' GROUP BY kind"
    )
    assert rows == [("alert", 1)]

    # Team, application and tier from the catalog, on every record and alert; a deployment
    # naming its own team keeps it.
    _, rows = stack.store.query(
        "SELECT DISTINCT team, application, tier FROM deployment_records "
        "WHERE deployment_id != 'dep-own-team'"
    )
    assert rows == [("payments-team", "webshop", "tier-1")]
    _, rows = stack.store.query("SELECT DISTINCT team, application, tier FROM alerts")
    assert rows == [("payments-team", "webshop", "tier-1")]
    assert query_until(
        stack,
        "SELECT team, application, repository FROM deployments "
        "WHERE deployment_id = 'dep-own-team'",
        [("search-team", "webshop", "retail/checkout")],
    ) == [("search-team", "webshop", "retail/checkout")]

    # The actual-versus-scheduled difference for process review.
    _, rows = stack.store.query(
        "SELECT deployment_id, outside_window_s, direction, alerted "
        "FROM change_window_discrepancies"
    )
    assert rows == [("dep-window", 3600, "late", True)]
    report = verify(stack.store)
    assert report.clean, report.text()


MANUAL_POLICY = POLICY + "  service_accounts: [release-bot]\n"
MANUAL_ACTORS = ("alice", "release-bot", "mallory")


def _manual_deployers_judged(stack: Stack, mallory: list[str]) -> dict[str, list[str]]:
    """Open alerts of manual prod deployments under an approved change by alice (a person of
    the slapd directory), release-bot (a service account of the policy) and mallory (neither),
    once mallory's are `mallory`, all three are in the ledger and a control deployment's
    alert is too (alerts flow)."""
    assert stack.store is not None
    judged_after(
        stack,
        poster(stack),
        [api_change("m-approve", "CHG-M", "approved", "2026-11-25T08:00:00+00:00")],
        *(deployment(f"dep-{a}", "CHG-M", actor=a, trigger="manual") for a in MANUAL_ACTORS),
        deployment("dep-control", "CHG-NONE"),
    )
    query_until(stack, "SELECT count() FROM deployments", [(4,)])
    query_until(stack, open_rules("dep-control"), [("change_ticket_unknown",)])
    query_until(stack, open_rules("dep-mallory"), [(rule,) for rule in mallory])
    # alice's and release-bot's alerts, if any, may be in the other partition of the alerts
    # topic than those awaited.
    wait_drained(stack)
    return {a: [r for (r,) in stack.store.query(open_rules(f"dep-{a}"))[1]] for a in MANUAL_ACTORS}


def test_the_stream_knows_manual_deployers_from_the_directory(
    broker: str, tmp_path: Path, slapd: Slapd
) -> None:
    directory = slapd.settings()
    with policy_stack(broker, tmp_path / "up", MANUAL_POLICY, **directory) as stack:
        assert _manual_deployers_judged(stack, ["unattributed_manual_deploy"]) == {
            "alice": [],
            "release-bot": [],
            "mallory": ["unattributed_manual_deploy"],
        }
    # The directory down: it judges nobody (no false alert); service accounts still count.
    down = {**directory, "ldap_url": "ldap://127.0.0.1:9", "identity_timeout_s": 1}
    with policy_stack(broker, tmp_path / "down", MANUAL_POLICY, **down) as stack:
        assert _manual_deployers_judged(stack, []) == {
            "alice": [],
            "release-bot": [],
            "mallory": [],
        }


def test_out_of_order_and_duplicate_change_events_give_one_outcome(
    stack: Stack, post: Post
) -> None:
    """The same change events, delivered after the deployments in order to one and shuffled
    with duplicates to the other: the same alerts hold and the same facts are recorded, and no
    alert or resolution is stored twice."""
    assert stack.store is not None
    opened = ("opened", "2026-11-25T08:00:00+00:00")
    approved = ("approved", "2026-11-25T09:00:00+00:00")
    rejected = ("rejected", "2026-11-25T09:30:00+00:00")
    window = {
        "planned_start": "2026-11-25T09:50:00+00:00",
        "planned_end": "2026-11-25T12:00:00+00:00",
    }
    post(deployment("dep-in-order", "CHG-IN"), deployment("dep-shuffled", "CHG-SH"))
    for dep in ("dep-in-order", "dep-shuffled"):
        query_until(stack, open_rules(dep), [("change_ticket_unknown",)])

    def events(change_id: str) -> list[dict[str, Any]]:
        return [
            api_change(f"{change_id}-{state}", change_id, state, at, **window)
            for state, at in (opened, approved, rejected)
        ]

    for event in events("CHG-IN"):
        post(event)
    o, a, r = events("CHG-SH")
    for batch in ((r,), (a, r), (o,), (a,), (o, r)):
        post(*batch)

    for dep in ("dep-in-order", "dep-shuffled"):
        # As of 10:00 the request was rejected (09:30): only that holds.
        wait_open(stack, dep, "change_not_approved")
    facts = (
        "SELECT change_state, outside_window_s, alert_rules FROM deployments "
        "WHERE deployment_id = '{}'"
    )
    want = [("rejected", 0, ["change_not_approved"])]
    assert query_until(stack, facts.format("dep-in-order"), want) == want
    assert query_until(stack, facts.format("dep-shuffled"), want) == want
    assert query_until(stack, "SELECT count() FROM change_events", [(6,)]) == [(6,)]
    wait_drained(stack)  # nothing more arrives
    _, rows = stack.store.query(
        "SELECT count() - uniqExact(alert_id), countIf(kind = 'resolution') - "
        "uniqExactIf(resolves, kind = 'resolution') FROM alerts"
    )
    assert rows == [(0, 0)]


CANDIDATE = """
version: gov-2
defaults:
  timezone: UTC
  require_change_ticket: [prod, stage]
  require_artifact_digest: []
  change_window_tolerance: 2h
"""


def test_policy_simulate_rejudges_the_ledger_under_a_candidate(
    stack: Stack, post: Post, tmp_path: Path
) -> None:
    """`shipledger policy simulate` over what the stream stored: a stricter ticket rule adds
    an alert, a wider window tolerance removes one, a resolved alert counts as not holding,
    and a deployment outside --from/--to is not judged."""
    assert stack.store is not None
    judged_after(
        stack,
        post,
        [
            checkout_entry(),
            api_change("r-reject", "CHG-R", "rejected", "2026-11-25T09:30:00+00:00"),
            api_change("l-open", "CHG-L", "opened", "2026-11-25T08:00:00+00:00"),
            WINDOW_APPROVED,
        ],
        deployment("dep-rejected", "CHG-R"),
        deployment("dep-late", "CHG-L"),
        deployment("dep-window", "CHG-W"),
        deployment("dep-stage", None, environment="stage"),
        deployment("dep-stage-old", None, at="2026-10-01T10:00:00+00:00", environment="stage"),
    )
    wait_open(stack, "dep-window", "outside_change_window")
    wait_open(stack, "dep-rejected", "change_not_approved")
    wait_open(stack, "dep-late", "change_not_approved")
    post(api_change("l-approve", "CHG-L", "approved", "2026-11-25T09:45:00+00:00"))
    wait_open(stack, "dep-late")
    query_until(stack, "SELECT count() FROM deployment_records", [(6,)])
    stack.stop()  # the embedded ledger is read by one process at a time

    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(CANDIDATE)
    where = ["--from", "2026-11-25", "--to", "2026-11-26"]
    where += ["--data-dir", str(stack.settings.data_dir)]
    result = invoke("policy", "simulate", "--policy", str(candidate), *where, "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["policy_version"].startswith("gov-2+")
    assert (doc["deployments"], doc["held"], doc["would_hold"]) == (4, 2, 2)
    changes = {(c["change"], c["rule"], c["deployment_id"], c["team"]) for c in doc["changes"]}
    assert changes == {
        ("added", "missing_change_ticket", "dep-stage", "payments-team"),
        ("removed", "outside_change_window", "dep-window", "payments-team"),
    }
    assert doc["by_rule_and_team"] == [
        {"rule": "missing_change_ticket", "team": "payments-team", "added": 1, "removed": 0},
        {"rule": "outside_change_window", "team": "payments-team", "added": 0, "removed": 1},
    ]

    table = invoke("policy", "simulate", "--policy", str(candidate), *where)
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert "alerts holding now: 2; under this policy: 2" in lines
    assert lines[-2].split() == ["missing_change_ticket", "payments-team", "+1", "-0"]
    assert lines[-1].split() == ["outside_change_window", "payments-team", "+0", "-1"]


def test_a_pushed_policy_judges_the_next_deployment_without_a_restart(
    stack: Stack, post: Post, tmp_path: Path
) -> None:
    """`shipledger policy push` while the stack runs: the worker adopts the stricter policy
    between batches, and the next deployment's alert names its version and digest."""
    assert stack.store is not None
    post(deployment("dep-before", None, environment="stage"), deployment("dep-prod", None))
    wait_open(stack, "dep-prod", "missing_change_ticket")
    wait_drained(stack)  # dep-before judged too: an alert of it would be stored by now
    _, rows = stack.store.query("SELECT DISTINCT policy_version FROM alerts")
    assert [v for (v,) in rows] == [stack_policy_version(stack)]
    assert stack.store.query(open_rules("dep-before"))[1] == []
    workers_before = stack.worker_pids

    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(CANDIDATE)
    env = {
        "SHIPLEDGER_BOOTSTRAP_SERVERS": stack.bootstrap,
        "SHIPLEDGER_TOPIC_PREFIX": stack.settings.topic_prefix,
        **ledger_env(stack.settings.data_dir),
    }
    pushed = CliRunner().invoke(cli, ["policy", "push", str(candidate)], env=env)
    assert pushed.exit_code == 0, pushed.output
    version = parse_policy(CANDIDATE).full_version  # gov-2+<first 8 hex of its sha256>
    assert f"pushed policy {version} (sha256 {text_sha256(CANDIDATE)})" in pushed.output

    logs = sorted((tmp_path / "logs").glob("worker-*.log"))
    wait_until(
        stack,
        lambda: any(version in log.read_text() for log in logs),
        f"no worker adopted {version}",
    )
    post(deployment("dep-after-push", None, environment="stage"))
    wait_open(stack, "dep-after-push", "missing_change_ticket")
    _, rows = stack.store.query(
        "SELECT policy_version FROM alerts WHERE deployment_id = 'dep-after-push'"
    )
    assert rows == [(version,)]
    assert stack.worker_pids == workers_before  # no restart

    # An invalid policy is refused before anything is published.
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: gov-3\ndefaults:\n  colour: red\n")
    refused = CliRunner().invoke(cli, ["policy", "push", str(broken)], env=env)
    assert refused.exit_code == 1
    assert "defaults.colour" in refused.output


def stack_policy_version(stack: Stack) -> str:
    """The version+digest of the policy file the stack started with."""
    assert stack.settings.policy_file is not None
    return parse_policy(stack.settings.policy_file.read_text()).full_version


def test_a_drain_waits_for_the_rejudgement_a_late_change_request_owes(
    stack: Stack, post: Post
) -> None:
    """`up`'s drain (`Stack.pending`) counts a change request as pending until every live
    worker acted on it: the sink storing it is not enough, the re-judgement it owes a stored
    deployment must be sent too, or a stop right then lost it with the embedded broker's
    memory (seen once in the chaos test: a deployment left flagged after its approval)."""
    assert stack.store is not None
    judged_after(
        stack,
        post,
        [api_change("l-open", "CHG-L", "opened", "2026-11-25T08:00:00+00:00")],
        deployment("dep-late", "CHG-L"),
    )
    wait_open(stack, "dep-late", "change_not_approved")
    wait_for(lambda: not any(stack.pending().values()), "the stack drained")
    changes = stack.topics.of("changes")
    (worker,) = stack.worker_pids
    os.kill(worker, signal.SIGSTOP)  # the sink goes on; the worker reads nothing meanwhile
    try:
        post(api_change("l-approve", "CHG-L", "approved", "2026-11-25T09:45:00+00:00"))
        query_until(stack, "SELECT count() FROM change_events", [(2,)])
        assert stack.sink is not None
        conf, group = stack.settings.kafka_common(stack.bootstrap), stack.sink.group_id
        partitions = partitions_of(conf, [changes])
        wait_for(
            lambda: (
                not lag_by_topic(
                    end_offsets(conf, partitions), committed_offsets(conf, group, partitions)
                )[changes]
            ),
            "the sink committed the approval",
        )
        assert stack.pending()[changes] == 1
    finally:
        os.kill(worker, signal.SIGCONT)
    wait_for(lambda: not any(stack.pending().values()), "the stack drained", timeout_s=120)
    # Drained means stored: the re-judgement is in the ledger, with no wait.
    assert stack.store.query(open_rules("dep-late"))[1] == []
    _, rows = stack.store.query(
        "SELECT change_state FROM deployments WHERE deployment_id = 'dep-late'"
    )
    assert rows == [("approved",)]
