"""`shipledger demo`: the embedded stack, a day of CI traffic from four teams, the result.

What it shows is read back from ClickHouse, not from memory: events travel CLI/producer →
Tansu → Faust → Tansu → sink → chDB like any production event; the change requests behind the
day's tickets arrive through the ingest API (`POST /v1/events`), and `audit verify` checks
the hash chains of everything stored.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import click
import httpx

from shipledger.lab.traffic import change_requests, day_of_traffic, demo_day, demo_policy
from shipledger.logging import configure_logging
from shipledger.processors.step import process
from shipledger.producers.api.auth import AuthStore
from shipledger.producers.emitter.publisher import Publisher
from shipledger.schemas.models import DeploymentEvent, DeploymentRecord, utcnow
from shipledger.schemas.policy import parse_policy
from shipledger.settings import Settings
from shipledger.sinks.ledger.audit import verify
from shipledger.tables import render_table
from shipledger.up.stack import Stack

_CLI_DEPLOYMENT = DeploymentEvent(
    deployment_id="cli-demo",
    event_type="started",
    service="checkout-api",
    environment="production",
    tenant="retail",
    commit_sha="3f786850e387550fdab836ed7e6dc881de23001b",
    actor="demo-ci",
    change_id="CHG424242",
)


def expected_outcome(events: list[DeploymentEvent], policy_text: str) -> Counter[str]:
    """What the pipeline must produce, computed by the same pure step the processors run."""
    policy = parse_policy(policy_text)
    state: dict[str, DeploymentRecord] = {}
    alerts: Counter[str] = Counter()
    for event in events:
        result = process(event, state.get(event.deployment_id), policy)
        state[event.deployment_id] = result.record
        alerts.update(a.rule for a in result.alerts)
    return alerts


def _emit_with_cli(settings: Settings, bootstrap: str) -> int:
    """One deployment the way a CI job reports it: `shipledger run -- <deploy command>`."""
    env = {
        **settings.to_env(),
        "SHIPLEDGER_BOOTSTRAP_SERVERS": bootstrap,
        "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
    }
    cmd = [
        str(Path(sys.executable).parent / "shipledger"),
        "run",
        "--service",
        _CLI_DEPLOYMENT.service,
        "--environment",
        _CLI_DEPLOYMENT.environment,
        "--tenant",
        _CLI_DEPLOYMENT.tenant,
        "--commit-sha",
        _CLI_DEPLOYMENT.commit_sha,
        "--actor",
        _CLI_DEPLOYMENT.actor,
        "--change-id",
        str(_CLI_DEPLOYMENT.change_id),
        "--",
        sys.executable,
        "-c",
        "import time; time.sleep(0.2)",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise click.ClickException(f"`shipledger run` failed: {done.stderr.strip()[-500:]}")
    return 2  # started + succeeded


def _post_through_api(stack: Stack, objects: list[dict[str, object]]) -> None:
    """POST `objects` to the stack's ingest API, with one ingest token per tenant."""
    assert stack.api is not None
    auth = AuthStore(stack.settings.resolved_auth_db)
    try:
        tokens = {
            tenant: auth.create_token(str(tenant), ("ingest",), name="demo")[0]
            for tenant in {o["tenant"] for o in objects}
        }
    finally:
        auth.close()
    with httpx.Client(base_url=stack.api.url, timeout=30) as client:
        for tenant, token in tokens.items():
            batch = [o for o in objects if o["tenant"] == tenant]
            answer = client.post(
                "/v1/events", json=batch, headers={"Authorization": f"Bearer {token}"}
            )
            if answer.status_code != 202:
                raise click.ClickException(
                    f"the ingest API answered {answer.status_code}: {answer.text}"
                )


def _wait_for(stack: Stack, want: dict[str, int], timeout_s: float) -> dict[str, int]:
    """Poll ClickHouse until every table holds at least `want` rows; print progress."""
    assert stack.store is not None
    deadline = time.monotonic() + timeout_s
    have: dict[str, int] = {}
    last_line = ""
    while True:
        stack.check()
        have = {table: stack.store.count(table) for table in want}
        line = "  in ClickHouse: " + ", ".join(f"{t} {have[t]}/{want[t]}" for t in want)
        if line != last_line:
            click.echo(line)
            last_line = line
        if all(have[t] >= want[t] for t in want):
            return have
        if time.monotonic() > deadline:
            raise click.ClickException(
                f"pipeline did not deliver everything within {timeout_s:.0f}s: {have} of {want};"
                f" logs in {stack.settings.data_dir / 'logs'}"
            )
        time.sleep(0.5)


def _table(title: str, header: tuple[str, ...], rows: list[tuple[object, ...]]) -> None:
    click.secho(f"\n{title}", bold=True)
    click.echo(render_table(header, ([str(c) for c in row] for row in rows), indent=2))


