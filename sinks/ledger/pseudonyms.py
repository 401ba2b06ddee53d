"""The ledger's side of privacy (docs/privacy.md): the lookup table `person_pseudonyms`, the
sink's step that pseudonymises a batch's personal fields before the rows are chained, the
names shown to authorised readers, and crypto-shredding on an erasure request.

Which fields name a person is declared once, in `shipledger.schemas.fields`
(`PERSONAL_FIELDS`, `PERSONAL_TEXT`); the keys and the pure substitutions are
`shipledger.privacy`. Every function here is a no-op without a key (`store.privacy_key`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, TypeVar

from shipledger.privacy import (
    Mentions,
    PrivacyKey,
    names_shown,
    new_pseudonym,
    pseudonyms_in,
    replace_strings,
)
from shipledger.schemas.fields import PERSONAL_FIELDS, PERSONAL_TEXT
from shipledger.schemas.policy import identity_key
from shipledger.schemas.registry import catalog
from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.sinks.rows import Row

_T = TypeVar("_T")


@dataclass(frozen=True)
class Entry:
    """One lookup entry: a person of a tenant, their pseudonym and (unsealed) name."""

    tenant: str
    pseudonym: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class _Path:
    """Where a field lives in a row: a column, or a field of the records of an array column
    (`index` in the record's tuple)."""

    column: str
    index: int | None = None

    def apply(self, row: Row, change: Callable[[str], str]) -> None:
        value = row.get(self.column)
        if value is None:
            return
        if self.index is None:
            # A plain string (actor, author) is the usual case: no walk.
            row[self.column] = (
                change(value) if isinstance(value, str) else replace_strings(value, change)
            )
            return
        i = self.index
        row[self.column] = [
            (*item[:i], replace_strings(item[i], change), *item[i + 1 :]) for item in value
        ]


@cache
def _paths(table: str) -> tuple[tuple[_Path, ...], tuple[_Path, ...]]:
    """The personal fields and the personal free text of `table`'s rows, as paths."""
    schema = ddl.tables()[table].schema
    if schema is None:
        return (), ()
    record = schema.rsplit(".", 1)[-1]
    fields = {f["name"]: f["type"] for f in catalog().latest(schema).raw["fields"]}

    def path(dotted: str) -> _Path:
        column, _, inner = dotted.partition(".")
        if not inner:
            return _Path(column)
        items = fields[column]["items"]
        return _Path(column, [f["name"] for f in items["fields"]].index(inner))

    return (
        tuple(path(p) for p in PERSONAL_FIELDS.get(record, ())),
        tuple(path(p) for p in PERSONAL_TEXT.get(record, ())),
    )


#: (tenant, pseudonym, sealed name) -> the name, or None when it does not open with the key.
Unsealed = dict[tuple[str, str, str], str | None]


def _entries(
    store: LedgerStore, key: PrivacyKey, tenants: Iterable[str], unsealed: Unsealed | None = None
) -> dict[str, Entry]:
    """Every lookup entry of `tenants` that opens with `key`, by name_hmac (`unsealed`:
    names opened before, kept by the caller; an erased entry is simply not read any more)."""
    opened: Unsealed = {} if unsealed is None else unsealed
    _, rows = store.query(
        f"SELECT tenant, name_hmac, pseudonym, sealed_name, created_at "  # noqa: S608
        f"FROM {ddl.qualified(store.database, ddl.PERSON_PSEUDONYMS)} "
        "WHERE tenant IN %(tenants)s ORDER BY created_at",
        {"tenants": sorted(set(tenants))},
    )
    found: dict[str, Entry] = {}
    for tenant, name_hmac, pseudonym, sealed, created_at in rows:
        at = (tenant, pseudonym, sealed)
        if at not in opened:
            opened[at] = key.unseal(tenant, pseudonym, sealed)
        name = opened[at]
        if name is not None:
            found.setdefault(name_hmac, Entry(tenant, pseudonym, name, created_at))
    return found


class Pseudonymiser:
    """The sink's step: a batch's personal fields replaced by their pseudonyms, new people
    added to the lookup first (a crash in between leaves an unused entry, never a row whose
    pseudonym has none). The lookup is read at every batch, so an erasure made by another
    process meanwhile is seen: the erased person's next row gets a new pseudonym."""

    def __init__(self, store: LedgerStore, key: PrivacyKey) -> None:
        self.store = store
        self.key = key
        self._unsealed: Unsealed = {}

    @classmethod
    def of(cls, store: object) -> Pseudonymiser | None:
        """The step for a sink writing to `store`; None when privacy is off (no key, or a
        store that is not a ledger, as the unit tests' in-memory one)."""
        if isinstance(store, LedgerStore) and store.privacy_key is not None:
            return cls(store, store.privacy_key)
        return None

    def apply(self, rows_by_table: Mapping[str, list[Row]]) -> None:
        """Pseudonymise the personal fields and text of every row, in place."""
        work = [(t, rows, *_paths(t)) for t, rows in rows_by_table.items() if rows]
        work = [w for w in work if w[2] or w[3]]
        if not work:
            return
        tenants = {str(row["tenant"]) for _, rows, _, _ in work for row in rows}
        known = _entries(self.store, self.key, tenants, self._unsealed)
        by_name: dict[str, dict[str, str]] = {t: {} for t in tenants}
        for entry in known.values():
            by_name[entry.tenant][entry.name] = entry.pseudonym
        new: list[dict[str, Any]] = []
        for _, rows, fields, _ in work:
            for row in rows:
                tenant = str(row["tenant"])

                def change(name: str, tenant: str = tenant) -> str:
                    return self._pseudonym(tenant, name, by_name, new)

                for field in fields:
                    field.apply(row, change)
        if new:
            self.store.insert_derived(ddl.PERSON_PSEUDONYMS, new)
        mentions = {tenant: Mentions(names) for tenant, names in by_name.items()}
        for _, rows, _, texts in work:
            for row in rows:
                replaced = mentions[str(row["tenant"])].replaced
                for text in texts:
                    text.apply(row, replaced)

    def _pseudonym(
        self,
        tenant: str,
        name: str,
        by_name: dict[str, dict[str, str]],
        new: list[dict[str, Any]],
    ) -> str:
        if not name or name in by_name[tenant]:
            return by_name[tenant].get(name, name)
        pseudonym = new_pseudonym()
        by_name[tenant][name] = pseudonym
        new.append(
            {
                "tenant": tenant,
                "name_hmac": self.key.name_hmac(tenant, name),
                "pseudonym": pseudonym,
                "sealed_name": self.key.seal(tenant, pseudonym, name),
                "created_at": datetime.now(UTC),
            }
        )
        return pseudonym


def reveal(store: LedgerStore, value: _T, tenant: str | None = None) -> _T:
    """`value` (a row, a list of rows, a report's text) with every pseudonym whose entry
    still exists replaced by the person's name: what an authorised reader is shown. The
    same value without a key. Erased people stay pseudonyms. With `tenant`, only that
    tenant's entries: a value may hold text its reader wrote (`SELECT 'person-…'`, an
    event's attributes), and another tenant's pseudonym in it must not lead to a name."""
    key = store.privacy_key
    if key is None:
        return value
    wanted = pseudonyms_in(value)
    if not wanted:
        return value
    _, rows = store.query(
        f"SELECT tenant, pseudonym, sealed_name "  # noqa: S608
        f"FROM {ddl.qualified(store.database, ddl.PERSON_PSEUDONYMS)} "
        "WHERE pseudonym IN %(wanted)s" + ("" if tenant is None else " AND tenant = %(tenant)s"),
        {"wanted": sorted(wanted), "tenant": tenant},
    )
    names = {}
    for tenant, pseudonym, sealed in rows:
        name = key.unseal(tenant, pseudonym, sealed)
        if name is not None:
            names[pseudonym] = name
    shown: _T = names_shown(value, names)
    return shown


def people(store: LedgerStore, key: PrivacyKey, tenant: str, person: str | None) -> list[Entry]:
    """The lookup entries of `tenant` (only those of `person`, compared as identities are:
    trimmed, case-folded), by name."""
    wanted = None if person is None else identity_key(person)
    entries = _entries(store, key, [tenant]).values()
    return sorted(
        (e for e in entries if wanted is None or identity_key(e.name) == wanted),
        key=lambda e: (identity_key(e.name), e.name),
    )


def erase(store: LedgerStore, key: PrivacyKey, tenant: str, person: str) -> list[Entry]:
    """Crypto-shred `person` of `tenant`: delete their lookup entries (every spelling that is
    the same identity), so their pseudonyms no longer lead to a name and a new HMAC of the
    name finds nothing. The rows keep their pseudonyms: the hash chain is untouched. Returns
    what was erased (empty: nothing known of that person, e.g. already erased)."""
    found = people(store, key, tenant, person)
    if found:
        store.command(
            f"ALTER TABLE {ddl.qualified(store.database, ddl.PERSON_PSEUDONYMS)} "
            "DELETE WHERE tenant = {tenant:String} AND pseudonym IN {gone:Array(String)}",
            {"tenant": tenant, "gone": [e.pseudonym for e in found]},
            settings={"mutations_sync": 2},
        )
    return found
