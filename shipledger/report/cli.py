"""`shipledger report`: the signed monthly compliance pack (`monthly`), its signing key
(`keygen`) and its verification (`verify`); docs/reports.md. The group's `adoption`
command is added by `shipledger.adoption_cli`, a floor up (it reads through the API)."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from shipledger.locate import cli_settings, data_dir_option, locate
from shipledger.report.manifest import verify_files
from shipledger.report.pack import generate
from shipledger.report.signing import (
    SigningKeyError,
    generate_key,
    load_private_key,
    load_public_key,
)
from shipledger.settings import Settings
from shipledger.sinks.ledger.reader import (
    ChainHead,
    LedgerReader,
    LedgerUnavailable,
    MonthError,
    chdb_path,
    month_window,
)
from shipledger.stackfile import read_stack

#: `report verify`'s exit code when the ledger could not be read (1 is a failed check).
CANNOT_VERIFY = 3


@click.group("report", context_settings={"max_content_width": 100})
def report() -> None:
    """Signed monthly compliance packs of production changes; adoption (docs/reports.md)."""


def _ledger_settings(what: str, data_dir: Path | None) -> Settings:
    """Settings of the ledger to read; refuses an embedded ledger a running `up` owns."""
    settings = cli_settings(data_dir=data_dir)
    if chdb_path(settings.resolved_clickhouse_url) is None:
        return settings
    settings = locate(settings).require(what).settings
    running = read_stack(settings)
    if running is not None:
        raise click.ClickException(
            f"`shipledger up` (pid {running.pid}) is running on {settings.data_dir} and owns its "
            f"embedded ledger, which one process only can open: stop it and run {what} again, "
            "or run the ledger on a ClickHouse server (SHIPLEDGER_CLICKHOUSE_URL)"
        )
    return settings


@report.command("monthly")
@click.option("--month", required=True, help="The month, YYYY-MM (UTC), e.g. 2026-11.")
@click.option("--tenant", help="Only this tenant's deployments (default: every tenant).")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write the pack to (created; its files are replaced).",
)
@click.option(
    "--key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Ed25519 private key (PEM) to sign with (default: SHIPLEDGER_REPORT_SIGNING_KEY).",
)
@data_dir_option
def monthly(
    month: str, tenant: str | None, out: Path, key: Path | None, data_dir: Path | None
) -> None:
    """Write the compliance pack of one month: every production deployment with who deployed
    and who approved it, when, its change request and that request's state, what changed
    (when the ledger knows), and its policy findings with their resolutions.

    \b
    The pack (DIR):
      deployments.csv approvals.csv findings.csv [changes.csv]   data, byte-reproducible
      report.html                                               charts and tables
      manifest.json  manifest.json.sig                          sha256 + query of every file,
                                                                chain heads, Ed25519 signature

    \b
    Examples:
      shipledger report keygen --out keys/report.pem
      SHIPLEDGER_REPORT_SIGNING_KEY=keys/report.pem \\
          shipledger report monthly --month 2026-11 --tenant retail --out packs/2026-11
    """
    # What the command line alone decides is checked before the ledger is opened.
    try:
        month_window(month)
    except MonthError as exc:
        raise click.BadParameter(str(exc), param_hint="--month") from exc
    key_path = key or cli_settings(data_dir=data_dir).report_signing_key
    if key_path is None:
        raise click.UsageError(
            "no signing key: pass --key or set SHIPLEDGER_REPORT_SIGNING_KEY "
            "(create one with `shipledger report keygen --out PATH`)"
        )
    try:
        private = load_private_key(key_path, "--key" if key else "SHIPLEDGER_REPORT_SIGNING_KEY")
    except SigningKeyError as exc:
        raise click.UsageError(str(exc)) from exc
    settings = _ledger_settings("`shipledger report monthly`", data_dir)
    try:
        with (
            LedgerReader.open(settings) as reader,
            Progress(
                TextColumn("[bold]{task.description:<40}"),
                BarColumn(),
                TimeElapsedColumn(),
                transient=True,
            ) as progress,
        ):
            summary = generate(reader, month, tenant, out, private, progress)
    except LedgerUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"{summary.deployments} production deployments, {summary.findings} findings: "
        f"{', '.join(summary.files)} in {summary.directory}, signed by {summary.signer}"
    )
    if not summary.change_sets:
        click.echo("note: no change sets in this ledger: the commits columns are empty")


@report.command("keygen")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Private key file to create (owner-only); the public key goes to OUT.pub.",
)
def keygen(out: Path) -> None:
    """Create an Ed25519 signing key for compliance packs.

    Keep the private key where only the pack's generator can read it and point
    SHIPLEDGER_REPORT_SIGNING_KEY at it; hand OUT.pub to whoever verifies the packs.

    \b
    Example:
      shipledger report keygen --out keys/report.pem
    """
    try:
        public = generate_key(out)
    except SigningKeyError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(f"private key: {out} (keep it secret)\npublic key:  {public}")


@report.command("verify")
@click.argument("pack", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--public-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The signer's public key (PEM) you trust; without it only the key the manifest "
    "embeds is checked.",
)
@click.option(
    "--offline",
    is_flag=True,
    help="Skip the ledger: check the signature and the files only, not the chain heads.",
)
@data_dir_option
def verify(pack: Path, public_key: Path | None, offline: bool, data_dir: Path | None) -> None:
    """Check a pack: the manifest's signature, every file's sha256, and that each chain head
    it recorded is still part of the ledger (a row with that hash at that position).

    \b
    Exit codes:
      0  the pack verifies
      1  it does not: each failed check is named (file, signature, chain head)
      2  usage error
      3  the ledger could not be read to check the chain heads (use --offline to skip them)

    \b
    Examples:
      shipledger report verify packs/2026-11 --public-key keys/report.pem.pub
      shipledger report verify packs/2026-11 --offline
    """
    try:
        trusted = load_public_key(public_key) if public_key is not None else None
    except SigningKeyError as exc:
        raise click.UsageError(str(exc)) from exc
    result = verify_files(pack, trusted)
    problems = list(result.problems)
    heads = _recorded_heads(result.manifest)
    if not offline and result.manifest is not None:
        problems += [
            f"chain head gone: {h.table} tenant={h.tenant} class={h.retention_class} "
            f"lane={h.lane or '(legacy)'} chain_seq={h.chain_seq} row_hash={h.row_hash} "
            "is no longer in the ledger"
            for h in _missing(heads, data_dir)
        ]
    for note in result.notes:
        click.echo(f"note: {note}")
    if problems:
        for problem in problems:
            click.echo(f"FAILED {problem}", err=True)
        raise SystemExit(1)
    checked = "not checked (--offline)" if offline else f"{len(heads)} still in the ledger"
    click.echo(f"OK: {pack}: signature and every file's sha256 verify; chain heads {checked}")


def _recorded_heads(manifest: dict[str, object] | None) -> list[ChainHead]:
    entries = manifest.get("chain_heads", []) if manifest else []
    if not isinstance(entries, list):
        return []
    return [ChainHead.from_manifest(e) for e in entries]


def _missing(heads: list[ChainHead], data_dir: Path | None) -> list[ChainHead]:
    try:
        settings = _ledger_settings("`shipledger report verify`", data_dir)
        with LedgerReader.open(settings) as reader:
            return reader.missing_heads(heads)
    except (click.ClickException, LedgerUnavailable) as exc:
        message = exc.message if isinstance(exc, click.ClickException) else str(exc)
        _cannot_verify(message)


def _cannot_verify(message: str) -> NoReturn:
    click.echo(f"shipledger: cannot check the chain heads: {message}", err=True)
    raise SystemExit(CANNOT_VERIFY)
