"""`shipledger import`: the command (the work is `history.run`'s; docs/import.md)."""

from __future__ import annotations

import asyncio
import functools
import json
import sys
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from shipledger.history.judging import Judge
from shipledger.history.mapping import Defaults
from shipledger.history.reading import FORMATS, Format, UnknownFormat, container_of, detect
from shipledger.history.run import (
    BATCH_EVENTS,
    ImportBusy,
    Outcome,
    import_file,
    import_ledger,
    one_import,
)
from shipledger.identities import KnownIdentities, actor_known
from shipledger.logging import configure_logging
from shipledger.schemas.policy import load_policy
from shipledger.sinks.cli_options import ledger_options, ledger_settings, written_ledger
from shipledger.sinks.regions import Ledger

#: Exit code when some records were refused (the rest imported; the errors file says why).
SOME_REFUSED = 3
_SHOWN_PROBLEMS = 20


def _lines(path: Path) -> int | None:
    """How many lines the file has (the progress bar's end), None for a JSON array."""
    if container_of(path) == "json":
        return None
    count = 0
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            count += chunk.count(b"\n")
    return count


@click.command("import")
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    help="The file's format. Default: told from its first record.",
)
@click.option("--tenant", help="Tenant of events naming none, and the only one accepted.")
@click.option("--environment", help="Environment where the export has none (Four Keys, DevLake).")
@click.option("--service", help="Service of every deployment (default: its repository's name).")
@click.option("--repository", help="Repository where the export names none (Four Keys changes).")
@click.option("--dry-run", is_flag=True, help="Parse and judge, report counts, write nothing.")
@click.option(
    "--errors",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where refused records go, one JSON object a line. Default: FILE.errors.ndjson "
    "(a --dry-run writes it only when given).",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=BATCH_EVENTS,
    show_default=True,
    help="Events per write.",
)
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a TTY).")
@ledger_options
def import_command(
    file: Path,
    fmt: Format | None,
    tenant: str | None,
    environment: str | None,
    service: str | None,
    repository: str | None,
    dry_run: bool,
    errors: Path | None,
    batch: int,
    progress: bool | None,
    clickhouse_url: str | None,
    data_dir: Path | None,
) -> None:
    """Import past deployments from FILE into the ledger, judged by the policy and chained
    as live events are: NDJSON or CSV of shipledger events (as `POST /v1/uploads` takes),
    or exports of Four Keys, Apache DevLake or GitHub's deployments API.

    Importing a file again, or again after a crash, stores nothing twice.

    \b
      shipledger import history.ndjson
      shipledger import deployments.json --format four-keys --environment production
      shipledger import cicd_deployment_commits.csv --tenant acme --dry-run

    Exit codes: 0 every record imported; 3 some records refused (the rest imported, FILE's
    errors file says which line, field and why); 1 nothing imported (a bad file, one with no
    record in it, no ledger, ClickHouse refusing).
    """
    settings = ledger_settings("`shipledger import`", clickhouse_url, data_dir)
    configure_logging(settings)
    try:
        policy = load_policy(settings.policy_file)
        chosen: Format = fmt if fmt is not None else asyncio.run(detect(file))
    except (ValueError, UnknownFormat) as exc:
        raise click.ClickException(str(exc)) from exc
    judge = Judge(
        settings,
        policy,
        tenant,
        functools.partial(actor_known, KnownIdentities.from_settings(settings)),
        datetime.now(UTC),
    )
    defaults = Defaults(environment, service, repository)
    show = sys.stderr.isatty() if progress is None else progress
    with ExitStack() as stack:
        ledger: Ledger | None = None
        if not dry_run:
            try:
                stack.enter_context(one_import(settings, file))
            except ImportBusy as exc:
                raise click.ClickException(str(exc)) from exc
            ledger = import_ledger(
                settings, policy, stack.enter_context(written_ledger(settings, "", create=True))
            )
        bar = Progress(
            TextColumn("[bold]import[/] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[events]:,} events, {task.fields[rate]:,.0f}/s"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            disable=not show,
        )
        stack.enter_context(bar)
        task = bar.add_task(file.name, total=_lines(file) if show else None, events=0, rate=0.0)
        started = datetime.now(UTC)

        def advance(line: int, events: int) -> None:
            seconds = (datetime.now(UTC) - started).total_seconds()
            rate = events / seconds if seconds else 0.0
            bar.update(task, completed=line, events=events, rate=rate)

        outcome = import_file(file, chosen, defaults, judge, ledger, advance, batch)
    if not (outcome.events or outcome.stored or outcome.duplicates or outcome.problems):
        raise click.ClickException(_nothing_read(file, chosen))
    unit = "item" if container_of(file) == "json" else "line"
    # A dry run writes nothing, not even the errors file, unless --errors asks for it.
    where = errors if dry_run else errors or file.with_name(file.name + ".errors.ndjson")
    _report(file, chosen, outcome, dry_run, where, unit)
    if outcome.problems:
        raise SystemExit(SOME_REFUSED)


def _nothing_read(file: Path, fmt: Format) -> str:
    """Why FILE gave no record at all: an import of nothing is a wrong file, not a success.
    (The whole file is read only then, and it gave nothing.)"""
    if not file.read_bytes().lstrip(b"\xef\xbb\xbf").strip():
        return f"{file} is empty: nothing to import"
    container = fmt if fmt in ("ndjson", "csv") else container_of(file)
    if container != "csv":
        return f"no records in {file}: nothing to import"
    named_csv = fmt == "csv" or file.suffix.lower() == ".csv"
    why = "" if named_csv else "its first line is not a JSON object, so it was read as CSV, and "
    return (
        f"no records in {file}: {why}it has a header line but no rows. Give NDJSON (one JSON "
        "object a line), a JSON array of objects, or CSV with a header line and rows"
    )


def _report(
    file: Path, fmt: str, outcome: Outcome, dry_run: bool, errors: Path | None, unit: str
) -> None:
    """The summary on stdout; refused records (`unit`: line or JSON array item) to `errors`
    (None: nowhere) and, the first few, to stderr."""
    verb = "judged (dry run: nothing written)" if dry_run else "imported"
    click.echo(
        f"{file.name} ({fmt}): {outcome.events:,} events {verb}, {outcome.alerts:,} alerts "
        f"raised, in {outcome.seconds:.1f} s ({outcome.rate:,.0f} events/s)"
    )
    if outcome.rows:
        stored = ", ".join(f"{table} {count:,}" for table, count in sorted(outcome.rows.items()))
        click.echo(f"  rows written (before the ledger's dedup): {stored}")
    if outcome.stored:
        click.echo(f"  {outcome.stored:,} events already in the ledger, skipped (not judged again)")
    if outcome.duplicates:
        click.echo(f"  {outcome.duplicates:,} events repeated in the file, imported once")
    if not outcome.problems:
        return
    if errors is None:
        kept = "the first shown; give --errors FILE to keep them all"
    else:
        kept = _write_problems(outcome, errors, unit)
    click.echo(f"  {len(outcome.problems):,} records refused ({kept}):", err=True)
    for p in outcome.problems[:_SHOWN_PROBLEMS]:
        click.echo(f"    {unit} {p.line}: {p.field}: {p.reason}", err=True)


def _write_problems(outcome: Outcome, errors: Path, unit: str) -> str:
    """Write every refused record to `errors`; what to say of where they are."""
    try:
        with errors.open("w", encoding="utf-8") as out:
            for p in outcome.problems:
                out.write(json.dumps({unit: p.line, "field": p.field, "reason": p.reason}) + "\n")
    except OSError as exc:  # the import is done: say why the list is missing, show the first
        return f"cannot write {errors}: {exc.strerror}; give --errors"
    return f"all in {errors}"
