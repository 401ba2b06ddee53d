"""`shipledger demo`: the embedded stack, a day of CI traffic from four teams, the result.

What it shows is read back from ClickHouse, not from memory: events travel CLI/producer →
Tansu → Faust → Tansu → sink → chDB like any production event; the change requests behind the
day's tickets arrive through the ingest API (`POST /v1/events`) before the deployments, but for
two approvals a change system delivers late: the processors judge every deployment against
its change request, flag the ones shipped under a rejected (or not yet approved) request, and
resolve an alert when a late approval shows it was approved at the start. A pipeline then
asks the pre-deploy gate (`shipledger gate`, `POST /v1/gate`) about a deployment under a
rejected request, which is refused, and passes it with break-glass, which raises a critical
alert; `up`'s escalator opens a ticket for every high-severity prod alert at a signed webhook
the demo serves itself (`shipledger.lab.ticket_standin`, a local stand-in for a ticketing
system). Then one production deployment is traced end to end, what it shipped, whether it
worked and who to suspect for the incident after it, followed by the day's DORA metrics and a
signed monthly compliance pack (`shipledger.lab.demo_story`). `audit verify` checks the hash
chains of everything stored.
"""

from __future__ import annotations

import base64
import secrets
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path

import click
from pydantic import SecretStr

from shipledger.closing import stop_on_signals
from shipledger.lab.demo_kit import (
    BREAK_GLASS,
    RESOLUTIONS,
    TICKETS,
    count,
    ingest_tokens,
    post_through_api,
    shipledger_executable,
    table,
    wait_for,
)
from shipledger.lab.demo_story import numbers_people_report, what_changed_and_did_it_work
from shipledger.lab.ticket_standin import TicketStandIn
from shipledger.lab.traffic import (
    change_requests,
    day_of_traffic,
    demo_day,
    demo_policy,
    late_approvals,
    prod_builds,
    rejected_prod_change,
    service_catalog,
)
from shipledger.logging import configure_logging
from shipledger.processors.enrichment import fold
from shipledger.processors.step import process
from shipledger.producers.api.auth import AuthStore
from shipledger.producers.emitter.publisher import Publisher
from shipledger.schemas.escalation import SEVERITIES
from shipledger.schemas.family_models import ArtifactEvent, ChangeEvent
from shipledger.schemas.models import DeploymentEvent, DeploymentRecord, utcnow
from shipledger.schemas.policy import parse_policy
from shipledger.schemas.taxonomy import normalize_environment
from shipledger.settings import Settings
from shipledger.sinks.ledger.audit import verify
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

#: The demo's escalation: alerts of this severity and above in prod open a ticket.
_ESCALATE_FROM = "high"
_ESCALATION = """\
escalation:
  receivers:
    tickets:
      type: webhook
      url: {url}
      credentials: demo_tickets
  routes:
    - name: prod-high
      min_severity: {severity}
      environments: [prod]
      receivers: [tickets]
"""
_EMERGENCY = "{service} down, INC-4711; CAB on the bridge"


#: The families `expected_outcome` folds into its view, by `POST /v1/events` family name.
_VIEWED: dict[str, type[ChangeEvent] | type[ArtifactEvent]] = {
    "change": ChangeEvent,
    "artifact": ArtifactEvent,
}


