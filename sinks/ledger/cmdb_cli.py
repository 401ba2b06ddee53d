"""`shipledger cmdb reconcile`: a ServiceNow CMDB export against the ledger
(`sinks.ledger.cmdb`), findings stored and printed."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from pathlib import Path

import click

from shipledger.output_format import format_option
from shipledger.sinks.cli_options import ledger_options, ledger_settings, written_ledger
from shipledger.sinks.ledger.cmdb import Finding, Reconciliation, reconcile
from shipledger.sinks.ledger.cmdb_export import CmdbExportError
from shipledger.tables import render_table

COLUMNS = list(Finding.__dataclass_fields__)


@click.group("cmdb")
def cmdb() -> None:
    """Compare a ServiceNow CMDB with what the ledger has seen deployed."""


@cmdb.command("reconcile", context_settings={"max_content_width": 100})
@click.option(
    "--file",
    "export",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Export of cmdb_ci_service / cmdb_ci_appl: CSV (…_list.do?CSV) or JSON (?JSONv2).",
)
@click.option("--tenant", help="Tenant (default SHIPLEDGER_TENANT).")
@format_option(
    ["table", "json", "csv"], "table: a summary and a row per finding; json; csv: the rows."
)
@ledger_options
def reconcile_command(
    export: Path,
    tenant: str | None,
    fmt: str,
    clickhouse_url: str | None,
    data_dir: Path | None,
) -> None:
    """Reconcile configuration items with the deployments the ledger saw, store the
    findings and print them.

    \b
    Findings: deployed_not_in_cmdb (a deployed service no CI names), ci_never_deployed (a CI
    no deployment names), owner_mismatch (owned_by is not the service's owner team),
    environment_mismatch (the CI's environment is none it was deployed to). The export
    needs the columns sys_id and name (owned_by, environment, operational_status,
    sys_class_name are read when present; retired CIs are skipped). The same export again
    stores nothing new and prints the findings stored the first time (keyed by its sha256).
    `shipledger up` runs this every SHIPLEDGER_CMDB_INTERVAL_S on
    SHIPLEDGER_CMDB_EXPORT_FILE; while it runs on an embedded ledger, it owns the ledger.

    \b
    Examples:
      shipledger cmdb reconcile --file cmdb_ci_service.csv
      shipledger cmdb reconcile --file export.json --tenant acme --format json
    """
    settings = ledger_settings("`shipledger cmdb reconcile`", clickhouse_url, data_dir)
    instead = "set SHIPLEDGER_CMDB_EXPORT_FILE for it to reconcile, or "
    try:
        with written_ledger(settings, instead) as store:
            result = reconcile(store, export.name, export.read_bytes(), tenant or settings.tenant)
    except CmdbExportError as exc:
        raise click.BadParameter(str(exc), param_hint="--file") from exc
    click.echo(report(result, fmt))


def report(result: Reconciliation, fmt: str) -> str:
    """The reconciliation as `fmt`."""
    rows = [asdict(f) for f in result.findings]
    if fmt == "json":
        return json.dumps(
            {
                "export_sha256": result.export_sha256,
                "configuration_items": result.items,
                "stored_now": result.stored_now,
                "findings": rows,
            },
            indent=2,
        )
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    stored = "stored" if result.stored_now else "already stored (the same export)"
    head = (
        f"{result.items} configuration items, {len(rows)} findings {stored}; "
        f"export sha256 {result.export_sha256[:16]}"
    )
    if not rows:
        return head
    return head + "\n\n" + render_table(COLUMNS, [[r[c] for c in COLUMNS] for r in rows])
