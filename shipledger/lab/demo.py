"""`shipledger demo`: the embedded stack, a day of CI traffic from four teams, the result.

What it shows is read back from ClickHouse, not from memory: events travel CLI/producer →
Tansu → Faust → Tansu → sink → chDB like any production event; the change requests behind the
day's tickets arrive through the ingest API (`POST /v1/events`) before the deployments, but for
two approvals a change system delivers late: the processors judge every deployment against
its change request, flag the ones shipped under a rejected (or not yet approved) request, and
resolve an alert when a late approval shows it was approved at the start. `audit verify`
checks the hash chains of everything stored.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import click
import httpx

from shipledger.lab.traffic import (
    change_requests,
    day_of_traffic,
    demo_day,
    demo_policy,
    late_approvals,
    service_catalog,
)
from shipledger.logging import configure_logging
from shipledger.processors.enrichment import fold
from shipledger.processors.step import process
from shipledger.producers.api.auth import AuthStore
from shipledger.producers.emitter.publisher import Publisher
from shipledger.schemas.family_models import ChangeEvent
from shipledger.schemas.models import DeploymentEvent, DeploymentRecord, utcnow
from shipledger.schemas.policy import parse_policy
from shipledger.schemas.taxonomy import normalize_environment
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


def expected_outcome(
    events: list[DeploymentEvent], policy_text: str, changes: Sequence[dict[str, object]] = ()
) -> Counter[str]:
    """The alerts that must hold once every change request is in, by rule: computed by the
    same pure step the processors run, against the view of all of `changes` (`POST
    /v1/events` objects)."""
    policy = parse_policy(policy_text)
    view = fold(
        [ChangeEvent.model_validate({k: v for k, v in c.items() if k != "family"}) for c in changes]
    )
    state: dict[str, DeploymentRecord] = {}
    alerts: Counter[str] = Counter()
    for event in events:
        result = process(event, state.get(event.deployment_id), policy, view=view)
        state[event.deployment_id] = result.record
        alerts.update(a.rule for a in result.alerts)
    return alerts


def judged_again(events: list[DeploymentEvent], late: Sequence[dict[str, object]]) -> int:
    """How many prod deployments name a request whose approval arrives late: each is flagged
    `change_not_approved`, then resolved (at least that many resolutions)."""
    keys = {(c["tenant"], c["change_id"]) for c in late}
    return len(
        {
            (e.tenant, e.deployment_id)
            for e in events
            if (e.tenant, e.change_id) in keys
            and normalize_environment(e.environment).name == "prod"
        }
    )


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


#: What `_wait_for` counts beside tables and views.
_RESOLUTIONS = "resolutions"


def _count(stack: Stack, name: str) -> int:
    assert stack.store is not None
    if name != _RESOLUTIONS:
        return stack.store.count(name)
    db = stack.settings.clickhouse_database
    _, rows = stack.store.query(
        f"SELECT count() FROM {db}.alerts WHERE kind = 'resolution'"  # noqa: S608 (our setting)
    )
    return int(rows[0][0])


def _wait_for(
    stack: Stack, want: dict[str, int], timeout_s: float, exact: frozenset[str] = frozenset()
) -> dict[str, int]:
    """Poll ClickHouse until every table or view holds at least `want` rows (those in
    `exact`: exactly); print progress."""
    assert stack.store is not None
    deadline = time.monotonic() + timeout_s
    have: dict[str, int] = {}
    last_line = ""
    while True:
        stack.check()
        have = {table: _count(stack, table) for table in want}
        line = "  in ClickHouse: " + ", ".join(f"{t} {have[t]}/{want[t]}" for t in want)
        if line != last_line:
            click.echo(line)
            last_line = line
        if all(have[t] == want[t] if t in exact else have[t] >= want[t] for t in want):
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
        f"SELECT rule, severity, count(), uniqExact(service) FROM {db}.open_alerts "  # noqa: S608
        "GROUP BY rule, severity ORDER BY count() DESC, rule"
    )
    _table(
        "Alerts that hold, by rule (view `open_alerts`: resolved ones left out)",
        ("rule", "severity", "alerts", "services"),
        rows,
    )
    _, rows = q(
        "SELECT rule, tenant, service, environment, actor, "  # noqa: S608 (db is our own setting)
        "formatDateTime(occurred_at, '%H:%i UTC'), message "
        f"FROM {db}.open_alerts ORDER BY rule, occurred_at LIMIT 2 BY rule"
    )
    _table("A few alerts", ("rule", "tenant", "service", "env", "actor", "at", "message"), rows)
    _, rows = q(
        "SELECT tenant, team, application, tier, service, environment, change_id, "  # noqa: S608
        f"change_state, formatDateTime(started_at, '%H:%i UTC') FROM {db}.deployments "
        "WHERE has(alert_rules, 'change_not_approved') AND change_state = 'rejected' "
        "ORDER BY tenant, started_at"
    )
    _table(
        "Shipped although the CAB had rejected the change request (change_not_approved)",
        ("tenant", "team", "application", "tier", "service", "env", "change", "state", "at"),
        rows,
    )
    _, rows = q(
        "SELECT r.rule, r.tenant, r.service, r.environment, "  # noqa: S608 (our own setting)
        "formatDateTime(a.detected_at, '%H:%i:%S'), formatDateTime(r.detected_at, '%H:%i:%S'), "
        "r.evidence['reason'] "
        f"FROM {db}.alerts AS r INNER JOIN {db}.alerts AS a "
        "ON a.tenant = r.tenant AND a.alert_id = r.resolves "
        "WHERE r.kind = 'resolution' ORDER BY r.detected_at, r.alert_id"
    )
    _table(
        "Resolved by late data (resolution rows in table `alerts`, naming the alert)",
        ("rule", "tenant", "service", "env", "raised", "resolved", "why"),
        rows,
    )
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
    changes = change_requests([*events, _CLI_DEPLOYMENT])
    early, late = late_approvals(changes)
    alerts = expected_outcome(events, policy_text, changes)
    click.secho(f"shipledger demo: {deployments} deployments on {day:%A %Y-%m-%d}", bold=True)
    click.echo(f"  starting the embedded stack in {data_dir} (Tansu, Faust, chDB) ...")
    with Stack(settings, log_dir=data_dir / "logs", api=True) as stack:
        services = service_catalog(day)
        click.echo(
            f"  broker {stack.bootstrap}; the service catalog ({len(services)} services) and "
            f"{len(early)} change requests (with CAB approvals) through the ingest API at "
            f"{stack.api.url if stack.api else '?'} ..."
        )
        _post_through_api(stack, [*services, *early])
        _wait_for(stack, {"catalog_events": len(services), "change_events": len(early)}, timeout)
        click.echo(f"  publishing {len(events)} events from 4 teams ...")
        with Publisher(settings, stack.bootstrap) as publisher:
            publisher.publish_many(events)
        click.echo("  one more deployment through the CI command: shipledger run -- <deploy>")
        # Judged at the real clock: whether it is out of window depends on when you run this.
        alerts += expected_outcome(
            [_CLI_DEPLOYMENT.model_copy(update={"occurred_at": utcnow()})], policy_text, changes
        )
        cli_events = _emit_with_cli(settings, stack.bootstrap)
        total_events = len(events) + cli_events
        want = {"deployment_events": total_events, "deployment_records": total_events}
        _wait_for(stack, want, timeout)
        click.echo(
            f"  {len(late)} approvals arrive late (given before the deployments started, "
            "delivered after them): the deployments they cover are judged again ..."
        )
        _post_through_api(stack, late)
        want |= {
            "change_events": len(early) + len(late),
            "open_alerts": sum(alerts.values()),
            _RESOLUTIONS: judged_again(events, late),
        }
        _wait_for(stack, want, timeout, exact=frozenset({"open_alerts"}))
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
