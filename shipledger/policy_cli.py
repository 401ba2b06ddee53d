"""`shipledger policy`: work with policy files: `check` one, `simulate` one over the
ledger's past deployments, `push` one to the running workers."""

from __future__ import annotations

import functools
import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import click

from shipledger.identities import KnownIdentities, actor_known
from shipledger.kafka import DeliveryError, KafkaProducer
from shipledger.locate import cli_settings, data_dir_option, locate
from shipledger.processors.enrichment import Enrichment
from shipledger.processors.simulate import Simulation, holding, simulate
from shipledger.schemas.confluent_ids import use_schema_registry
from shipledger.schemas.models import utcnow
from shipledger.schemas.policy import (
    Policy,
    PolicyCheck,
    PolicyDocument,
    PolicyError,
    parse_policy,
    read_policy_text,
)
from shipledger.schemas.registry import topic_codec
from shipledger.schemas.topics import POLICY
from shipledger.sinks.ledger.reader import LedgerReader, LedgerUnavailable
from shipledger.stackfile import resolve_bootstrap
from shipledger.tables import render_table
from shipledger.topics import ensure_topics

#: How long `push` waits for the broker to acknowledge the policy.
_PUSH_TIMEOUT_S = 30.0


def _checks() -> list[PolicyCheck]:
    """The receivers' check of their options, where the receivers are installed (the
    emitter-only install checks the rest of the file)."""
    try:
        from shipledger.receivers.registry import policy_problems
    except ModuleNotFoundError:
        click.echo("note: receiver options not checked (pip install 'shipledger[pipeline]')")
        return []
    return [policy_problems]


