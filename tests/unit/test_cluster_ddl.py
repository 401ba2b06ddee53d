"""Cluster mode's DDL (sinks/ledger/cluster.py): every migration rewritten for a named cluster.

ClickHouse's own parser (`formatQuery`, in chDB: the tests that use it are marked integration)
reads every statement produced; nothing here runs on a real cluster (no ClickHouse server or
Keeper on this machine)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from shipledger.settings import Settings
from shipledger.sinks.ledger.archive import server_tiering_sql
from shipledger.sinks.ledger.cluster import (
    BACKFILL_SETTINGS,
    SHARDING_KEY,
    Cluster,
    ClusterError,
    local_name,
)
from shipledger.sinks.ledger.migrate import (
    MIGRATIONS_TABLE,
    applied_form,
    cluster_of,
    load_migrations,
    migrate,
)
from shipledger.sinks.ledger.store import LedgerStore, StoreError

MIGRATIONS = load_migrations()


def _cluster() -> Cluster:
    cluster = cluster_of(MIGRATIONS, "ledger", "shipledger")
    assert cluster is not None
    return cluster


CLUSTER = _cluster()
_CREATE = re.compile(r"^CREATE TABLE `(\w+)`")
_MV = re.compile(r"^CREATE MATERIALIZED VIEW `(\w+)` TO `(\w+)`", re.MULTILINE)
_REPLICA_ARGS = "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}'"


def _body(statement: str) -> str:
    return "\n".join(line for line in statement.splitlines() if not line.startswith("--")).strip()


def _statements() -> list[tuple[str, str]]:
    return [(m.filename, _body(s)) for m in MIGRATIONS for s in m.statements()]


Parse = Callable[[str], str]


@pytest.fixture(scope="module")
def parses(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Parse]:
    """ClickHouse's canonical text of a statement: raises when its parser refuses it."""
    with LedgerStore.open(Settings(data_dir=tmp_path_factory.mktemp("parser"))) as store:

        def parse(sql: str) -> str:
            _, rows = store.query("SELECT formatQuery(%(sql)s)", {"sql": sql})
            return str(rows[0][0])

        yield parse


@pytest.mark.parametrize("migration", MIGRATIONS, ids=lambda m: m.filename)
def test_every_create_table_becomes_replicated_local_and_distributed(migration: Any) -> None:
    for statement in map(_body, migration.statements()):
        created = _CREATE.match(statement)
        if not created:
            continue
        table = created.group(1)
        engine = re.search(r"ENGINE = (\w*)MergeTree", statement)
        assert engine, statement[:80]
        local, distributed = CLUSTER.rewrite(statement)
        assert local.startswith(f"CREATE TABLE `{local_name(table)}` ON CLUSTER `ledger`")
        assert f"ENGINE = Replicated{engine.group(1)}MergeTree({_REPLICA_ARGS}" in local
        # The rest of the table (columns, keys, TTL, comment) is the migration's own text.
        unreplicated = local.replace("ENGINE = Replicated", "ENGINE = ", 1)
        unreplicated = unreplicated.replace(f"({_REPLICA_ARGS})", "", 1)
        assert unreplicated.split("\n", 1)[1] == statement.split("\n", 1)[1]
        assert distributed.startswith(
            f"CREATE TABLE `{table}` ON CLUSTER `ledger` AS `{local_name(table)}`\n"
            f"ENGINE = Distributed('ledger', 'shipledger', '{local_name(table)}', {SHARDING_KEY})"
        )


@pytest.mark.parametrize("migration", MIGRATIONS, ids=lambda m: m.filename)
def test_materialized_views_read_and_write_the_local_tables(migration: Any) -> None:
    for statement in map(_body, migration.statements()):
        if not _MV.match(statement):
            continue
        (rewritten,) = CLUSTER.rewrite(statement)
        view, target = _MV.findall(statement)[0]
        assert rewritten.startswith(
            f"CREATE MATERIALIZED VIEW `{view}` ON CLUSTER `ledger` TO `{local_name(target)}` AS"
        )
        named = set(re.findall(r"`(\w+)`", rewritten)) - {view, "ledger"}
        assert named, rewritten
        assert all(name.endswith("_local") for name in named), named


@pytest.mark.integration
@pytest.mark.parametrize("migration", MIGRATIONS, ids=lambda m: m.filename)
def test_every_statement_runs_on_the_cluster_and_parses(migration: Any, parses: Parse) -> None:
    for statement in map(_body, migration.statements()):
        for sql in CLUSTER.rewrite(statement):
            if sql.startswith("INSERT INTO"):
                # A backfill goes through the Distributed tables, joining shard by shard (its
                # own settings, if any, kept before ours).
                joiner = ", " if "\nSETTINGS " in statement else "\nSETTINGS "
                assert sql == f"{statement}{joiner}{BACKFILL_SETTINGS}"
            else:
                assert " ON CLUSTER `ledger`" in sql.split("\n", 1)[0], sql[:120]
            assert parses(sql)


def test_alters_reach_the_distributed_table_only_for_columns_and_comments() -> None:
    column = "ALTER TABLE `alerts` ADD COLUMN `x` String COMMENT 'x.' AFTER `tenant`"
    assert CLUSTER.rewrite(column) == [
        "ALTER TABLE `alerts_local` ON CLUSTER `ledger` ADD COLUMN `x` String COMMENT 'x.' "
        "AFTER `tenant`",
        "ALTER TABLE `alerts` ON CLUSTER `ledger` ADD COLUMN `x` String COMMENT 'x.' "
        "AFTER `tenant`",
    ]
    ttl = "ALTER TABLE `alerts` MODIFY TTL toDateTime(`retain_until`) DELETE"
    assert CLUSTER.rewrite(ttl) == [
        "ALTER TABLE `alerts_local` ON CLUSTER `ledger` MODIFY TTL toDateTime(`retain_until`) "
        "DELETE"
    ]


