"""Generating a monthly compliance pack (docs/reports.md): the ledger's rows for the month as
CSV data files, the HTML report, and the signed manifest over them, with a progress bar.

The data files and the report depend only on the month and the ledger's rows (sorted on
unique keys, no generation time) and on who was erased since (docs/privacy.md), so
generating again gives the same bytes; only the manifest
differs, by `generated_at` and any chain head that moved.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.progress import Progress

from shipledger.report.charts import change_coverage, deployments_per_week, findings_by_rule, weeks
from shipledger.report.datafiles import cells, csv_bytes, records
from shipledger.report.manifest import FORMAT, file_entry, public_key_entry, seal
from shipledger.report.page import PageData, render_page
from shipledger.report.signing import fingerprint
from shipledger.sinks.ledger.reader import LedgerReader, month_window

REPORT = "report.html"


@dataclass(frozen=True)
class PackSummary:
    """What was written."""

    directory: Path
    deployments: int
    findings: int
    change_sets: bool
    files: list[str]
    signer: str


def _write(directory: Path, name: str, data: bytes) -> None:
    (directory / name).write_bytes(data)


def generate(
    reader: LedgerReader,
    month: str,
    tenant: str | None,
    out: Path,
    key: Ed25519PrivateKey,
    progress: Progress | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> PackSummary:
    """Write the pack of `month` (of `tenant`; None: every tenant) to `out`, signed by `key`.
    Raises MonthError for a month that is not YYYY-MM."""
    start, end = month_window(month)
    queries = reader.pack_queries(month, tenant)
    task = progress.add_task("report", total=len(queries) + 3) if progress else None

    def step(what: str) -> None:
        if progress is not None and task is not None:
            progress.update(task, advance=1, description=what)

    out.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, Any]] = []
    read: dict[str, tuple[list[str], list[list[str]]]] = {}
    for table in reader.read_pack(queries):
        name = f"{table.query.name}.csv"
        # Names for whoever holds the privacy key; an erased person stays a pseudonym.
        rows = cells(reader.reveal(table.rows))
        data = csv_bytes(table.columns, rows)
        _write(out, name, data)
        entries.append(
            file_entry(
                name,
                data,
                rows=len(table.rows),
                query=table.query.sql,
                parameters=table.query.parameters,
            )
        )
        read[table.query.name] = (table.columns, rows)
        step(f"{name}: {len(table.rows)} rows")
    # Read after the rows: every row the files hold is at or before these heads.
    heads = reader.chain_heads(tenant)
    step(f"chain heads: {len(heads)}")
    deployments = records(*read["deployments"])
    findings = records(*read["findings"])
    mondays = weeks(start.date(), (end - timedelta(days=1)).date())
    public = key.public_key()
    change_sets = "changes" in read
    page = render_page(
        PageData(
            title=f"Production changes, {month}",
            scope=f"Tenant {tenant}" if tenant else "All tenants",
            deployments=deployments,
            findings=findings,
            charts=[
                deployments_per_week(deployments, mondays),
                findings_by_rule(findings),
                change_coverage(deployments, mondays),
            ],
            change_sets=change_sets,
            signer=fingerprint(public),
        )
    ).encode("utf-8")
    _write(out, REPORT, page)
    entries.append(file_entry(REPORT, page))
    step("report.html")
    manifest = {
        "format": FORMAT,
        "month": month,
        "tenant": tenant,
        "period": {"start": _iso(start), "end": _iso(end)},
        "environment": "prod",
        "generated_at": _iso(now()),
        "files": entries,
        "change_sets": change_sets,
        "chain_heads": [h.to_manifest() for h in heads],
        "public_key": public_key_entry(public),
    }
    seal(out, manifest, key)
    step("signed")
    return PackSummary(
        out,
        len(deployments),
        len(findings),
        change_sets,
        [e["name"] for e in entries],
        fingerprint(public),
    )


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