def _summary(stack: Stack) -> None:
    assert stack.store is not None
    q = stack.store.query
    db = stack.settings.clickhouse_database
    _, rows = q(
        f"SELECT environment, status, count() FROM {db}.deployments "  # noqa: S608
        "GROUP BY environment, status ORDER BY environment, status"
    )
    by_env: dict[str, dict[str, int]] = defaultdict(dict)
    statuses = sorted({str(r[1]) for r in rows})
    for env, status, n in rows:
        by_env[str(env)][str(status)] = int(n)
    _table(
        "Deployments per environment and status (view `deployments`)",
        ("environment", *statuses, "total"),
        [
            (env, *(counts.get(s, 0) for s in statuses), sum(counts.values()))
            for env, counts in sorted(by_env.items())
        ],
    )
    _, rows = q(
        f"SELECT rule, severity, count(), uniqExact(service) FROM {db}.alerts "  # noqa: S608
        "GROUP BY rule, severity ORDER BY count() DESC"
    )
    _table("Alerts by rule (table `alerts`)", ("rule", "severity", "alerts", "services"), rows)
    _, rows = q(
        "SELECT rule, tenant, service, environment, actor, "  # noqa: S608 (db is our own setting)
        "formatDateTime(occurred_at, '%H:%i UTC'), message "
        f"FROM {db}.alerts ORDER BY rule, occurred_at LIMIT 2 BY rule"
    )
    _table("A few alerts", ("rule", "tenant", "service", "env", "actor", "at", "message"), rows)
    _, rows = q(
        "SELECT tenant, multiIf(change_id IS NULL, 'no change ticket', NOT change_found, "  # noqa: S608
        "'ticket unknown to the CAB', 'change ' || change_state) AS coverage, count() "
        f"FROM {db}.deployment_changes WHERE environment = 'prod' "
        "GROUP BY tenant, coverage ORDER BY tenant, coverage"
    )
    _table(
        "Prod deployments and their change requests (view `deployment_changes`)",
        ("tenant", "coverage", "deployments"),
        rows,
    )
    report = verify(stack.store)
    click.secho("\nLedger integrity (shipledger audit verify)", bold=True)
    click.echo("  " + report.text().splitlines()[-1])


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=Path(".shipledger/demo"),
    show_default=True,
    help="Where the demo keeps its ClickHouse data and logs.",
)
@click.option(
    "--scale",
    default=1,
    show_default=True,
    help="Multiply the number of deployments (1 = 132 deployments, 264 events).",
)
@click.option("--timeout", default=180.0, show_default=True, help="Seconds to wait for results.")
def demo(data_dir: Path, scale: int, timeout: float) -> None:
    """Start the embedded stack, drive a realistic day of CI traffic, show what it recorded.

    Four teams in two tenants (retail, bank) deploy 12 services to dev, stage and prod through
    GitHub Actions, GitLab CI and Jenkins. Some prod deploys have no change ticket, some go out
    at night, some land in a freeze, some fail. The policy (Berlin and New York change windows,
    a two-hour freeze) is written to <data-dir>/policy.yaml.
    """
    started = time.monotonic()
    if data_dir.exists():
        shutil.rmtree(data_dir)  # a demo starts from nothing, so the counts below add up
    data_dir.mkdir(parents=True)
    day = demo_day(datetime.now(UTC).date())
    policy_text = demo_policy(day)
    (data_dir / "policy.yaml").write_text(policy_text, encoding="utf-8")
    settings = Settings(
        data_dir=data_dir,
        policy_file=data_dir / "policy.yaml",
        log_level="warning",
        api_port=0,  # any free port: the demo must not collide with a running `up`
    )
    configure_logging(settings)
    events = list(day_of_traffic(day, scale=scale))
    deployments = len({e.deployment_id for e in events})
    alerts = expected_outcome(events, policy_text)
    click.secho(f"shipledger demo: {deployments} deployments on {day:%A %Y-%m-%d}", bold=True)
    click.echo(f"  starting the embedded stack in {data_dir} (Tansu, Faust, chDB) ...")
    with Stack(settings, log_dir=data_dir / "logs", api=True) as stack:
        click.echo(f"  broker {stack.bootstrap}; publishing {len(events)} events from 4 teams ...")
        with Publisher(settings, stack.bootstrap) as publisher:
            publisher.publish_many(events)
        click.echo("  one more deployment through the CI command: shipledger run -- <deploy>")
        # Judged at the real clock: whether it is out of window depends on when you run this.
        alerts += expected_outcome(
            [_CLI_DEPLOYMENT.model_copy(update={"occurred_at": utcnow()})], policy_text
        )
        cli_events = _emit_with_cli(settings, stack.bootstrap)
        total_events = len(events) + cli_events
        changes = change_requests([*events, _CLI_DEPLOYMENT])
        click.echo(
            f"  {len(changes)} change requests (with CAB approvals) through the ingest API "
            f"at {stack.api.url if stack.api else '?'} ..."
        )
        _post_through_api(stack, changes)
        want = {
            "deployment_events": total_events,
            "deployment_records": total_events,
            "alerts": sum(alerts.values()),
            "change_events": len(changes),
        }
        _wait_for(stack, want, timeout)
        _summary(stack)
        query_hint = settings.resolved_clickhouse_url
    click.secho(f"\nDone in {time.monotonic() - started:.1f}s.", bold=True)
    click.echo(
        "Next:\n"  # noqa: S608 (a hint printed, not run)
        f"  - Query the recorded ledger (chDB in {query_hint}), read-only:\n"
        f"      SHIPLEDGER_DATA_DIR={data_dir} .venv/bin/shipledger query "
        "'SELECT rule, count() FROM alerts GROUP BY rule'\n"
        f"      SHIPLEDGER_DATA_DIR={data_dir} .venv/bin/shipledger audit verify\n"
        "  - Keep a stack running and send your own events: make up, then in another terminal\n"
        "      .venv/bin/shipledger emit started --service my-svc --environment prod "
        "--commit-sha $(git rev-parse HEAD) --actor $USER\n"
        "  - Tables and views, and the question each answers: docs/model.md."
    )