def _with(*tables: str) -> Cluster:
    """CLUSTER knowing `tables` too, as the migration that creates them (a rebuild's copy, a
    table a later migration drops) makes it."""
    return replace(CLUSTER, tables=CLUSTER.tables | set(tables))


def test_a_rebuilt_table_swaps_its_local_tables() -> None:
    swap = "EXCHANGE TABLES `suspect_deployments__rebuild` AND `suspect_deployments`"
    assert _with("suspect_deployments__rebuild").rewrite(swap) == [
        "EXCHANGE TABLES `suspect_deployments__rebuild_local` AND `suspect_deployments_local` "
        "ON CLUSTER `ledger`"
    ]
    with pytest.raises(ClusterError, match="not a ledger table"):
        CLUSTER.rewrite("EXCHANGE TABLES `alerts` AND `elsewhere`")


def test_drops_remove_both_tables_and_views_once() -> None:
    cluster = _with("dora_daily")
    assert cluster.rewrite("DROP TABLE `dora_daily`") == [
        "DROP TABLE `dora_daily` ON CLUSTER `ledger`",
        "DROP TABLE `dora_daily_local` ON CLUSTER `ledger` SYNC",
    ]
    # dora_daily_mv is a materialized view (dropped by DROP TABLE): no local twin.
    assert cluster.rewrite("DROP TABLE `dora_daily_mv`") == [
        "DROP TABLE `dora_daily_mv` ON CLUSTER `ledger`"
    ]
    assert CLUSTER.rewrite("DROP VIEW `artifacts`") == ["DROP VIEW `artifacts` ON CLUSTER `ledger`"]


@pytest.mark.integration
def test_engine_arguments_follow_the_replica_path(parses: Parse) -> None:
    cluster = Cluster("c", "db", frozenset({"t"}))
    local, _ = cluster.rewrite(
        "CREATE TABLE `t`\n(\n    `tenant` String,\n    `v` UInt32\n)\n"
        "ENGINE = ReplacingMergeTree(`v`)\nORDER BY `tenant`"
    )
    assert f"ENGINE = ReplicatedReplacingMergeTree({_REPLICA_ARGS}, `v`)" in local
    assert parses(local)


def test_what_has_no_cluster_form_is_refused() -> None:
    with pytest.raises(ClusterError, match="no cluster form"):
        CLUSTER.rewrite("RENAME TABLE `alerts` TO `alerts_old`")
    with pytest.raises(ClusterError, match="no tenant column"):
        CLUSTER.rewrite("CREATE TABLE `t`\n(\n    `id` String\n)\nENGINE = MergeTree ORDER BY id")
    with pytest.raises(ClusterError, match="not a MergeTree"):
        CLUSTER.rewrite("CREATE TABLE `t`\n(\n    `tenant` String\n)\nENGINE = Log")


def test_unset_cluster_applies_the_migrations_as_written() -> None:
    assert cluster_of(MIGRATIONS, None, "shipledger") is None
    for _, statement in _statements():
        assert applied_form(statement, None) == [statement]


class _Recorder:
    """A SqlRunner that records commands against an empty database."""

    database = "shipledger"

    def __init__(self) -> None:
        self.commands: list[str] = []

    def command(self, sql: str) -> None:
        self.commands.append(sql)

    def query(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        return [], [(0,)] if "count()" in sql else []

    def select_database(self, database: str) -> None:
        self.database = database


@pytest.mark.integration
def test_migrate_on_a_cluster_records_migrations_on_every_node(parses: Parse) -> None:
    runner = _Recorder()
    done = migrate(runner, cluster="ledger")
    assert [m.filename for m in done] == [m.filename for m in MIGRATIONS]
    first = runner.commands[0]
    assert first.startswith(f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ON CLUSTER `ledger`")
    assert (
        "ReplicatedMergeTree('/clickhouse/tables/all/{database}/{table}', '{shard}-{replica}')"
        in first
    )
    assert parses(first)
    tables = {m.group(1) for s in runner.commands if (m := _CREATE.match(s))}
    assert tables == CLUSTER.tables | {local_name(t) for t in CLUSTER.tables}


def test_cluster_mode_needs_a_server(tmp_path: Path) -> None:
    settings = Settings(clickhouse_url=f"chdb://{tmp_path}/ch", clickhouse_cluster="ledger")
    with pytest.raises(StoreError, match="SHIPLEDGER_CLICKHOUSE_CLUSTER=ledger needs a ClickHouse"):
        LedgerStore.open(settings)
    with pytest.raises(ValidationError, match="clickhouse_cluster"):
        Settings(clickhouse_cluster="no-dashes")


@pytest.mark.integration
def test_tiering_ddl_reaches_the_local_tables_on_the_cluster(parses: Parse) -> None:
    """`shipledger archive --apply` in cluster mode: storage policy and TTL are the local
    tables' (a Distributed table stores nothing)."""
    for statement in server_tiering_sql(None, 90):
        (sql,) = applied_form(statement, CLUSTER)
        table = re.findall(r"^ALTER TABLE `(\w+)` ", statement)[0]
        assert sql.startswith(f"ALTER TABLE `{local_name(table)}` ON CLUSTER `ledger` MODIFY ")
        assert parses(sql)
