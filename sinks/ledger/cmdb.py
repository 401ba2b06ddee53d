"""CMDB reconciliation (docs/triage.md): a ServiceNow export's configuration items against
what the ledger has seen deployed, as findings stored in `cmdb_findings`.

Four findings: `deployed_not_in_cmdb` (a service the ledger saw deployed that no CI names),
`ci_never_deployed` (a CI no deployment names), `owner_mismatch` (the CI's `owned_by` is not
the service's owner: the catalog's owner team, else the team its latest deployment named)
and `environment_mismatch` (the CI's environment is none the service was deployed to).
Names compare case-insensitively. An export is reconciled once per tenant: its findings are
keyed by the file's sha256, so the same export again stores nothing new and reports the
findings stored the first time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shipledger.sinks.ledger import ddl, tiers
from shipledger.sinks.ledger.cmdb_export import ConfigurationItem, parse_export
from shipledger.sinks.ledger.store import LedgerStore

FINDINGS = ("deployed_not_in_cmdb", "ci_never_deployed", "owner_mismatch", "environment_mismatch")


@dataclass(frozen=True)
class Deployed:
    """What the ledger knows of one service: its owner and the environments it ran in."""

    service: str
    owner: str
    environments: tuple[str, ...]


@dataclass(frozen=True)
class Finding:
    """One difference between the CMDB and the ledger."""

    finding: str
    service: str
    ci_sys_id: str
    ci_class: str
    cmdb_value: str
    ledger_value: str


@dataclass(frozen=True)
class Reconciliation:
    """The findings of one export, and whether they were stored by this run (False: the
    same export was reconciled before, these are the stored ones)."""

    export_sha256: str
    items: int
    findings: list[Finding]
    stored_now: bool


def compare(items: Sequence[ConfigurationItem], deployed: Sequence[Deployed]) -> list[Finding]:
    """The findings of `items` against `deployed` (pure), sorted."""
    by_name = {d.service.casefold(): d for d in deployed}
    named = {i.name.casefold() for i in items}
    found = [
        Finding("deployed_not_in_cmdb", d.service, "", "", "", ", ".join(d.environments))
        for d in deployed
        if d.service.casefold() not in named
    ]
    for item in items:
        service = by_name.get(item.name.casefold())
        if service is None:
            found.append(
                Finding("ci_never_deployed", item.name, item.sys_id, item.ci_class, "", "")
            )
            continue
        if item.owned_by and service.owner and item.owned_by.casefold() != service.owner.casefold():
            found.append(
                Finding(
                    "owner_mismatch",
                    service.service,
                    item.sys_id,
                    item.ci_class,
                    item.owned_by,
                    service.owner,
                )
            )
        if item.environment and item.environment not in service.environments:
            found.append(
                Finding(
                    "environment_mismatch",
                    service.service,
                    item.sys_id,
                    item.ci_class,
                    item.environment,
                    ", ".join(service.environments),
                )
            )
    return _ordered(found)


def _ordered(findings: Sequence[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (FINDINGS.index(f.finding), f.service, f.ci_sys_id))


_DEPLOYED_SQL = (
    "SELECT s.service, ifNull(s.owner_team, ''), e.environments FROM (\n"
    "    SELECT service, owner_team FROM {services}\n"
    "    WHERE tenant = {{tenant:String}} AND deployments > 0) AS s\n"
    "INNER JOIN (\n"
    "    SELECT toString(service) AS service, arraySort(groupUniqArray(toString(environment)))"
    " AS environments\n"
    "    FROM {records} WHERE tenant = {{tenant:String}} GROUP BY service) AS e\n"
    "ON s.service = e.service\n"
    "ORDER BY s.service"
)
_STORED_SQL = (
    "SELECT finding, service, ci_sys_id, ci_class, cmdb_value, ledger_value FROM {findings}\n"
    "WHERE tenant = {{tenant:String}} AND export_sha256 = {{sha:String}}"
)


def deployed_services(store: LedgerStore, tenant: str) -> list[Deployed]:
    """Every service of `tenant` the ledger saw deployed, hot and cold, with its owner (the
    `services` view) and environments."""
    sql = _DEPLOYED_SQL.format(
        services=ddl.qualified(tiers.query_database(store), "services"),
        records=store.source(ddl.RECORDS),
    )
    _, rows = store.query(sql, {"tenant": tenant})
    return [Deployed(str(s), str(o), tuple(str(e) for e in envs)) for s, o, envs in rows]


def reconcile(store: LedgerStore, name: str, content: bytes, tenant: str) -> Reconciliation:
    """Reconcile export file `name` (its bytes `content`) for `tenant`: parse it (raises
    CmdbExportError), compare, and store the findings unless this export was stored before."""
    items = parse_export(name, content)
    sha = hashlib.sha256(content).hexdigest()
    table = ddl.qualified(store.database, ddl.CMDB_FINDINGS)
    _, stored = store.query(_STORED_SQL.format(findings=table), {"tenant": tenant, "sha": sha})
    if stored:
        findings = _ordered([Finding(*(str(v) for v in row)) for row in stored])
        return Reconciliation(sha, len(items), findings, stored_now=False)
    findings = compare(items, deployed_services(store, tenant))
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = [
        {
            "tenant": tenant,
            "export_sha256": sha,
            "export_name": Path(name).name,
            **asdict(f),
            "reconciled_at": now,
        }
        for f in findings
    ]
    store.insert_derived(ddl.CMDB_FINDINGS, rows)
    return Reconciliation(sha, len(items), findings, stored_now=True)
