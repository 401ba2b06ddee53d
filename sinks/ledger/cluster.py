"""ClickHouse cluster mode: the migrations' DDL rewritten, at apply time, for a named cluster.

With `SHIPLEDGER_CLICKHOUSE_CLUSTER=<name>` every statement of every migration runs `ON CLUSTER`
and each table a migration creates becomes two (docs/cluster.md):

- `<name>_local`: the same columns, sort key, partitions, TTL and comment, its engine made
  `Replicated…MergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', …)` (the
  server's `{shard}` and `{replica}` macros name the replica set and the replica);
- `<name>`: `Distributed(<cluster>, <database>, <name>_local, cityHash64(tenant))`, the table
  every reader and the sink know: a tenant's rows, chain heads included, all live on one shard.

Materialized views read and write the local tables (each shard folds its own inserts: every
aggregate is per tenant, so per shard), plain views read the Distributed ones, a column or
comment change reaches both tables, any other ALTER only the local one, a backfill `INSERT …
SELECT` runs through the Distributed tables, its joins shard by shard (`BACKFILL_SETTINGS`). A
statement of a kind not listed here is a `ClusterError`: a new migration cannot silently skip
the cluster.

Pure text in, text out: the migration files stay the one copy of the DDL. Not run on a real
cluster here (no ClickHouse server on this machine); ClickHouse's own parser checks the output
in the unit tests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from shipledger.sinks.ledger import ddl

LOCAL_SUFFIX = "_local"
#: Rows of one tenant go to one shard: its hash chains and their heads stay together.
SHARDING_KEY = "cityHash64(tenant)"
#: One replica set per shard; `{database}`/`{table}` keep two ledgers on one cluster apart.
REPLICA_PATH = "/clickhouse/tables/{shard}/{database}/{table}"
#: schema_migrations: one replica set spanning every node, so any node says what is applied.
EVERYWHERE_PATH = "/clickhouse/tables/all/{database}/{table}"
EVERYWHERE_REPLICA = "{shard}-{replica}"

#: Backfills (`INSERT … SELECT`) read through the Distributed tables, joining on each shard.
BACKFILL_SETTINGS = "distributed_product_mode = 'local'"

_NAME = r"`?(\w+)`?"
#: A statement's own SETTINGS clause, on its last line (`name = value, ...`).
_TRAILING_SETTINGS = re.compile(r"\nSETTINGS \w+ = [^\n]*\Z")
_CREATE_TABLE = re.compile(rf"^CREATE TABLE (IF NOT EXISTS )?{_NAME}")
_CREATE_MV = re.compile(rf"^CREATE MATERIALIZED VIEW {_NAME} TO {_NAME}")
_CREATE_VIEW = re.compile(rf"^CREATE VIEW {_NAME}")
_ALTER = re.compile(rf"^ALTER TABLE {_NAME} ")
_DROP = re.compile(rf"^DROP (TABLE|VIEW) (IF EXISTS )?{_NAME}")
_INSERT = re.compile(r"^INSERT INTO ")
_EXCHANGE = re.compile(rf"^EXCHANGE TABLES {_NAME} AND {_NAME}$")
_ENGINE = re.compile(r"ENGINE = (\w*)MergeTree(?:\(([^)]*)\))?")
# What the Distributed table must follow too: its columns and its comment.
_BOTH_TABLES = re.compile(r"^(ADD|DROP|MODIFY|RENAME|COMMENT) COLUMN |^MODIFY COMMENT ")
_COMMENT = re.compile(r"\nCOMMENT ('(?:[^'\\]|\\.)*')$")
_TENANT = re.compile(r"^\s*`tenant` ", re.MULTILINE)


class ClusterError(ValueError):
    """A statement the cluster mode has no form for (a new kind of migration statement, an
    engine that is not a MergeTree, a table without a tenant to shard by)."""


def on_cluster(name: str) -> str:
    """The `ON CLUSTER` clause of cluster `name`."""
    return f"ON CLUSTER {ddl.quote_ident(name)}"


def local_name(table: str) -> str:
    """The replicated local table behind Distributed table `table`."""
    return table + LOCAL_SUFFIX


def created_tables(statements: Iterable[str]) -> frozenset[str]:
    """The names `CREATE TABLE` statements among `statements` create."""
    found = (_CREATE_TABLE.match(s.strip()) for s in statements)
    return frozenset(m.group(2) for m in found if m)


@dataclass(frozen=True)
class Cluster:
    """Rewrites DDL for cluster `name`: `tables` are the ledger's tables (every name a
    migration creates by CREATE TABLE), `database` the one the Distributed tables point into."""

    name: str
    database: str
    tables: frozenset[str]

    @property
    def on(self) -> str:
        """The `ON CLUSTER` clause."""
        return on_cluster(self.name)

    def rewrite(self, statement: str) -> list[str]:
        """The statements that apply migration statement `statement` (comments removed) on the
        cluster, in order."""
        statement = statement.strip()
        if m := _CREATE_TABLE.match(statement):
            return self._create_table(statement, m)
        if m := _CREATE_MV.match(statement):
            head = f"CREATE MATERIALIZED VIEW {ddl.quote_ident(m.group(1))} {self.on} TO "
            body = self._to_local(statement[m.end() :])
            return [head + ddl.quote_ident(self._local_if_table(m.group(2))) + body]
        if m := _CREATE_VIEW.match(statement):
            return [self._on_after(statement, m)]
        if m := _ALTER.match(statement):
            return self._alter(statement, m)
        if m := _DROP.match(statement):
            return self._drop(m)
        if _INSERT.match(statement):
            return [self._backfill(statement)]
        if m := _EXCHANGE.match(statement):
            return [self._exchange(m)]
        raise ClusterError(f"no cluster form for: {statement.splitlines()[0][:120]}")

    def everywhere(self, create: str) -> str:
        """`CREATE TABLE` `create` (a plain MergeTree) replicated to every node of the cluster,
        sharded nowhere: schema_migrations, read by whichever node a client reaches."""
        m = _CREATE_TABLE.match(create)
        if m is None:
            raise ClusterError(f"not a CREATE TABLE: {create.splitlines()[0][:120]}")
        return _replicated(self._on_after(create, m), EVERYWHERE_PATH, EVERYWHERE_REPLICA)

    # --- the forms ------------------------------------------------------------------------
    def _create_table(self, statement: str, m: re.Match[str]) -> list[str]:
        table = m.group(2)
        if not _TENANT.search(statement):
            raise ClusterError(f"table {table} has no tenant column to shard by")
        exists = m.group(1) or ""
        local = (
            f"CREATE TABLE {exists}{ddl.quote_ident(local_name(table))} {self.on}"
            + statement[m.end() :]
        )
        comment = _COMMENT.search(statement)
        distributed = (
            f"CREATE TABLE {exists}{ddl.quote_ident(table)} {self.on} "
            f"AS {ddl.quote_ident(local_name(table))}\n"
            f"ENGINE = Distributed({ddl.quote_str(self.name)}, {ddl.quote_str(self.database)}, "
            f"{ddl.quote_str(local_name(table))}, {SHARDING_KEY})"
            + (f"\nCOMMENT {comment.group(1)}" if comment else "")
        )
        return [_replicated(local, REPLICA_PATH, "{replica}"), distributed]

    def _alter(self, statement: str, m: re.Match[str]) -> list[str]:
        table, action = m.group(1), statement[m.end() :]
        if table not in self.tables:
            return [self._on_after(statement, m)]
        local = f"ALTER TABLE {ddl.quote_ident(local_name(table))} {self.on} {action}"
        if not _BOTH_TABLES.match(action):
            return [local]
        return [local, f"ALTER TABLE {ddl.quote_ident(table)} {self.on} {action}"]

    def _drop(self, m: re.Match[str]) -> list[str]:
        kind, exists, name = m.group(1), m.group(2) or "", m.group(3)
        out = [f"DROP {kind} {exists}{ddl.quote_ident(name)} {self.on}"]
        if name in self.tables:
            # SYNC: the replica's path is free at once, for a table created again later.
            out.append(f"DROP TABLE {exists}{ddl.quote_ident(local_name(name))} {self.on} SYNC")
        return out

    def _exchange(self, m: re.Match[str]) -> str:
        # A table rebuilt under a new name and swapped in: the Distributed tables keep their
        # names and point at their own local tables, so swapping the local tables swaps what
        # both serve. Each local table keeps the replication path it was created with (the
        # `{table}` macro expands at creation): a later migration must not create a table of
        # the swapped-out name again before that one is dropped (SYNC frees its path).
        first, second = m.group(1), m.group(2)
        for name in (first, second):
            if name not in self.tables:
                raise ClusterError(f"EXCHANGE TABLES of {name}, not a ledger table")
        return (
            f"EXCHANGE TABLES {ddl.quote_ident(local_name(first))} AND "
            f"{ddl.quote_ident(local_name(second))} {self.on}"
        )

    def _backfill(self, statement: str) -> str:
        # A join or IN over a second Distributed table is refused by default (a query per shard
        # per shard); every ledger join matches tenants, which share a shard, so each shard
        # joins its own local rows.
        own = _TRAILING_SETTINGS.search(statement)
        if own is not None:  # its own settings last (e.g. more partitions per insert): add ours
            return f"{statement}, {BACKFILL_SETTINGS}"
        if "SETTINGS" in statement:
            raise ClusterError(f"a backfill with SETTINGS before its end: {statement[:120]}")
        return f"{statement}\nSETTINGS {BACKFILL_SETTINGS}"

    def _on_after(self, statement: str, m: re.Match[str]) -> str:
        return f"{statement[: m.end()]} {self.on}{statement[m.end() :]}"

    def _local_if_table(self, name: str) -> str:
        return local_name(name) if name in self.tables else name

    def _to_local(self, select: str) -> str:
        # Migration SQL quotes every table it names: a bare word is a column or a function.
        return re.sub(r"`(\w+)`", lambda n: ddl.quote_ident(self._local_if_table(n[1])), select)


def _replicated(create: str, path: str, replica: str) -> str:
    m = _ENGINE.search(create)
    if m is None:
        raise ClusterError(f"not a MergeTree table: {create.splitlines()[0][:120]}")
    args = [ddl.quote_str(path), ddl.quote_str(replica)]
    if m.group(2):
        args.append(m.group(2))
    engine = f"ENGINE = Replicated{m.group(1)}MergeTree({', '.join(args)})"
    return create[: m.start()] + engine + create[m.end() :]
