"""The ledger's side of the monthly compliance pack (`shipledger report monthly`, docs/reports.md):
the queries that produce its data files, the chain heads that anchor it, and whether those
heads are still part of the ledger.

Every query runs in the query database (hot and cold rows alike, `sinks.ledger.tiers`) with its
values bound server-side, and sorts on a unique key: the same month of the same ledger always
reads the same rows in the same order. A deployment belongs to the month its start falls in
(UTC), by its latest record; only the canonical environment `prod` is read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shipledger.schemas.models import LEDGER_YEARS
from shipledger.sinks.ledger import ddl, tiers
from shipledger.sinks.ledger.chain import LEGACY_LANE

if TYPE_CHECKING:
    from shipledger.sinks.ledger.store import LedgerStore

#: The canonical environment a compliance pack covers.
PRODUCTION = "prod"

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_DT = "DateTime64(3, 'UTC')"


class MonthError(ValueError):
    """A month that is not YYYY-MM."""


def month_window(month: str) -> tuple[datetime, datetime]:
    """[first instant, first instant of the next month) of `month` (YYYY-MM), UTC."""
    found = _MONTH.match(month)
    if found is None or not 1 <= int(found[2]) <= 12:
        raise MonthError(f"month: {month!r} is not YYYY-MM (e.g. 2026-11)")
    year, number = int(found[1]), int(found[2])
    if year not in LEDGER_YEARS:
        raise MonthError(
            f"month: {month!r} is not between {LEDGER_YEARS[0]}-01 and {LEDGER_YEARS[-1]}-12"
        )
    start = datetime(year, number, 1, tzinfo=UTC)
    end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=UTC)
    return start, end


@dataclass(frozen=True)
class PackQuery:
    """One data file's query: its file stem, SQL (server-side parameters) and their values."""

    name: str
    sql: str
    parameters: dict[str, str]


@dataclass(frozen=True)
class PackTable:
    """What one query read: column names and rows, in the query's order."""

    query: PackQuery
    columns: list[str]
    rows: list[tuple[Any, ...]]


@dataclass(frozen=True, order=True)
class ChainHead:
    """The head of one hash chain (`chain_heads`): its table, tenant, class, position, hash
    and lane (`sinks.ledger.chain`; '' in packs made before lanes existed)."""

    table: str
    tenant: str
    retention_class: str
    chain_seq: int
    row_hash: str
    lane: str = LEGACY_LANE

    def to_manifest(self) -> dict[str, object]:
        """Its entry in a pack's manifest (`chain_heads`): its fields by name."""
        return asdict(self)

    @classmethod
    def from_manifest(cls, entry: dict[str, Any]) -> ChainHead:
        """The head a manifest entry names (`to_manifest`); packs made before chain lanes
        (migration 0023) name none: the legacy lane."""
        return cls(
            str(entry["table"]),
            str(entry["tenant"]),
            str(entry["retention_class"]),
            int(entry["chain_seq"]),
            str(entry["row_hash"]),
            str(entry.get("lane", LEGACY_LANE)),
        )


def _month_deployments(tenant: str | None) -> str:
    """The month's production deployments, latest record each (a subquery). Records up to a
    day either side are read, so a deployment whose start a later record moved is judged by
    its latest start; `environment` and `started_at` lead the sort key after tenant."""
    scope = " AND tenant = {tenant:String}" if tenant is not None else ""
    return (
        "SELECT * FROM (\n"  # noqa: S608 (constant identifiers, values bound server-side)
        f"    SELECT * FROM {ddl.RECORDS}\n"
        f"    WHERE environment = '{PRODUCTION}'{scope}\n"
        f"        AND started_at >= {{start:{_DT}}} - INTERVAL 1 DAY\n"
        f"        AND started_at < {{end:{_DT}}} + INTERVAL 1 DAY\n"
        "    ORDER BY seq DESC, updated_at DESC LIMIT 1 BY tenant, deployment_id)\n"
        f"WHERE started_at >= {{start:{_DT}}} AND started_at < {{end:{_DT}}}"
    )


#: The month's deployments (`month`, see `_with_month`) as a set for IN.
_IDS = "(SELECT tenant, deployment_id FROM month)"


def _with_month(tenant: str | None, select: str) -> str:
    """`select` with `month` bound to the month's production deployments."""
    return f"WITH month AS ({_month_deployments(tenant)})\n{select}"