def expected_outcome(
    events: list[DeploymentEvent], policy_text: str, enrichment: Sequence[dict[str, object]] = ()
) -> Counter[str]:
    """The alerts that must hold once every change request and build is in, by rule:
    computed by the same pure step the processors run, against the view of all of
    `enrichment` (change and artifact `POST /v1/events` objects)."""
    policy = parse_policy(policy_text)
    view = fold(
        [
            _VIEWED[str(e["family"])].model_validate({k: v for k, v in e.items() if k != "family"})
            for e in enrichment
        ]
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


def _cli_env(settings: Settings, bootstrap: str) -> dict[str, str]:
    """The environment of a `shipledger` command run by the demo (no CI detected)."""
    return {
        **settings.to_env(),
        "SHIPLEDGER_BOOTSTRAP_SERVERS": bootstrap,
        "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
    }


def _emit_with_cli(settings: Settings, bootstrap: str) -> int:
    """One deployment the way a CI job reports it: `shipledger run -- <deploy command>`."""
    cmd = [
        shipledger_executable(),
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
    done = subprocess.run(
        cmd, env=_cli_env(settings, bootstrap), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise click.ClickException(f"`shipledger run` failed: {done.stderr.strip()[-500:]}")
    return 2  # started + succeeded


def _shipped(events: list[DeploymentEvent], tenant: str, service: str) -> list[str]:
    """The `shipledger gate` options naming the artifact the latest prod deployment of
    `tenant`'s `service` in `events` shipped (its build is published: `prod_builds`), so that
    the gate finds it built; none when there is no such deployment."""
    for event in sorted(events, key=lambda e: e.occurred_at, reverse=True):
        prod = normalize_environment(event.environment).name == "prod"
        if prod and (event.tenant, event.service) == (tenant, service) and event.artifact_digest:
            return [
                "--artifact-name", str(event.artifact_name), "--version", str(event.version),
                "--digest", event.artifact_digest,
            ]  # fmt: skip
    return []


def _ask_gate(
    stack: Stack,
    token: str,
    change: dict[str, object],
    events: list[DeploymentEvent],
    emergency: bool,
) -> None:
    """A pipeline's pre-deploy step, `shipledger gate`, about a deployment under `change` of
    the artifact its latest prod deployment in `events` shipped (break-glass when
    `emergency`); prints the command, its answer and its exit code, which must be 1
    (blocked) or, with break-glass, 0."""
    assert stack.api is not None
    services, environments = change["services"], change["environments"]
    assert isinstance(services, list) and isinstance(environments, list)
    args = [
        "gate",
        "--service",
        str(services[0]),
        "--environment",
        str(environments[0]),
        "--change-id",
        str(change["change_id"]),
        "--tenant",
        str(change["tenant"]),
        "--actor",
        "demo-ci",
        *_shipped(events, str(change["tenant"]), str(services[0])),
    ]
    if emergency:
        args += ["--emergency", "--reason", _EMERGENCY.format(service=services[0])]
    env = _cli_env(stack.settings, stack.bootstrap) | {
        "SHIPLEDGER_API_URL": stack.api.url,
        "SHIPLEDGER_API_TOKEN": token,
    }
    done = subprocess.run(
        [shipledger_executable(), *args], env=env, capture_output=True, text=True, check=False
    )
    click.echo("  $ shipledger " + " ".join(f'"{a}"' if " " in a else a for a in args))
    click.echo("\n".join(f"    {line}" for line in done.stdout.strip().splitlines()))
    expected = 0 if emergency else 1
    if done.returncode != expected:
        raise click.ClickException(
            f"`shipledger gate` exited {done.returncode}, not {expected}: "
            f"{(done.stderr or done.stdout).strip()[-500:]}"
        )
    click.echo(f"    (exit {done.returncode})")


#: The alerts the demo's escalation route sends (`_ESCALATION`), as a condition on `alerts`.
_ESCALATED = "kind = 'alert' AND environment = 'prod' AND severity IN ({})".format(
    ", ".join(f"'{s}'" for s in SEVERITIES[SEVERITIES.index(_ESCALATE_FROM) :])
)


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
    table(
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
    table(
        "Alerts that hold, by rule (view `open_alerts`: resolved ones left out)",
        ("rule", "severity", "alerts", "services"),
        rows,
    )
    _, rows = q(
        "SELECT rule, tenant, service, environment, actor, "  # noqa: S608 (db is our own setting)
        "formatDateTime(occurred_at, '%H:%i UTC'), message "
        f"FROM {db}.open_alerts ORDER BY rule, occurred_at LIMIT 2 BY rule"
    )
    table("A few alerts", ("rule", "tenant", "service", "env", "actor", "at", "message"), rows)
    _, rows = q(
        "SELECT tenant, team, application, tier, service, environment, change_id, "  # noqa: S608
        f"change_state, formatDateTime(started_at, '%H:%i UTC') FROM {db}.deployments "
        "WHERE has(alert_rules, 'change_not_approved') AND change_state = 'rejected' "
        "ORDER BY tenant, started_at"
    )
    table(
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
    table(
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
    table(
        "Prod deployments and their change requests (view `deployment_changes`)",
        ("tenant", "coverage", "deployments"),
        rows,
    )


def _gate_summary(stack: Stack) -> None:
    assert stack.store is not None
    q = stack.store.query
    db = stack.settings.clickhouse_database
    _, rows = q(
        "SELECT decision, tenant, service, environment, change_id, "  # noqa: S608 (our setting)
        "arrayStringConcat(arrayMap(r -> tupleElement(r, 'rule'), reasons), ', '), "
        "ifNull(emergency_reason, ''), substring(ifNull(alert_id, ''), 1, 8) "
        f"FROM {db}.gate_decisions ORDER BY occurred_at"
    )
    table(
        "The gate's answers (table `gate_decisions`, with every reason)",
        ("decision", "tenant", "service", "env", "change", "reasons", "emergency", "alert"),
        rows,
    )
    _, rows = q(
        "SELECT rule, severity, tenant, service, environment, "  # noqa: S608 (our setting)
        f"substring(alert_id, 1, 8), message FROM {db}.alerts WHERE rule = 'break_glass'"
    )
    table(
        "Break-glass raised a critical alert (table `alerts`)",
        ("rule", "severity", "tenant", "service", "env", "alert", "message"),
        rows,
    )


def _escalation_summary(stack: Stack) -> None:
    assert stack.store is not None
    db = stack.settings.clickhouse_database
    _, rows = stack.store.query(
        "SELECT rule, severity, receiver, count() AS tickets, "  # noqa: S608 (our setting)
        "arrayStringConcat(arraySlice(arraySort(groupArray(assumeNotNull(ticket_key))), 1, 3), "
        "', ') || if(count() > 3, ', ...', '') "
        f"FROM {db}.escalations WHERE status = 'delivered' AND action = 'trigger' "
        "GROUP BY rule, severity, receiver ORDER BY tickets DESC, rule"
    )
    table(
        "Escalation tickets, one per alert (table `escalations`: the ticket key beside the alert)",
        ("rule", "severity", "receiver", "tickets", "ticket keys"),
        rows,
    )


def _integrity(stack: Stack) -> None:
    assert stack.store is not None
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
@click.option(
    "--keep",
    is_flag=True,
    help="Keep the stack running afterwards, serving the live dashboard, until Ctrl-C.",
)
def demo(data_dir: Path, scale: int, timeout: float, keep: bool) -> None:
    """Start the embedded stack, drive a realistic day of CI traffic, show what it recorded.

    Four teams in two tenants (retail, bank) deploy 12 services to dev, stage and prod through
    GitHub Actions, GitLab CI and Jenkins. Some prod deploys have no change ticket, some go out
    at night, some land in a freeze, some fail. The policy (Berlin and New York change windows,
    a two-hour freeze, high-severity prod alerts escalated to a local stand-in for a ticketing
    system) is written to <data-dir>/policy.yaml. It ends by printing the live dashboard's URL
    (that of `shipledger up`; with --keep, its own, kept running until Ctrl-C).
    """
    started = time.monotonic()
    if data_dir.exists():
        shutil.rmtree(data_dir)  # a demo starts from nothing, so the counts below add up
    data_dir.mkdir(parents=True)
    day = demo_day(datetime.now(UTC).date())
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    with TicketStandIn(secret) as tickets:
        policy_text = demo_policy(day) + _ESCALATION.format(
            url=tickets.url, severity=_ESCALATE_FROM
        )
        (data_dir / "policy.yaml").write_text(policy_text, encoding="utf-8")
        settings = Settings(
            data_dir=data_dir,
            policy_file=data_dir / "policy.yaml",
            log_level="warning",
            api_port=0,  # any free port: the demo must not collide with a running `up`
            receiver_secrets={"demo_tickets": SecretStr(secret)},
        )
        configure_logging(settings)
        _run(settings, day, policy_text, scale, timeout, tickets.url, keep)
    click.secho(f"\nDone in {time.monotonic() - started:.1f}s.", bold=True)
    click.echo(
        "Next:\n"  # noqa: S608 (a hint printed, not run)
        f"  - Query the recorded ledger (chDB in {settings.resolved_clickhouse_url}), read-only:\n"
        f"      SHIPLEDGER_DATA_DIR={data_dir} .venv/bin/shipledger query "
        "'SELECT rule, count() FROM alerts GROUP BY rule'\n"
        f"      SHIPLEDGER_DATA_DIR={data_dir} .venv/bin/shipledger audit verify\n"
        "  - Keep a stack running and send your own events: make up, then in another terminal\n"
        "      .venv/bin/shipledger emit started --service my-svc --environment prod "
        "--commit-sha $(git rev-parse HEAD) --actor $USER\n"
        "  - Tables and views, and the question each answers: docs/model.md."
    )
    up = Settings()
    click.echo(
        f"Live dashboard: make up, then open http://{up.api_host}:{up.api_port}/ with a read "
        "token (shipledger tokens create --tenant '*' --scope read); `shipledger demo --keep` "
        "keeps this demo's stack serving it instead"
    )


def _keep_serving(stack: Stack) -> None:
    """Serve the live dashboard on the demo's stack until Ctrl-C, with a read token for
    every tenant made for it (printed once, like `shipledger tokens create`)."""
    assert stack.api is not None
    auth = AuthStore(stack.settings.resolved_auth_db)
    try:
        token = auth.create_token("*", ("read",), name="demo dashboard")[0]
    finally:
        auth.close()
    stopping = stop_on_signals()
    click.secho(f"\nLive dashboard: {stack.api.url}/ (token {token}); Ctrl-C stops.", bold=True)
    while not stopping.wait(0.5):
        stack.supervise()
    click.echo("stopping ...")


def _run(
    settings: Settings,
    day: date,
    policy_text: str,
    scale: int,
    timeout: float,
    tickets_url: str,
    keep: bool,
) -> None:
    """The demo's stack, its traffic and what it recorded (see `demo`)."""
    data_dir = settings.data_dir
    events = list(day_of_traffic(day, scale=scale))
    deployments = len({e.deployment_id for e in events})
    changes = change_requests([*events, _CLI_DEPLOYMENT])
    early, late = late_approvals(changes)
    builds = prod_builds(events)
    alerts = expected_outcome(events, policy_text, [*changes, *builds])
    click.secho(f"shipledger demo: {deployments} deployments on {day:%A %Y-%m-%d}", bold=True)
    click.echo(f"  starting the embedded stack in {data_dir} (Tansu, Faust, chDB) ...")
    with Stack(settings, log_dir=data_dir / "logs", api=True) as stack:
        services = service_catalog(day)
        click.echo(
            f"  broker {stack.bootstrap}; the service catalog ({len(services)} services), "
            f"{len(builds)} builds of what ships to prod and {len(early)} change requests"
            f" (with CAB approvals) through the ingest API at "
            f"{stack.api.url if stack.api else '?'} ..."
        )
        post_through_api(stack, [*services, *builds, *early])
        wait_for(
            stack,
            {
                "catalog_events": len(services),
                "artifact_events": len(builds),
                "change_events": len(early),
            },
            timeout,
        )
        click.echo(f"  publishing {len(events)} events from 4 teams ...")
        with Publisher(settings, stack.bootstrap) as publisher:
            publisher.publish_many(events)
        click.echo(
            "  one more deployment through the CI command: shipledger run -- <deploy>"
            " (to prod without an artifact digest: artifact_digest_missing)"
        )
        # Judged at the real clock: whether it is out of window depends on when you run this.
        alerts += expected_outcome(
            [_CLI_DEPLOYMENT.model_copy(update={"occurred_at": utcnow()})],
            policy_text,
            [*changes, *builds],
        )
        cli_events = _emit_with_cli(settings, stack.bootstrap)
        total_events = len(events) + cli_events
        want = {"deployment_events": total_events, "deployment_records": total_events}
        wait_for(stack, want, timeout)
        click.echo(
            f"  {len(late)} approvals arrive late (given before the deployments started, "
            "delivered after them): the deployments they cover are judged again ..."
        )
        post_through_api(stack, late)
        want |= {
            "change_events": len(early) + len(late),
            "open_alerts": sum(alerts.values()),
            RESOLUTIONS: judged_again(events, late),
        }
        wait_for(stack, want, timeout, exact=frozenset({"open_alerts"}))
        _summary(stack)
        change = rejected_prod_change(early)
        click.secho(
            f"\nThe pre-deploy gate (POST /v1/gate at {stack.api.url if stack.api else '?'}):"
            f" a pipeline asks to ship {change['tenant']}'s change {change['change_id']},"
            " which the CAB rejected",
            bold=True,
        )
        token = ingest_tokens(stack, {str(change["tenant"])})[str(change["tenant"])]
        _ask_gate(stack, token, change, events, emergency=False)
        _ask_gate(stack, token, change, events, emergency=True)
        wait_for(stack, {"gate_decisions": 2, BREAK_GLASS: 1}, timeout)
        _gate_summary(stack)
        escalated = count(stack, "alerts", _ESCALATED)
        click.secho(
            f"\nEscalation: {escalated} alerts of severity {_ESCALATE_FROM} or above in prod"
            f" go to {tickets_url}, a local stand-in for a ticketing system (ServiceNow, Jira)"
            " that this demo serves: a signed webhook answering with a ticket key",
            bold=True,
        )
        wait_for(stack, {TICKETS: escalated}, timeout, exact=frozenset({TICKETS}))
        _escalation_summary(stack)
        what_changed_and_did_it_work(stack, day, timeout)
        numbers_people_report(stack, day, data_dir)
        _integrity(stack)
        if keep:
            _keep_serving(stack)
