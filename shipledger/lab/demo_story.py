"""The demo's second act, read back from ClickHouse like the first: one production deployment
of retail's checkout-api traced end to end, then the numbers people report.

After hours on the demo day, checkout-api ships commit C on top of a merged pull request (the
pushes and the pull request arrive through the ingest API as source events, like a GitHub
webhook would send them). Its synthetic checks fail inside its verification window and an
incident opens minutes later. The demo prints what the deployment shipped (its change set:
commits, pull request, authors), its verdict (`failed_verification`, with the evidence) and the
incident's ranked suspects, each with the reasons behind its score; then the demo day's DORA
metrics, and a signed monthly compliance pack that `shipledger report verify` accepts, and
rejects once one byte of it changes.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path

import click

from shipledger.dora_cli import dora_rows, render
from shipledger.lab.demo_kit import (
    count,
    post_through_api,
    shipledger_executable,
    table,
    wait_for,
)
from shipledger.report.pack import generate
from shipledger.report.signing import generate_key, load_private_key
from shipledger.sinks.ledger.changes_cli import change_set
from shipledger.sinks.ledger.changes_cli import render as render_changes
from shipledger.sinks.ledger.dora import DoraQuery, dora_columns
from shipledger.sinks.ledger.reader import LedgerReader, SuspectsQuery
from shipledger.sinks.ledger.verifications import VerdictFilter
from shipledger.suspects_cli import show, suspect_rows
from shipledger.up.stack import Stack
from shipledger.up.verifier import verify_pass

TENANT, SERVICE, REPOSITORY = "retail", "checkout-api", "retail/checkout-api"
#: The deployment the story follows, and the one before it (the start of its change set).
SHIPPED, BASE = "story-checkout-1750", "story-checkout-1720"


@dataclass(frozen=True)
class Commits:
    """The story's commits: A (running before), B1 and its pull request's merge B, then C."""

    a: str = "a1" * 20
    b1: str = "b1" * 20
    b: str = "b0" * 20
    c: str = "c3" * 20


def _at(day: date, hour: int, minute: int) -> str:
    return datetime.combine(day, time(hour, minute), UTC).isoformat()


def _deployment(
    name: str, deployment_id: str, commit_sha: str, actor: str, started: str, succeeded: str
) -> list[dict[str, object]]:
    """One production deployment of checkout-api: its started and succeeded events."""
    deploy = {
        "tenant": TENANT,
        "service": SERVICE,
        "environment": "production",
        "repository": REPOSITORY,
        "pipeline_provider": "github_actions",
    }
    return [
        {
            **deploy,
            "event_id": f"story-{name}-{event_type}",
            "deployment_id": deployment_id,
            "event_type": event_type,
            "commit_sha": commit_sha,
            "actor": actor,
            "occurred_at": at,
        }
        for event_type, at in (("started", started), ("succeeded", succeeded))
    ]


def story_objects(day: date, commits: Commits = Commits()) -> list[dict[str, object]]:
    """What the story sends through `POST /v1/events`, in time order (JSON-ready): the
    pushes and the merged pull request, two deployments, the failing checks, the incident."""
    source = {"family": "source", "tenant": TENANT, "repository": REPOSITORY, "ref": "main"}
    signal = {"family": "signal", "tenant": TENANT, "service": SERVICE, "environment": "prod"}
    return [
        {**source, "event_id": "story-push-a", "kind": "push", "commit_sha": commits.a,
         "commit_shas": [commits.a], "author": "alice", "occurred_at": _at(day, 16, 40)},
        *_deployment("base", BASE, commits.a, "alice", _at(day, 17, 20), _at(day, 17, 25)),
        {**source, "event_id": "story-pr-482", "kind": "pull_request_merged",
         "commit_sha": commits.b, "commit_shas": [commits.b1, commits.b],
         "pull_request_number": 482, "pull_request_title": "Cache cart totals at checkout",
         "author": "bruno", "merged_by": "alice", "occurred_at": _at(day, 17, 31)},
        {**source, "event_id": "story-push-b", "kind": "push", "commit_sha": commits.b,
         "previous_sha": commits.a, "commit_shas": [commits.b1, commits.b], "author": "bruno",
         "occurred_at": _at(day, 17, 31)},
        {**source, "event_id": "story-push-c", "kind": "push", "commit_sha": commits.c,
         "previous_sha": commits.b, "commit_shas": [commits.c], "author": "chen",
         "occurred_at": _at(day, 17, 44)},
        *_deployment("shipped", SHIPPED, commits.c, "chen", _at(day, 17, 50), _at(day, 17, 56)),
        {**signal, "event_id": "story-check-1", "kind": "pipeline_finished",
         "outcome": "failure", "title": "synthetic: order", "occurred_at": _at(day, 17, 58)},
        {**signal, "event_id": "story-check-2", "kind": "pipeline_finished",
         "outcome": "failure", "title": "synthetic: order", "occurred_at": _at(day, 18, 3)},
        {**signal, "event_id": "story-incident", "kind": "incident_opened", "severity": "sev1",
         "title": "Checkout error rate above 5%", "external_id": "INC-5120",
         "occurred_at": _at(day, 18, 5)},
    ]  # fmt: skip


def what_changed_and_did_it_work(stack: Stack, day: date, timeout_s: float) -> None:
    """Send the story, then print the shipped deployment's change set, its verdict and the
    incident's suspects, each read back from ClickHouse through the API `up` serves."""
    assert stack.store is not None
    objects = story_objects(day)
    click.secho(
        f"\nWhat changed, did it work, who to suspect: {SERVICE} ships a merged pull request "
        "after hours, its synthetic checks fail, an incident opens",
        bold=True,
    )
    click.echo(f"  {len(objects)} events through the ingest API (pushes, a pull request, ...)")
    sent = {"source_events": 4, "signal_events": 3, "deployment_change_sets": 2}
    before = {name: count(stack, name) for name in sent}
    post_through_api(stack, objects)
    wait_for(stack, {name: before[name] + n for name, n in sent.items()}, timeout_s)
    found = change_set(stack.settings, SHIPPED, TENANT)
    click.secho(f"\nWhat {SHIPPED} shipped (table deployment_commits)", bold=True)
    click.echo(_indented(render_changes(found, "table") if found else "(no change set)"))
    window_closed = datetime.combine(day, time(18, 30), UTC)
    verify_pass(stack.store, stack.policy, window_closed)
    [verdict] = LedgerReader(stack.store).verifications(
        VerdictFilter(tenant=TENANT, deployment_id=SHIPPED, limit=1)
    )
    table(
        "Did it work? Its verification window (table deployment_verifications)",
        ("deployment", "verdict", "score", "checks", "window"),
        [
            (
                verdict.deployment_id,
                verdict.verdict,
                f"{verdict.score:.2f}",
                verdict.check_count,
                f"{verdict.window_start:%H:%M}-{verdict.window_end:%H:%M} UTC",
            )
        ],
    )
    incident = datetime.combine(day, time(18, 5), UTC)
    query = SuspectsQuery(TENANT, SERVICE, incident, environment="prod", limit=5)
    rows = suspect_rows(stack.settings, query)
    click.secho(
        f"\nSuspects of INC-5120 ({SERVICE} in prod, {incident:%H:%M} UTC): `shipledger "
        "suspects`, each score the sum of its named parts, `why` says which",
        bold=True,
    )
    click.echo(_indented(show(rows, "table")))


