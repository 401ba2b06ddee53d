"""`shipledger schemas`: compatibility of the schema versions, and the field dictionary."""

from __future__ import annotations

import difflib
from importlib.resources import files
from pathlib import Path

import click

from shipledger.schemas import compat, dictionary, registry
from shipledger.schemas.registry import CATALOG_JSON, catalog, catalog_json


@click.group(
    name="schemas",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
def schemas() -> None:
    """The Avro contract in schemas/: prove its versions compatible, document its fields.

    \b
      shipledger schemas check          # every version pair, backward and forward; exit 1 if not
      shipledger schemas docs           # write docs/fields.md (run in the repository root)
      shipledger schemas docs --check   # exit 1 if docs/fields.md is out of date (for CI)
      shipledger schemas catalog        # write schemas/catalog.json from catalog.yaml
      shipledger schemas register --registry http://registry:8081 [--dry-run]
    """


#: `--check` of the commands that write a generated file (`docs`, `catalog`).
_check_option = click.option(
    "--check",
    "check_only",
    is_flag=True,
    help="Write nothing; exit 1 if the file differs from what would be written.",
)


@schemas.command()
def check() -> None:
    """Check the catalog and every schema's version pairs.

    BACKWARD: each newer version reads data written by every older one. FORWARD: each older
    version reads data written by every newer one. Proven by writing sample records (every
    union branch, null and not, and every enum symbol) with one version and reading them with
    the other through fastavro's schema resolution. Also checks the catalog: ids unique,
    versions consecutive per schema, every topic's schema, key and dead-letter topic present.

    Prints one line per check; exits 1 if anything is incompatible.
    """
    try:
        cat = catalog()
        entries = compat.shipped_entries()
        current = catalog_json() == files(registry.__package__).joinpath(CATALOG_JSON).read_text(
            encoding="utf-8"
        )
    except Exception as exc:  # a schema that does not parse stops the catalog from loading
        click.echo(f"catalog: FAIL cannot load schemas/catalog.yaml: {exc}")
        raise click.exceptions.Exit(1) from exc
    failed = 0
    if not current:
        failed += 1
        click.echo(
            f"catalog: FAIL {CATALOG_JSON} differs from catalog.yaml: run "
            "`shipledger schemas catalog` in the repository root and commit the result"
        )
    for result in compat.run_checks(cat, entries):
        if result.ok:
            click.echo(f"{result.label}: OK")
        for problem in result.problems:
            failed += 1
            if problem.direction == compat.CATALOG:
                click.echo(f"{result.label}: FAIL {problem.schema}: {problem.reason}")
            else:
                click.echo(f"{result.label}: FAIL {problem.direction}: {problem.reason}")
    if failed:
        click.echo(f"{failed} problem(s): schemas are not compatible", err=True)
        raise click.exceptions.Exit(1)


@schemas.command()
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path(dictionary.DOCS_PATH),
    show_default=True,
    help="Where the dictionary goes (relative to the current directory).",
)
@_check_option
def docs(out: Path, check_only: bool) -> None:
    """Generate the field dictionary (docs/fields.md) from the schemas.

    For each schema's newest version: every field's type, whether it is required, its meaning
    and its OpenTelemetry semantic-convention name; then the alias table.
    """
    _write_or_check(out, dictionary.render(catalog()), check_only, "shipledger schemas docs")


@schemas.command(name="catalog")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("schemas") / CATALOG_JSON,
    show_default=True,
    help="Where the JSON goes (relative to the current directory).",
)
@_check_option
def catalog_command(out: Path, check_only: bool) -> None:
    """Write schemas/catalog.json, the catalog every process reads, from schemas/catalog.yaml.

    Run it after editing catalog.yaml, and commit both (`schemas check` fails until then).
    """
    _write_or_check(out, catalog_json(), check_only, "shipledger schemas catalog")


def _write_or_check(out: Path, text: str, check_only: bool, command: str) -> None:
    """Write `text` to the generated file `out`, or with `check_only` exit 1 (a diff and the
    `command` that rewrites it on stderr) if `out` holds something else."""
    current = out.read_text(encoding="utf-8") if out.is_file() else None
    if check_only:
        if current == text:
            click.echo(f"{out} is up to date")
            return
        if current is None:
            click.echo(f"{out} does not exist: run `{command}` and commit it", err=True)
        else:
            diff = difflib.unified_diff(
                current.splitlines(),
                text.splitlines(),
                f"{out} (on disk)",
                f"{out} (from the schemas)",
                lineterm="",
            )
            click.echo("\n".join(list(diff)[:60]), err=True)
            click.echo(
                f"{out} is out of date with the schemas: run `{command}` and commit the result",
                err=True,
            )
        raise click.exceptions.Exit(1)
    if not out.parent.is_dir():
        raise click.UsageError(
            f"{out.parent} does not exist: run this in the repository root, or pass --out"
        )
    if current == text:
        click.echo(f"{out} is up to date")
        return
    out.write_text(text, encoding="utf-8")
    click.echo(f"wrote {out}")


@schemas.command()
@click.option(
    "--registry",
    "registry_url",
    required=True,
    metavar="URL",
    help="Base URL of a Confluent-compatible Schema Registry, e.g. http://registry:8081.",
)
@click.option("--dry-run", is_flag=True, help="Print what would be registered; send nothing.")
def register(registry_url: str, dry_run: bool) -> None:
    """Register every schema version in a Confluent-compatible Schema Registry.

    One subject per topic with a schema, named `<topic>-value` (TopicNameStrategy) with the
    full topic name (SHIPLEDGER_TOPIC_PREFIX applies). Versions are registered oldest first.
    Prints the id the registry assigned to each version and whether it differs from the
    catalog's id (the id shipledger frames messages with when no registry is used).
    Exits 1 on the first failure: unreachable registry, HTTP error, or a version the
    registry rejects as incompatible (HTTP 409).

    \b
      shipledger schemas register --registry http://localhost:8081 --dry-run
      SHIPLEDGER_TOPIC_PREFIX=prod. shipledger schemas register --registry https://sr.example
    """
    # Lazy: httpx comes with the pipeline extra, not the emitter-only install.
    from shipledger.schemas.register import RegistryError, plan, register_all
    from shipledger.settings import Settings

    items = plan(catalog(), Settings().topic_prefix)
    if dry_run:
        for item in items:
            click.echo(
                f"would register {item.subject}: {item.schema.name} v{item.schema.version} "
                f"(catalog id {item.schema.id}) at {registry_url}"
            )
        return
    differing = 0
    try:
        for done in register_all(registry_url, items):
            schema = done.planned.schema
            note = f"differs from catalog id {schema.id}" if done.differs else "same as catalog"
            differing += done.differs
            click.echo(
                f"registered {done.planned.subject}: {schema.name} v{schema.version} -> "
                f"registry id {done.registry_id} ({note})"
            )
    except RegistryError as exc:
        click.echo(f"error: {exc}", err=True)
        raise click.exceptions.Exit(1) from exc
    if differing:
        click.echo(
            f"{differing} registry id(s) differ from the catalog's: consumers that resolve ids "
            "through this registry must not read messages framed with catalog ids",
            err=True,
        )
