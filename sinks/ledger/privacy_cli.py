"""`shipledger privacy show|erase`: the people of a tenant's pseudonym lookup, and an erasure
request honoured by crypto-shredding (`sinks.ledger.pseudonyms`, docs/privacy.md)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import click

from shipledger.output_format import format_option
from shipledger.privacy import PrivacyKey
from shipledger.sinks.cli_options import ledger_options, ledger_settings, written_ledger
from shipledger.sinks.ledger.pseudonyms import Entry, erase, people
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.tables import render_table

COLUMNS = ("tenant", "pseudonym", "name", "created_at")


@click.group("privacy")
def privacy() -> None:
    """People in the ledger: who a pseudonym is, and erasure requests (docs/privacy.md)."""


@contextmanager
def _lookup(
    what: str, clickhouse_url: str | None, data_dir: Path | None
) -> Iterator[tuple[LedgerStore, PrivacyKey]]:
    settings = ledger_settings(what, clickhouse_url, data_dir)
    with written_ledger(settings, "") as store:
        if store.privacy_key is None:
            raise click.ClickException(
                "privacy is off: set SHIPLEDGER_PRIVACY_KEY (or SHIPLEDGER_PRIVACY_KEY_FILE) "
                "to the key the sink pseudonymises with"
            )
        yield store, store.privacy_key


def _render(entries: list[Entry], fmt: str, head: Callable[[int], str]) -> str:
    rows = [{**asdict(e), "created_at": e.created_at.isoformat()} for e in entries]
    if fmt == "json":
        return json.dumps(rows, indent=2)
    lines = head(len(rows))
    if not rows:
        return lines
    return lines + "\n\n" + render_table(list(COLUMNS), [[r[c] for c in COLUMNS] for r in rows])


@privacy.command("show", context_settings={"max_content_width": 100})
@click.option("--tenant", required=True, help="Tenant whose people to list.")
@click.option("--person", help="Only this person (trimmed, case-insensitive).")
@format_option(["table", "json"], "table: one row per person; json: an array.")
@ledger_options
def show(
    tenant: str, person: str | None, fmt: str, clickhouse_url: str | None, data_dir: Path | None
) -> None:
    """List the people of TENANT the ledger names by pseudonym, with their names.

    \b
    Example:
      shipledger privacy show --tenant acme --person alice
    """
    with _lookup("`shipledger privacy show`", clickhouse_url, data_dir) as (store, key):
        found = people(store, key, tenant, person)
    click.echo(_render(found, fmt, lambda n: f"{n} people of tenant {tenant} in the lookup"))


@privacy.command("erase", context_settings={"max_content_width": 100})
@click.option("--tenant", required=True, help="Tenant of the person.")
@click.option("--person", required=True, help="Name as the ledger received it (any case).")
@format_option(["table", "json"], "table: what was erased; json: an array of the entries.")
@ledger_options
def erase_command(
    tenant: str, person: str, fmt: str, clickhouse_url: str | None, data_dir: Path | None
) -> None:
    """Honour an erasure request: destroy PERSON's lookup entries (crypto-shredding).

    Every row that names the person keeps its pseudonym, so the hash chains still verify
    (`shipledger audit verify`), but no key leads back to the name any more: reports, the
    API and `shipledger query` show the pseudonym. Stop `shipledger up` first on an
    embedded ledger. Running it again erases nothing and says so.

    \b
    Example:
      shipledger privacy erase --tenant acme --person alice
    """
    with _lookup("`shipledger privacy erase`", clickhouse_url, data_dir) as (store, key):
        erased = erase(store, key, tenant, person)
    if not erased:
        raise click.ClickException(
            f"no person {person!r} in tenant {tenant!r}'s lookup: never seen, or already erased "
            "(`shipledger privacy show --tenant` lists who is there)"
        )
    click.echo(_render(erased, fmt, lambda n: f"erased {n} lookup entries of {person!r}"))