def latest_commits(commits: str) -> str:
    """The rows of each deployment's latest change set in `commits` (the qualified
    `deployment_commits`: a set computed again, after a late push, replaces the earlier)."""
    return (
        f"(SELECT * FROM {commits} WHERE (tenant, deployment_id, computed_at) IN\n"  # noqa: S608
        f"    (SELECT tenant, deployment_id, max(computed_at) FROM {commits}\n"
        "    GROUP BY tenant, deployment_id))"
    )


def _deployments_sql(commits_source: str | None) -> str:
    change_sets = commits_source is not None
    changes_join = (
        "LEFT JOIN (SELECT tenant, deployment_id, uniqExact(commit_sha) AS commits,\n"  # noqa: S608
        "        uniqExactIf(pr_number, pr_number IS NOT NULL) AS prs\n"
        f"        FROM {commits_source}\n"
        f"        WHERE (tenant, deployment_id) IN {_IDS}\n"
        "        GROUP BY tenant, deployment_id) AS s\n"
        "    ON d.tenant = s.tenant AND d.deployment_id = s.deployment_id\n"
    )
    commits = (
        "if(s.deployment_id = '', '', toString(s.commits)) AS commits,\n"
        "    if(s.deployment_id = '', '', toString(s.prs)) AS pull_requests_changed"
        if change_sets
        else "'' AS commits, '' AS pull_requests_changed"
    )
    return (
        "SELECT d.tenant AS tenant, d.deployment_id AS deployment_id, d.service AS service,\n"  # noqa: S608
        "    ifNull(d.team, '') AS team, ifNull(d.application, '') AS application,\n"
        "    ifNull(d.region, '') AS region, d.status AS status, d.kind AS kind,\n"
        "    d.started_at AS started_at, d.finished_at AS finished_at, d.actor AS actor,\n"
        "    d.trigger AS trigger, ifNull(d.version, '') AS version, d.commit_sha AS commit_sha,\n"
        "    ifNull(d.artifact_digest, '') AS artifact_digest,\n"
        "    ifNull(d.pipeline_run_url, '') AS pipeline_run_url,\n"
        "    ifNull(d.change_id, '') AS change_id,\n"
        "    ifNull(d.change_state, '') AS change_state_at_start,\n"
        "    if(c.change_id = '', '', toString(c.state)) AS change_state_now,\n"
        "    arrayStringConcat(arrayMap(a -> a.approver,\n"
        "        arrayFilter(a -> a.decision = 'approved', c.approvals)), ';') AS approved_by,\n"
        "    arrayStringConcat(arraySort(d.approvers), ';') AS reported_approvers,\n"
        "    arrayStringConcat(arraySort(d.pull_requests), ';') AS reported_pull_requests,\n"
        f"    {commits},\n"
        "    toUInt64(ifNull(f.findings, 0)) AS findings,\n"
        "    toUInt64(ifNull(f.open_findings, 0)) AS open_findings\n"
        "FROM month AS d\n"
        "LEFT JOIN (SELECT * FROM change_requests\n"
        "        WHERE (tenant, change_id) IN (SELECT tenant, change_id FROM month)) AS c\n"
        "    ON d.tenant = c.tenant AND ifNull(d.change_id, '') = c.change_id\n"
        "LEFT JOIN (SELECT tenant, deployment_id, countIf(kind != 'resolution') AS findings,\n"
        "        countIf(kind != 'resolution') - countIf(kind = 'resolution') AS open_findings\n"
        f"        FROM {ddl.ALERTS} WHERE (tenant, deployment_id) IN {_IDS}\n"
        "        GROUP BY tenant, deployment_id) AS f\n"
        "    ON d.tenant = f.tenant AND d.deployment_id = f.deployment_id\n"
        f"{changes_join if change_sets else ''}"
        "ORDER BY started_at, tenant, deployment_id"
    )


_APPROVALS = (
    "SELECT tenant, change_id, state AS change_state_now, a.approver AS approver,\n"
    "    a.decision AS decision, a.decided_at AS decided_at,\n"
    "    arrayStringConcat(arraySort(a.groups), ';') AS groups,\n"
    "    ifNull(a.verified_by, '') AS verified_by, ifNull(a.comment, '') AS comment\n"
    "FROM change_requests ARRAY JOIN approvals AS a\n"
    "WHERE (tenant, change_id) IN (SELECT tenant, change_id FROM month)\n"
    "ORDER BY tenant, change_id, decided_at, approver, decision, verified_by, comment"
)