def _indented(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.splitlines())


def numbers_people_report(stack: Stack, day: date, out: Path) -> None:
    """Print the demo day's DORA metrics by team, then write the month's signed compliance
    pack to `out` and show `shipledger report verify` accept it and reject a changed byte."""
    assert stack.store is not None
    query = DoraQuery(since=day, until=day, period="day", tenant=TENANT, by=("team",))
    rows = dora_rows(stack.settings, query)
    click.secho(f"\nDORA metrics of {TENANT}'s demo day (`shipledger metrics dora`)", bold=True)
    click.echo(_indented(render(rows, dora_columns(query.by), "table")))
    month = f"{day:%Y-%m}"
    key = out / "report.pem"
    public = generate_key(key) if not key.exists() else key.with_name(key.name + ".pub")
    pack = out / f"pack-{month}"
    reader = LedgerReader(stack.store)
    summary = generate(reader, month, None, pack, load_private_key(key))
    click.secho(
        f"\nMonthly compliance pack {month} (`shipledger report monthly`): {pack}", bold=True
    )
    click.echo(
        f"  {summary.deployments} production deployments, {summary.findings} findings; "
        f"files {', '.join(summary.files)}; signed by {summary.signer}"
    )
    missing = reader.missing_heads(reader.chain_heads(None))
    click.echo(f"  chain heads recorded in the manifest still in the ledger: {not missing}")
    _verify(pack, public)
    deployments = pack / "deployments.csv"
    data = bytearray(deployments.read_bytes())
    data[len(data) // 2] ^= 0x01
    deployments.write_bytes(bytes(data))
    click.echo("  one byte of deployments.csv changed:")
    _verify(pack, public)


def _verify(pack: Path, public: Path) -> None:
    """Run `shipledger report verify` as a user would (offline: `up` owns the ledger, whose
    chain heads this process checked above) and print what it says."""
    args = ["report", "verify", str(pack), "--public-key", str(public), "--offline"]
    click.echo("  $ shipledger " + " ".join(args))
    done = subprocess.run(
        [shipledger_executable(), *args], capture_output=True, text=True, check=False
    )
    for line in (done.stdout + done.stderr).strip().splitlines():
        click.echo(f"    {line}")
    click.echo(f"    (exit {done.returncode})")
