"""Change sets: the commits and pull requests each deployment shipped (docs/changes.md).

Computed when the sink stores a deployment record in a terminal status (succeeded, failed,
rolled_back; `ChangeSets.compute`, called after the flush that stored it), and again by
`shipledger changes recompute` for source events that arrived later. The range logic is
`sinks.ledger.commit_range` (pure); this module loads its inputs and stores its rows:

- the previous succeeded deployment of the same tenant, service and environment (started
  before this one, within `change_sets_lookback_days`) gives `from_sha`;
- the pushes and merged pull requests of the deployment's repository (of the tenant's every
  repository when the deployment names none) within the lookback give the history, loaded
  once per (tenant, repository) per call, so a flush of many deployments reads each once;
- policy `monorepos:` keeps only the commits touching the service's paths.

Rows are appended (`deployment_change_sets`, then `deployment_commits`, all with one
`computed_at`): the latest computation of a deployment is the one read (`read_change_set`).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any, NamedTuple, Protocol, runtime_checkable

from shipledger.schemas.policy import Policy
from shipledger.settings import Settings
from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.chain import epoch_ms, to_ms_precision
from shipledger.sinks.ledger.commit_range import CommitRange, History, SourceFact, commit_range

#: The retain_until of a change set whose record the ledger no longer holds (archived
#: before a replay): kept, as the change set itself is.
KEEP = datetime(2299, 12, 31, tzinfo=UTC)
#: Statuses whose record gets a change set: the deployment is over.
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "rolled_back"})

_RECORD_FIELDS = (
    "tenant",
    "deployment_id",
    "service",
    "environment",
    "repository",
    "commit_sha",
    "status",
    "team",
    "started_at",
    "finished_at",
    "updated_at",
    "retain_until",
)


@runtime_checkable
class ChangeSetStore(Protocol):
    """What change sets need of the ledger store (`LedgerStore` is the real one)."""

    def query(
        self,
        sql: str,
        parameters: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> tuple[list[str], list[tuple[Any, ...]]]: ...

    def insert_columns(
        self, table: str, names: Sequence[str], types: Sequence[str], columns: Sequence[list[Any]]
    ) -> None: ...


class Deployed(NamedTuple):
    """The deployment record a change set is computed for (a tuple: one per terminal record
    of every flush, of every chunk of an import)."""

    tenant: str
    deployment_id: str
    service: str
    environment: str
    repository: str | None
    commit_sha: str
    status: str
    team: str | None
    started_at: datetime
    deployed_at: datetime
    #: The record's; None when the sink's writer found it stored already (a replayed flush:
    #: not stamped again), read from the ledger then (`ChangeSets.compute`).
    retain_until: datetime | None

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> Deployed | None:
        """From a `deployment_records` row; None unless terminal and naming its commit."""
        if record.get("status") not in TERMINAL_STATUSES or not record.get("commit_sha"):
            return None
        return cls(
            record["tenant"],
            record["deployment_id"],
            record["service"],
            record["environment"],
            record.get("repository"),
            record["commit_sha"],
            record["status"],
            record.get("team"),
            record["started_at"],
            record.get("finished_at") or record["updated_at"],
            record.get("retain_until"),
        )


_STARTED = attrgetter("started_at")
_PLACE = attrgetter("tenant", "environment", "service")
_REPOSITORY = attrgetter("tenant", "repository")


class Succeeded(NamedTuple):
    """A succeeded deployment: a candidate previous deployment of the same service and
    environment (a tuple: the previous one of every deployment)."""

    deployment_id: str
    commit_sha: str
    started_at: datetime


class Candidates:
    """The candidate previous deployments of one service and environment, added in
    (started_at, deployment_id) order. Held as columns: a `Succeeded` is made only of the one
    a deployment finds, not of every candidate read."""

    def __init__(self) -> None:
        self._starts: list[datetime] = []
        self._ids: list[str] = []
        self._shas: list[str] = []

    def add(self, deployment_id: str, commit_sha: str, started_at: datetime) -> None:
        """The next candidate, in order."""
        self._starts.append(started_at)
        self._ids.append(deployment_id)
        self._shas.append(commit_sha)

    def latest_before(self, d: Deployed) -> Succeeded | None:
        """`previous_of` over these: a binary search, so a batch of many deployments of one
        service is not quadratic (an import)."""
        i = bisect.bisect_left(self._starts, d.started_at)
        while i > 0:
            i -= 1
            if self._ids[i] != d.deployment_id:
                return Succeeded(self._ids[i], self._shas[i], self._starts[i])
        return None


_NO_CANDIDATES = Candidates()


class ChangeSets:
    """Computes and stores change sets (see the module docstring)."""

    def __init__(
        self,
        store: ChangeSetStore,
        policy: Policy,
        *,
        lookback: timedelta = timedelta(days=90),
        limit: int = 1000,
    ) -> None:
        self.store = store
        self.policy = policy
        self.lookback = lookback
        self.limit = limit

    @classmethod
    def from_settings(cls, settings: Settings, store: ChangeSetStore, policy: Policy) -> ChangeSets:
        """The computation the settings configure (the sink's, `shipledger changes`)."""
        return cls(
            store,
            policy,
            lookback=timedelta(days=settings.change_sets_lookback_days),
            limit=settings.change_sets_max_commits,
        )

    def compute(self, deployments: Iterable[Deployed]) -> int:
        """Compute and store the change set of each deployment; how many were stored. Two
        reads whatever the count: the candidate previous deployments, then the history of
        every repository concerned."""
        batch = list(deployments)
        if not batch:
            return 0
        first = min(map(_STARTED, batch))
        candidates = self._succeeded(batch, first)
        histories = self._histories(batch, first - self.lookback)
        retained = self._retained([d for d in batch if d.retain_until is None])
        sets: list[tuple[Any, ...]] = []
        commits: list[tuple[Any, ...]] = []
        now = epoch_ms(datetime.now(UTC))
        unknown = History()
        globs_of, mapped, limit = (
            self.policy.monorepos.globs,
            self.policy.monorepos.root,
            self.limit,
        )
        for d in batch:
            history = histories.get((d.tenant, d.repository), unknown)
            key = (d.tenant, d.service, d.environment)
            previous = candidates.get(key, _NO_CANDIDATES).latest_before(d)
            # The filter's globs (`Monorepos.globs`), asked only of a repository it maps.
            globs = globs_of(d.repository, d.service) if d.repository in mapped else None
            found = commit_range(
                history,
                None if previous is None else previous.commit_sha,
                d.commit_sha,
                limit=limit,
                keep=None if globs is None else history.touching(globs),
            )
            retain_until = d.retain_until or retained.get((d.tenant, d.deployment_id), KEEP)
            deployed_at = epoch_ms(d.deployed_at)
            sets.append(_set_row(d, previous, found, now, deployed_at, retain_until))
            if found.commits:
                commits += _commit_rows(d, found, now, deployed_at)
        if commits:
            _insert(self.store, ddl.CHANGE_COMMITS, _COMMIT_LAYOUT, commits)
        _insert(self.store, ddl.CHANGE_SETS, _SET_LAYOUT, sets)
        return len(sets)

    def recompute(self, tenant: str | None, deployment_ids: Sequence[str]) -> int:
        """Compute again the change sets of `deployment_ids` (of `tenant`; None: any) from
        their latest records (a late push, a policy change); how many were stored."""
        if not deployment_ids:
            return 0
        names = ", ".join(ddl.quote_ident(f) for f in _RECORD_FIELDS)
        params: dict[str, Any] = {"ids": list(deployment_ids)}
        where = "deployment_id IN {ids:Array(String)}"
        if tenant is not None:
            where += " AND tenant = {tenant:String}"
            params["tenant"] = tenant
        columns, rows = self.store.query(
            f"SELECT {names} FROM {ddl.qualified(None, ddl.RECORDS)} WHERE {where} "  # noqa: S608
            "ORDER BY seq DESC, updated_at DESC LIMIT 1 BY tenant, deployment_id",
            params,
        )
        found = [Deployed.of(dict(zip(columns, row, strict=True))) for row in rows]
        return self.compute(d for d in found if d is not None)

    def recompute_late(
        self, sources: Iterable[Mapping[str, Any]], skip: Iterable[tuple[str, str]] = ()
    ) -> int:
        """Compute again the change sets of the deployments whose deployed commit one of
        `sources` (`source_events` rows just stored) names: the push of a commit that was
        deployed before its push reached the ledger (docs/changes.md, late source events).
        `skip`: (tenant, deployment_id) just computed."""
        named = sorted(
            {
                (row["tenant"], sha)
                for row in sources
                for sha in (*row.get("commit_shas", ()), row.get("commit_sha"))
                if sha
            }
        )
        if not named:
            return 0
        _, rows = self.store.query(
            "SELECT DISTINCT tenant, deployment_id\n"
            f"FROM {ddl.qualified(None, ddl.CHANGE_SETS)}\n"
            "WHERE (tenant, to_sha) IN {named:Array(Tuple(String, String))}",
            {"named": named},
        )
        done = set(skip)
        late = [(str(t), str(d)) for t, d in rows if (t, d) not in done]
        stored = 0
        for tenant in sorted({t for t, _ in late}):
            stored += self.recompute(tenant, [d for t, d in late if t == tenant])
        return stored

    def _succeeded(
        self, batch: Sequence[Deployed], first: datetime
    ) -> dict[tuple[str, str, str], Candidates]:
        """The succeeded deployments of the batch's (tenant, service, environment) within the
        lookback before its latest start, by key, each sorted by (start, id) (the records
        table, not the `deployments` view: its sort key leads with tenant, region,
        environment, service, started_at).

        Of a key's deployments started before the batch's first start, only the latest two
        are read: a deployment of the batch finds its previous one among those started since
        then or, failing that, it is the latest of the earlier ones (the one before it when
        that latest is the deployment itself). So a flush reads what its deployments can
        find, not the lookback's every deployment of their services (an import's chunk: not
        every earlier chunk's again; 0.2 s of a 50,000-event import's 0.9). `first`: the
        batch's first start."""
        _, rows = self.store.query(
            "SELECT tenant, service, environment, deployment_id, commit_sha, started FROM (\n"  # noqa: S608
            "    SELECT *, started >= {first:DateTime64(3, 'UTC')} AS since_first,\n"
            "        row_number() OVER (PARTITION BY tenant, service, environment, since_first\n"
            "            ORDER BY started DESC, deployment_id DESC) AS latest\n"
            "    FROM (\n"
            "        SELECT tenant, service, environment, deployment_id,\n"
            "            argMax(status, seq) AS status, argMax(commit_sha, seq) AS commit_sha,\n"
            "            argMax(started_at, seq) AS started\n"
            f"        FROM {ddl.qualified(None, ddl.RECORDS)}\n"
            "        WHERE (tenant, environment, service)\n"
            "            IN {keys:Array(Tuple(String, String, String))}\n"
            "            AND started_at >= {since:DateTime64(3, 'UTC')}\n"
            "            AND started_at < {until:DateTime64(3, 'UTC')}\n"
            "        GROUP BY tenant, service, environment, deployment_id)\n"
            "    WHERE status = 'succeeded' AND commit_sha IS NOT NULL)\n"
            "WHERE since_first OR latest <= 2\n"
            # One deployment a row: (started, deployment_id) orders each key's rows totally.
            "ORDER BY tenant, service, environment, started, deployment_id",
            {
                "keys": sorted(set(map(_PLACE, batch))),
                # Down to the millisecond stored: at or before every start of the batch.
                "first": to_ms_precision(first),
                "since": first - self.lookback,
                "until": max(map(_STARTED, batch)),
            },
        )
        out: dict[tuple[str, str, str], Candidates] = {}
        for tenant, service, environment, deployment_id, commit_sha, started in rows:
            key = (tenant, service, environment)
            found = out.get(key)
            if found is None:
                found = out[key] = Candidates()
            found.add(deployment_id, commit_sha, started)
        return out

    def _retained(self, batch: Sequence[Deployed]) -> dict[tuple[str, str], datetime]:
        """The stored `retain_until` of each record of `batch` (by tenant and deployment;
        none asked: no query), read by its sort key."""
        if not batch:
            return {}
        _, rows = self.store.query(
            "SELECT tenant, deployment_id, max(retain_until)\n"
            f"FROM {ddl.qualified(None, ddl.RECORDS)}\n"
            "WHERE (tenant, environment, service, started_at, deployment_id)\n"
            "    IN {keys:Array(Tuple(String, String, String, DateTime64(3, 'UTC'), String))}\n"
            "GROUP BY tenant, deployment_id",
            {
                "keys": sorted(
                    {
                        (d.tenant, d.environment, d.service, d.started_at, d.deployment_id)
                        for d in batch
                    }
                )
            },
        )
        return {(str(t), str(d)): until for t, d, until in rows}

    def _histories(
        self, batch: Sequence[Deployed], since: datetime
    ) -> dict[tuple[str, str | None], History]:
        """The history of each (tenant, repository) of the batch since `since`; a deployment
        naming no repository gets its tenant's every repository."""
        repositories = set(map(_REPOSITORY, batch))
        named = {(t, r) for t, r in repositories if r is not None}
        whole = {t for t, r in repositories if r is None}
        # Changed paths are read only where the monorepo filter runs on them (`touching`):
        # a repository the policy maps, deployed naming it.
        mapped = {r for _, r in named if r in self.policy.monorepos.root}
        _, rows = self.store.query(
            "SELECT tenant, repository, kind, occurred_at, commit_sha, previous_sha,\n"
            "    commit_shas, author, pull_request_number, pull_request_title,\n"
            "    if(repository IN {mapped:Array(String)}, changed_paths, map()) AS paths\n"
            f"FROM {ddl.qualified(None, ddl.SOURCE)}\n"
            "WHERE ((tenant, repository) IN {named:Array(Tuple(String, String))}\n"
            "        OR tenant IN {whole:Array(String)})\n"
            "    AND occurred_at >= {since:DateTime64(3, 'UTC')}\n"
            "    AND kind IN ('push', 'pull_request_merged')",
            {
                "named": sorted(named),
                "whole": sorted(whole),
                "mapped": sorted(mapped),
                "since": since,
            },
        )
        facts: dict[tuple[str, str | None], list[SourceFact]] = {}
        for row in rows:
            tenant, repository = row[0], row[1]
            # The columns after tenant and repository are a SourceFact's, in its order.
            fact = SourceFact._make(row[2:])
            if (tenant, repository) in named:
                facts.setdefault((tenant, repository), []).append(fact)
            if tenant in whole:
                facts.setdefault((tenant, None), []).append(fact)
        return {key: History.of(found) for key, found in facts.items()}


def previous_of(d: Deployed, succeeded: Sequence[Succeeded]) -> Succeeded | None:
    """The latest of `succeeded` (deployments of d's service and environment) started
    before `d` within any window, other than `d` itself (ties: the highest id)."""
    ordered = Candidates()
    for s in sorted(succeeded, key=_started):
        ordered.add(s.deployment_id, s.commit_sha, s.started_at)
    return ordered.latest_before(d)


def _started(s: Succeeded) -> tuple[datetime, str]:
    return (s.started_at, s.deployment_id)


class _Layout(NamedTuple):
    """The columns of a table the change sets insert, in the order their rows hold them."""

    names: tuple[str, ...]
    types: tuple[str, ...]

    @classmethod
    def of(cls, columns: tuple[tuple[str, str, str], ...], names: tuple[str, ...]) -> _Layout:
        """`names` (the table's every column, `columns`) with their ClickHouse types."""
        types = {name: kind for name, kind, _ in columns}
        if sorted(names) != sorted(types):
            raise ValueError(f"change-set rows name {sorted(names)}, the table {sorted(types)}")
        return cls(names, tuple(types[name] for name in names))


# Rows are tuples in these orders (C-speed transposed into columns), their DateTime64(3) values
# the epoch milliseconds stored (as `LedgerStore.insert` sends them): building them as dicts
# and letting the client convert every datetime cost about half of an import's change sets.
_SET_LAYOUT = _Layout.of(
    ddl.CHANGE_SET_COLUMNS,
    (
        "tenant",
        "deployment_id",
        "service",
        "environment",
        "from_sha",
        "to_sha",
        "commit_count",
        "pr_count",
        "reverse",
        "computed_at",
        "status",
        "repository",
        "previous_deployment_id",
        "deployed_at",
        "team",
        "complete",
        "started_at",
        "retain_until",
    ),
)
_COMMIT_LAYOUT = _Layout.of(
    ddl.CHANGE_COMMIT_COLUMNS,
    (
        "tenant",
        "deployment_id",
        "service",
        "environment",
        "commit_sha",
        "pr_number",
        "pr_title",
        "author",
        "first_seen_at",
        "deployed_at",
        "computed_at",
        "reverse",
        "position",
    ),
)


def _set_row(
    d: Deployed,
    previous: Succeeded | None,
    found: CommitRange,
    now: int,
    deployed_at: int,
    retain_until: datetime,
) -> tuple[Any, ...]:
    return (
        d.tenant,
        d.deployment_id,
        d.service,
        d.environment,
        None if previous is None else previous.commit_sha,
        d.commit_sha,
        len(found.commits),
        len(found.pr_numbers),
        int(found.reverse),
        now,
        d.status,
        d.repository,
        None if previous is None else previous.deployment_id,
        deployed_at,
        d.team,
        int(found.complete),
        # Where triage reads it (`suspect_inputs`): beside this record.
        epoch_ms(d.started_at),
        epoch_ms(retain_until),
    )


def _commit_rows(
    d: Deployed, found: CommitRange, now: int, deployed_at: int
) -> list[tuple[Any, ...]]:
    reverse = int(found.reverse)
    return [
        (
            d.tenant,
            d.deployment_id,
            d.service,
            d.environment,
            c.sha,
            c.pr_number,
            c.pr_title,
            c.author,
            None if c.first_seen_at is None else epoch_ms(c.first_seen_at),
            deployed_at,
            now,
            reverse,
            i,
        )
        for i, c in enumerate(found.commits)
    ]


def _insert(
    store: ChangeSetStore, table: str, layout: _Layout, rows: list[tuple[Any, ...]]
) -> None:
    columns = list(map(list, zip(*rows, strict=True)))
    store.insert_columns(table, layout.names, layout.types, columns)


# --- reads ---------------------------------------------------------------------------------


#: The fields of a change set's summary in API and CLI answers, in order.
SUMMARY_FIELDS = (
    "tenant",
    "deployment_id",
    "service",
    "environment",
    "status",
    "repository",
    "previous_deployment_id",
    "from_sha",
    "to_sha",
    "reverse",
    "complete",
    "commit_count",
    "pr_count",
    "deployed_at",
    "computed_at",
)
#: The columns of one commit in API and CLI answers, in order.
COMMIT_FIELDS = ("commit_sha", "pr_number", "pr_title", "author", "first_seen_at", "lead_time_s")


@dataclass(frozen=True)
class StoredChangeSet:
    """The latest change set of one deployment, with its commits (rows as stored)."""

    summary: dict[str, Any]
    commits: list[dict[str, Any]]

    def commit_rows(self) -> list[dict[str, Any]]:
        """Each commit (`COMMIT_FIELDS`) with its lead time: seconds from first sight to
        this deployment (None when never seen, or for a rollback's commits)."""
        return [
            {
                **{f: c[f] for f in COMMIT_FIELDS[:-1]},
                "lead_time_s": None
                if c["first_seen_at"] is None or c["reverse"]
                else (c["deployed_at"] - c["first_seen_at"]).total_seconds(),
            }
            for c in self.commits
        ]

    def pull_requests(self) -> list[dict[str, Any]]:
        """The range's merged pull requests, newest first, with their commits."""
        found: dict[int, dict[str, Any]] = {}
        for c in self.commits:
            if c["pr_number"] is not None:
                pr = found.setdefault(
                    c["pr_number"],
                    {
                        "number": c["pr_number"],
                        "title": c["pr_title"],
                        "author": c["author"],
                        "commits": [],
                    },
                )
                pr["commits"].append(c["commit_sha"])
        return list(found.values())

    def as_dict(self) -> dict[str, Any]:
        """The answer of `GET /v1/deployments/{id}/changes` and of `shipledger changes show
        --format json`: the summary, `commits` and `pull_requests`."""
        summary = {f: self.summary[f] for f in SUMMARY_FIELDS}
        summary["reverse"] = bool(summary["reverse"])
        summary["complete"] = bool(summary["complete"])
        return {**summary, "commits": self.commit_rows(), "pull_requests": self.pull_requests()}


def read_change_set(
    store: ChangeSetStore, tenant: str | None, deployment_id: str
) -> StoredChangeSet | None:
    """The latest change set of `deployment_id` (of `tenant`; None: any), if computed."""
    params: dict[str, Any] = {"id": deployment_id}
    where = "deployment_id = {id:String}"
    if tenant is not None:
        where += " AND tenant = {tenant:String}"
        params["tenant"] = tenant
    names, rows = store.query(
        f"SELECT * FROM {ddl.qualified(None, ddl.CHANGE_SETS)} WHERE {where}\n"  # noqa: S608
        "ORDER BY computed_at DESC LIMIT 1",
        params,
    )
    if not rows:
        return None
    summary = dict(zip(names, rows[0], strict=True))
    names, rows = store.query(
        f"SELECT * FROM {ddl.qualified(None, ddl.CHANGE_COMMITS)}\n"  # noqa: S608
        "WHERE tenant = {tenant:String} AND deployment_id = {id:String}\n"
        "    AND computed_at = {at:DateTime64(3, 'UTC')}\n"
        "ORDER BY position",
        {"tenant": summary["tenant"], "id": deployment_id, "at": summary["computed_at"]},
    )
    return StoredChangeSet(summary, [dict(zip(names, r, strict=True)) for r in rows])


def list_change_sets(
    store: ChangeSetStore,
    *,
    tenant: str | None,
    service: str | None = None,
    environment: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """The latest change set of each deployment matching the filters, newest deployment
    first (at most `limit`)."""
    conditions: list[str] = []
    params: dict[str, Any] = {"limit": limit}
    for column, value in (("tenant", tenant), ("service", service), ("environment", environment)):
        if value is not None:
            conditions.append(f"{column} = {{{column}:String}}")
            params[column] = value
    if since is not None:
        conditions.append("deployed_at >= {since:DateTime64(3, 'UTC')}")
        params["since"] = since
    where = " AND ".join(conditions) or "1"
    names, rows = store.query(
        f"SELECT * FROM (SELECT * FROM {ddl.qualified(None, ddl.CHANGE_SETS)} WHERE {where}\n"  # noqa: S608
        "    ORDER BY computed_at DESC LIMIT 1 BY tenant, deployment_id)\n"
        "ORDER BY deployed_at DESC, deployment_id LIMIT {limit:UInt32}",
        params,
    )
    return [dict(zip(names, r, strict=True)) for r in rows]
