"""The `shipledger` command. Subcommands load lazily so `shipledger emit` in a CI job stays fast
and needs only the emitter's dependencies."""

from __future__ import annotations

import importlib
from typing import Any

import click
from pydantic_core import ValidationError

from shipledger.gc_tuning import freeze_at_exit, loaded, pause_while_loading
from shipledger.startup import skip_pydantic_plugins

# name -> (module, attribute, one-line help shown by `shipledger --help`)
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "start": (
        "shipledger.producers.emitter.cli",
        "start",
        "Print a new deployment id for a pipeline.",
    ),
    "emit": ("shipledger.producers.emitter.cli", "emit", "Publish one deployment event."),
    "run": (
        "shipledger.producers.emitter.cli",
        "run",
        "Run a deploy command, reporting start/finish.",
    ),
    "flush": (
        "shipledger.producers.emitter.cli",
        "flush",
        "Send events spooled while Kafka was down.",
    ),
    "up": ("shipledger.up.stack", "up", "Run the embedded stack until Ctrl-C."),
    "api": ("shipledger.producers.api.cli", "api", "Serve the ingest API (HTTP) until Ctrl-C."),
    "tokens": ("shipledger.producers.api.cli", "tokens", "Create, list and revoke API tokens."),
    "webhooks": (
        "shipledger.producers.api.cli",
        "webhooks",
        "Set webhook secrets per tenant and provider.",
    ),
    "gate": (
        "shipledger.producers.api.governance_cli",
        "gate",
        "Ask before deploying: allowed or blocked, and why.",
    ),
    "artifacts": (
        "shipledger.producers.api.artifacts_cli",
        "artifacts",
        "Artifact digests a registry must keep (protected).",
    ),
    "approve": (
        "shipledger.producers.api.governance_cli",
        "approve",
        "Approve or reject a change request as yourself (SSO/LDAP).",
    ),
    "annotations": (
        "shipledger.annotations_cli",
        "annotations_group",
        "Export deployments as Grafana annotations or Datadog events.",
    ),
    "worker": ("shipledger.processors.worker", "worker", "Run the Faust processors alone."),
    "sink": ("shipledger.sinks.cli", "sink", "Run the ClickHouse sink alone."),
    "jobs": (
        "shipledger.up.jobs",
        "jobs",
        "Run verification, incident triage, CMDB reconciliation alone.",
    ),
    "escalate": (
        "shipledger.escalations_cli",
        "escalate",
        "Deliver alerts to tickets, pagers, chats, webhooks; their status.",
    ),
    "migrate": (
        "shipledger.sinks.ledger.migrate_cli",
        "migrate",
        "Apply, show or write the ledger's schema migrations.",
    ),
    "audit": (
        "shipledger.sinks.ledger.audit_cli",
        "audit",
        "Verify the ledger's hash chains; grants.",
    ),
    "topics": ("shipledger.topics", "topics_group", "Create shipledger's Kafka topics."),
    "dlq": ("shipledger.dlq", "dlq", "Inspect and replay dead-lettered messages."),
    "journal": (
        "shipledger.journal_cli",
        "journal",
        "Show the embedded stack's write-ahead journal.",
    ),
    "query": ("shipledger.query_cli", "query", "Run read-only SQL over the ledger (hot + cold)."),
    "alerts": (
        "shipledger.alerts_cli",
        "alerts",
        "Tail the alerts topic live, or list stored alerts; filtered.",
    ),
    "metrics": (
        "shipledger.dora_cli",
        "metrics",
        "DORA metrics and success criteria (metrics dora, success).",
    ),
    "report": (
        "shipledger.adoption_cli",  # the group of shipledger.report.cli, with `adoption` added
        "report",
        "Signed monthly compliance packs; verify; adoption.",
    ),
    "verification": ("shipledger.verification_cli", "verification", "Post-deploy verdicts."),
    "changes": (
        "shipledger.sinks.ledger.changes_cli",
        "changes",
        "Commits and PRs each deployment shipped.",
    ),
    "suspects": ("shipledger.suspects_cli", "suspects", "Rank deployments behind an incident."),
    "cmdb": (
        "shipledger.sinks.ledger.cmdb_cli",
        "cmdb",
        "Reconcile a ServiceNow CMDB export with the ledger.",
    ),
    "privacy": ("shipledger.sinks.ledger.privacy_cli", "privacy", "Pseudonyms; erasure requests."),
    "import": (
        "shipledger.history.cli",
        "import_command",
        "Import past deployments (NDJSON/CSV, Four Keys, DevLake, GitHub).",
    ),
    "reconcile": (
        "shipledger.sinks.ledger.reconcile_cli",
        "reconcile_command",
        "Check the ledger against audit logs, CloudTrail, access logs.",
    ),
    "doctor": (
        "shipledger.doctor",
        "doctor",
        "Check the install and the running stack; say how to fix.",
    ),
    "archive": (
        "shipledger.sinks.ledger.archive",
        "archive_command",
        "Move old ledger rows to cold Parquet storage.",
    ),
    "demo": (
        "shipledger.lab.demo",
        "demo",
        "Drive a realistic day of CI traffic through the stack.",
    ),
    "bench": ("shipledger.lab.bench", "bench", "Measure throughput and latency of the stack."),
    "policy": (
        "shipledger.policy_cli",
        "policy",
        "Validate a policy file (windows, tickets, approvals, retention).",
    ),
    "schemas": (
        "shipledger.schemas.cli",
        "schemas",
        "Check schema compatibility; generate the field dictionary.",
    ),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = _COMMANDS.get(cmd_name)
        if spec is None:
            return None
        skip_pydantic_plugins()  # before the command's modules build their models
        try:
            module = importlib.import_module(spec[0])
        except ModuleNotFoundError as exc:
            if exc.name is None or exc.name.startswith("shipledger"):
                raise
            # The emitter-only install lacks the pipeline's packages: say which extra adds them.
            raise click.UsageError(
                f"`shipledger {cmd_name}` needs {exc.name}, which the emitter-only install "
                "leaves out: pip install 'shipledger[local]' (or [pipeline] with your own Kafka)"
            ) from exc
        finally:
            loaded()  # the command's modules are in: collect again (see `main`)
        command: click.Command = getattr(module, spec[1])
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ValidationError as exc:
            if exc.title != "Settings":
                raise
            # A SHIPLEDGER_* variable (or the flag a command sets it from) out of its bounds:
            # every command reads the settings, none should answer with pydantic's traceback.
            from shipledger.schemas.validation import settings_problems

            raise click.UsageError(settings_problems(exc)) from exc

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Listing help must not import every subcommand (faust, chDB): use the static lines.
        with formatter.section("Commands"):
            formatter.write_dl([(name, spec[2]) for name, spec in _COMMANDS.items()])


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="shipledger")
def cli() -> None:
    """shipledger: the flight recorder of everything you ship.

    \b
    In a CI job:
      export SHIPLEDGER_BOOTSTRAP_SERVERS=kafka:9092
      export SHIPLEDGER_DEPLOYMENT_ID=$(shipledger start)
      shipledger run --service checkout --environment prod -- ./deploy.sh

    \b
    Locally:
      shipledger up        # broker + processors + ClickHouse sink
      shipledger demo      # a day of CI traffic through it, then a summary

    Settings come from SHIPLEDGER_* environment variables (see README, Configuration);
    `emit`/`run` flags name theirs in their --help.
    """


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point."""
    freeze_at_exit()
    pause_while_loading()  # until `get_command` has loaded the command's modules
    try:
        return cli.main(args=argv, prog_name="shipledger")
    finally:
        loaded()  # when no command was loaded (`--help`, a usage error)


if __name__ == "__main__":
    main()