_FINDINGS = (
    "SELECT a.tenant AS tenant, a.deployment_id AS deployment_id, a.service AS service,\n"  # noqa: S608
    "    a.alert_id AS alert_id, a.rule AS rule, a.severity AS severity,\n"
    "    a.occurred_at AS occurred_at, a.detected_at AS detected_at, a.message AS message,\n"
    "    a.policy_version AS policy_version, toBool(r.alert_id != '') AS resolved,\n"
    "    if(r.alert_id = '', NULL, r.detected_at) AS resolved_at,\n"
    "    r.alert_id AS resolution_id, r.message AS resolution\n"
    f"FROM {ddl.ALERTS} AS a\n"
    "LEFT JOIN (SELECT tenant, assumeNotNull(resolves) AS resolves, alert_id, detected_at,\n"
    f"        message FROM {ddl.ALERTS}\n"
    f"        WHERE kind = 'resolution' AND (tenant, deployment_id) IN {_IDS}\n"
    "        ORDER BY detected_at, alert_id LIMIT 1 BY tenant, resolves) AS r\n"
    "    ON a.tenant = r.tenant AND a.alert_id = r.resolves\n"
    f"WHERE a.kind != 'resolution' AND (a.tenant, a.deployment_id) IN {_IDS}\n"
    "ORDER BY tenant, deployment_id, occurred_at, alert_id"
)


def _changes_sql(commits_source: str) -> str:
    return (
        "SELECT tenant, deployment_id, service, commit_sha, pr_number, pr_title, author,\n"  # noqa: S608
        f"    first_seen_at, deployed_at FROM {commits_source}\n"
        f"WHERE (tenant, deployment_id) IN {_IDS}\n"
        "ORDER BY tenant, deployment_id, first_seen_at, commit_sha, pr_number, pr_title, author"
    )


def pack_queries(month: str, tenant: str | None, commits: str | None) -> list[PackQuery]:
    """The queries of the pack's data files for `month` (of `tenant`; None: every tenant);
    `changes` from `commits` (the qualified `deployment_commits`; None: no change sets)."""
    start, end = month_window(month)
    source = None if commits is None else latest_commits(commits)
    parameters = {"start": _param(start), "end": _param(end)}
    if tenant is not None:
        parameters["tenant"] = tenant
    selects = {
        "deployments": _deployments_sql(source),
        "approvals": _APPROVALS,
        "findings": _FINDINGS,
        **({"changes": _changes_sql(source)} if source is not None else {}),
    }
    return [PackQuery(name, _with_month(tenant, sql), parameters) for name, sql in selects.items()]


def _param(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S.000")


def read_pack(store: LedgerStore, queries: Iterable[PackQuery]) -> Iterable[PackTable]:
    """Run each query in the query database, yielding what it read (one at a time, so a
    caller can show progress)."""
    with store.reader(tiers.query_database(store), {}) as client:
        for query in queries:
            result = client.query(query.sql, parameters=query.parameters)
            rows = [tuple(row) for row in result.result_rows]
            yield PackTable(query, list(result.column_names), rows)


def chain_heads(store: LedgerStore, tenant: str | None) -> list[ChainHead]:
    """The last recorded head of every chain of every ledger table (of `tenant`), sorted."""
    heads = [
        ChainHead(table, chain_tenant, klass, head.seq, head.row_hash, lane)
        for name in ddl.tables()
        for (table, chain_tenant, klass, lane), head in store.recorded_heads(name).items()
        if tenant is None or chain_tenant == tenant
    ]
    return sorted(heads)


def missing_heads(store: LedgerStore, heads: Sequence[ChainHead]) -> list[ChainHead]:
    """The heads of `heads` no longer in the ledger: no row of their table, tenant, class and
    lane holds that `row_hash` at that `chain_seq` (hot or cold)."""
    missing: list[ChainHead] = []
    for table in sorted({h.table for h in heads}):
        wanted = [h for h in heads if h.table == table]
        if table not in ddl.tables():
            missing.extend(wanted)
            continue
        keys = [(h.tenant, h.retention_class, h.lane, h.chain_seq, h.row_hash) for h in wanted]
        _, rows = store.query(
            "SELECT DISTINCT tenant, retention_class, chain_lane, chain_seq, row_hash "  # noqa: S608
            f"FROM {store.source(table)} "
            "WHERE (tenant, retention_class, chain_lane, chain_seq, row_hash) "
            "IN {keys:Array(Tuple(String, String, String, UInt64, String))}",
            {"keys": keys},
        )
        found = {(str(t), str(k), str(lane), int(s), str(h)) for t, k, lane, s, h in rows}
        missing.extend(h for h, key in zip(wanted, keys, strict=True) if key not in found)
    return missing