@click.group(
    name="policy",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
def policy() -> None:
    """Policy as code: change windows, freezes, tickets, approvals and retention.

    \b
      shipledger policy check deploy/policy.example.yaml   # exit 0 valid, 1 invalid
      shipledger policy simulate --policy stricter.yaml --from 2026-11-01 --to 2026-12-01
      shipledger policy push stricter.yaml                 # the running workers judge by it
    """


@policy.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def check(file: Path) -> None:
    """Validate a policy FILE without starting anything.

    Prints one line per problem as `FILE:LINE: key.path: reason` (the form editors and CI
    annotations link to) and exits 1; prints the version and what the file sets, and exits
    0, when the file is valid.
    """
    loaded = _valid_policy(file)[1]
    rules = loaded.defaults
    click.echo(f"{file}: valid policy {loaded.full_version}")
    click.echo(f"  tenants with overrides: {', '.join(loaded.tenants) or '-'}")
    click.echo(f"  kinds with their own rules: {', '.join(rules.kinds) or '-'}")
    click.echo(f"  approval requirements: {', '.join(r.name for r in rules.approvals) or '-'}")
    routes = [f"{r.name} -> {', '.join(r.receivers)}" for r in loaded.escalation.routes]
    click.echo(f"  escalation routes: {'; '.join(routes) or '-'}")


def _valid_policy(file: Path) -> tuple[str, Policy]:
    """The text of `file` and the policy it holds; on a problem, prints one line per problem
    as `FILE:LINE: key.path: reason` and exits 1."""
    try:
        text = read_policy_text(file)
    except ValueError as exc:
        click.echo(str(exc), err=True)
        raise click.exceptions.Exit(1) from exc
    try:
        return text, parse_policy(text, str(file), checks=_checks())
    except PolicyError as exc:
        for problem in exc.problems:
            where = f"{file}:{problem.line}" if problem.line else str(file)
            what = f"{problem.path}: {problem.reason}" if problem.path else problem.reason
            click.echo(f"{where}: {what}")
        click.echo(f"{len(exc.problems)} problem(s): {file} is not a valid policy", err=True)
        raise click.exceptions.Exit(1) from exc


class _When(click.ParamType):
    """An ISO 8601 date or time; without an offset, UTC."""

    name = "time"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            when = datetime.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 date or time (2026-11-01, 2026-11-01T09:00Z)")
        return when if when.tzinfo else when.replace(tzinfo=UTC)


@policy.command("simulate")
@click.option(
    "--policy",
    "file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The candidate policy file.",
)
@click.option("--from", "start", required=True, type=_When(), help="First start judged (ISO 8601).")
@click.option("--to", "end", required=True, type=_When(), help="End of the window (exclusive).")
@click.option("--tenant", help="Only this tenant's deployments (default: every tenant).")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@data_dir_option
def simulate_command(
    file: Path,
    start: datetime,
    end: datetime,
    tenant: str | None,
    fmt: str,
    data_dir: Path | None,
) -> None:
    """Judge again, under the candidate policy FILE, the deployments of the ledger that started
    in [--from, --to), and print what would change against the alerts that hold now: alerts
    added and removed, per rule and team (`--format json`: every change, per deployment).

    The first event of each deployment goes through the processors' own chain, against the
    change requests, catalog and artifacts the ledger holds. The embedded ledger (chDB) is
    read here: stop `shipledger up` first, or run the ledger on a ClickHouse server.
    Exit 0 whatever would change, 1 if the policy or the ledger cannot be read.
    """
    if end <= start:
        raise click.BadParameter("must be after --from", param_hint="--to")
    candidate = _valid_policy(file)[1]
    settings = locate(cli_settings(data_dir=data_dir)).settings
    try:
        with LedgerReader.open(settings) as ledger:
            events = ledger.first_events(start, end, tenant)
            held = holding(ledger.alerts_of(events))
            view = Enrichment()
            for _, event in ledger.enrichment_events():
                view.apply(event)
    except LedgerUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    known = functools.partial(actor_known, KnownIdentities.from_settings(settings))
    result = simulate(events, held, candidate, view, utcnow(), known)
    click.echo(_as_json(result) if fmt == "json" else _as_table(result, start, end))


@policy.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--bootstrap", help="Kafka bootstrap servers (default: settings / running stack).")
@data_dir_option
def push(file: Path, bootstrap: str | None, data_dir: Path | None) -> None:
    """Validate the policy FILE, then publish it (text, version, SHA-256) to the compacted
    `policy` topic. Running workers judge by it from their next batch, without a restart,
    and every alert they raise names it (policy_version: version+digest). Once a policy is
    pushed it is the authority over the policy file the workers started with
    (docs/governance.md). Exit 0 published, 1 invalid or not acknowledged.
    """
    text, loaded = _valid_policy(file)
    settings = locate(cli_settings(data_dir=data_dir)).settings
    use_schema_registry(settings.schema_registry_url, settings.topic_prefix)
    target = bootstrap or resolve_bootstrap(settings)
    if not target:
        raise click.UsageError(
            "no broker: pass --bootstrap, set SHIPLEDGER_BOOTSTRAP_SERVERS or run `shipledger up`"
        )
    topic = ensure_topics(settings, target).of(POLICY)
    document = PolicyDocument.of(text, loaded, utcnow())
    producer = KafkaProducer(settings.kafka_producer(target))
    producer.produce(topic, topic_codec(POLICY).encode(document.to_avro()), document.scope.encode())
    try:
        producer.flush_or_raise(_PUSH_TIMEOUT_S, "the policy")
    except DeliveryError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"pushed policy {loaded.full_version} (sha256 {document.sha256}) to {topic}: "
        "running workers judge by it from their next batch"
    )


def _as_json(result: Simulation) -> str:
    summary = [
        {"rule": rule, "team": team, "added": added, "removed": removed}
        for rule, team, added, removed in result.by_rule_and_team()
    ]
    doc = {**asdict(result), "by_rule_and_team": summary}
    return json.dumps(doc, indent=2, sort_keys=True)


def _as_table(result: Simulation, start: datetime, end: datetime) -> str:
    lines = [
        f"policy {result.policy_version} over {result.deployments} deployment(s) started "
        f"{start.isoformat()} .. {end.isoformat()}",
        f"alerts holding now: {result.held}; under this policy: {result.would_hold}",
    ]
    if result.rejected:
        lines.append(f"not judged (rejected by the chain): {', '.join(result.rejected)}")
    summary = result.by_rule_and_team()
    if not summary:
        lines.append("no alert would change")
        return "\n".join(lines)
    rows = [
        (rule, team or "-", f"+{added}", f"-{removed}") for rule, team, added, removed in summary
    ]
    lines += [
        "",
        render_table(("rule", "team", "added", "removed"), rows, right=(False, False, True, True)),
    ]
    return "\n".join(lines)
