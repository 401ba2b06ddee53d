"""Cold storage on real chDB: back-dated rows move to Parquet written by ClickHouse, leave the
hot tables, and stay queryable (and tenant-scoped) through the same query database.

Crashes are injected by making the hot-row DELETE raise once (a process kill at that point
leaves exactly that state on disk); everything else is real.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from shipledger.cli import cli
from shipledger.schemas.policy import load_policy
from shipledger.settings import Settings
from shipledger.sinks import rows
from shipledger.sinks.ledger import archive as archive_mod
from shipledger.sinks.ledger import ddl, tiers
from shipledger.sinks.ledger.archive import archive, server_tiering_sql
from shipledger.sinks.ledger.audit import verify
from shipledger.sinks.ledger.query import QueryError, run_read_query
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.sinks.writer import LedgerWriter
from shipledger.up import stack as stack_mod
from shipledger.up.restore import RestoreReport, restore
from shipledger.up.stack import Stack, archiver
from tests.containers import CHDB_COLD_FILES
from tests.kit import deployment_event

pytestmark = [
    pytest.mark.integration,
    pytest.mark.embedded_only(CHDB_COLD_FILES),
]

#: The `ledger` fixture: per tenant (acme, globex) 5 rows in each table, 2 of them 200 days old.
OLD_PER_TENANT, PER_TENANT = 2, 5
TABLES = (ddl.EVENTS, ddl.RECORDS, ddl.ALERTS)


def count(store: LedgerStore, sql: str, tenant: str | None = None) -> int:
    return int(run_read_query(store, sql, tenant=tenant, max_rows=10).rows[0][0])


def hot_old(store: LedgerStore, table: str) -> int:
    spec = ddl.tables()[table]
    _, rows = store.query(
        f"SELECT count() FROM shipledger.{table} WHERE {spec.time_column} < now() - INTERVAL 90 DAY"
    )
    return int(rows[0][0])


def cold_files(store: LedgerStore, table: str, tenant: str | None = None) -> list[Path]:
    """The cold files of `table`: of `tenant`, or of every tenant."""
    assert store.cold_root is not None
    if tenant is None:
        return sorted((store.cold_root / table).glob("tenant=*/*.parquet"))
    return sorted(tiers.tenant_dir(store.cold_root, table, tenant).glob("*.parquet"))


def test_archive_moves_old_rows_to_parquet_and_queries_see_hot_and_cold(
    ledger: LedgerStore,
) -> None:
    before = run_read_query(
        ledger, "SELECT * FROM deployment_events ORDER BY event_id", tenant=None, max_rows=100
    )
    report = archive(ledger, cold_after_days=90)

    assert report.rows_moved == OLD_PER_TENANT * 2 * len(TABLES)
    for table in TABLES:
        assert hot_old(ledger, table) == 0
        for tenant in ("acme", "globex"):
            files = cold_files(ledger, table, tenant)
            assert files, f"no Parquet for {table}/{tenant}"
            _, rows = ledger.query(f"SELECT DISTINCT tenant FROM file('{files[0]}', 'Parquet')")
            assert rows == [(tenant,)]
    assert ledger.count(ddl.EVENTS) == (PER_TENANT - OLD_PER_TENANT) * 2  # hot only

    # Hot + cold through the same names, every column intact after the Parquet round trip.
    after = run_read_query(
        ledger, "SELECT * FROM deployment_events ORDER BY event_id", tenant=None, max_rows=100
    )
    assert after.rows == before.rows
    assert after.types == before.types
    assert count(ledger, "SELECT count() FROM deployments") == PER_TENANT * 2
    # Tenant scoping holds for cold rows through the union; the cold tables themselves are
    # not a tenant's to name (the query allow-list), and filtered for an operator naming one.
    assert count(ledger, "SELECT count() FROM deployment_events", "acme") == PER_TENANT
    old_alerts = "SELECT count() FROM alerts WHERE occurred_at < now() - INTERVAL 90 DAY"
    assert count(ledger, old_alerts, "acme") == OLD_PER_TENANT
    with pytest.raises(QueryError, match="refused"):
        count(ledger, "SELECT count() FROM shipledger_cold.alerts", "acme")
    assert count(ledger, "SELECT count() FROM shipledger_cold.alerts") == OLD_PER_TENANT * 2
    assert count(ledger, "SELECT countIf(tenant != 'acme') FROM alerts", "acme") == 0

    assert archive(ledger, cold_after_days=90).rows_moved == 0  # nothing left to move


def test_query_command_counts_hot_and_cold_together(
    ledger: LedgerStore, settings: Settings
) -> None:
    archive(ledger, cold_after_days=90)
    ledger.close()  # the command opens the data dir itself
    env = {"SHIPLEDGER_DATA_DIR": str(settings.data_dir)}
    runner = CliRunner()
    total = "SELECT count() FROM deployment_events"
    result = runner.invoke(cli, ["query", "--format", "csv", total], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["count()", str(PER_TENANT * 2)]
    old = (
        "SELECT DISTINCT tenant FROM deployment_events WHERE occurred_at < now() - INTERVAL 90 DAY"
    )
    result = runner.invoke(cli, ["query", "--tenant", "globex", "--format", "csv", old], env=env)
    assert result.output.splitlines() == ["tenant", "globex"]


def test_dry_run_changes_nothing(ledger: LedgerStore, settings: Settings) -> None:
    report = archive(ledger, cold_after_days=90, dry_run=True)
    assert report.rows_moved == OLD_PER_TENANT * 2 * len(TABLES)
    assert hot_old(ledger, ddl.EVENTS) == OLD_PER_TENANT * 2
    assert not cold_files(ledger, ddl.EVENTS)


def crash_before_the_delete(ledger: LedgerStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """An archive run of `ledger` that dies after its first table's cold files are final,
    before their hot DELETE (as a kill -9 there would)."""

    def crash(*_args: object) -> None:
        raise RuntimeError("killed")

    monkeypatch.setattr(archive_mod, "_delete_hot", crash)
    with pytest.raises(RuntimeError, match="killed"):
        archive(ledger, cold_after_days=90)
    monkeypatch.undo()


def test_a_crash_between_file_and_delete_is_finished_by_the_next_run(
    ledger: LedgerStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    crash_before_the_delete(ledger, monkeypatch)

    # The first table's files (events, both tenants) are final AND still hot: duplicates.
    assert ledger.cold_root is not None
    assert len(list((ledger.cold_root / ".pending").glob("*.json"))) == 1
    assert len(cold_files(ledger, ddl.EVENTS)) == 2
    tiers.refresh_cold(ledger)
    duplicated = OLD_PER_TENANT * 2
    assert count(ledger, "SELECT count() FROM deployment_events") == PER_TENANT * 2 + duplicated

    report = archive(ledger, cold_after_days=90)
    assert len(report.recovered) == 1
    assert count(ledger, "SELECT count() FROM deployment_events") == PER_TENANT * 2
    assert count(ledger, "SELECT uniqExact(event_id) FROM deployment_events") == PER_TENANT * 2
    assert len(cold_files(ledger, ddl.EVENTS)) == 2  # not exported a second time
    assert not list((ledger.cold_root / ".pending").glob("*.json"))


def test_a_crash_before_the_rename_leaves_only_a_temp_file_that_is_discarded(
    ledger: LedgerStore,
) -> None:
    assert ledger.cold_root is not None
    directory = tiers.tenant_dir(ledger.cold_root, ddl.EVENTS, "acme")
    directory.mkdir(parents=True)
    tmp = directory / "202001-crashed.parquet.tmp"
    ledger.command(f"INSERT INTO FUNCTION file('{tmp}', 'Parquet') SELECT 1 AS x")
    pending = ledger.cold_root / ".pending"
    pending.mkdir()
    (pending / "deployment_events.crashed.json").write_text(
        json.dumps({"table": ddl.EVENTS, "run": "crashed", "cutoff_ms": 0})
    )
    report = archive(ledger, cold_after_days=90)
    assert report.recovered == []
    assert not tmp.exists()
    assert not list(pending.iterdir())
    assert count(ledger, "SELECT count() FROM deployment_events") == PER_TENANT * 2


def test_cold_files_past_retention_are_deleted(ledger: LedgerStore) -> None:
    """Cold files are kept while any row is not yet due (retain_until = ledger_at + 1 year
    under the default class), and deleted once every row is past it (a clock 400 days on)."""
    first = archive(ledger, cold_after_days=90)
    assert first.expired_files == [] and cold_files(ledger, ddl.EVENTS)
    later = archive(ledger, cold_after_days=90, now=datetime.now(UTC) + timedelta(days=400))
    assert later.expired_files
    for table in ddl.tables():
        assert not cold_files(ledger, table), table
    assert count(ledger, "SELECT count() FROM deployment_events") == 0


def test_up_runs_the_archiver_on_its_store(ledger: LedgerStore, settings: Settings) -> None:
    job = archiver(ledger, settings.model_copy(update={"archive_interval_s": 0})).start()
    job.stop()
    assert hot_old(ledger, ddl.EVENTS) == 0
    assert count(ledger, "SELECT count() FROM deployment_events") == PER_TENANT * 2


def test_server_tiering_ddl_moves_old_parts_to_the_cold_volume() -> None:
    """Generated only: no ClickHouse server here to apply it to. MODIFY TTL replaces the whole
    TTL: the retention delete must be restated, or tiering would end it."""
    statements = server_tiering_sql("shipledger", 90)
    assert len(statements) == 2 * len(ddl.tables())
    assert (
        "ALTER TABLE `shipledger`.`deployment_events` MODIFY TTL toDateTime(`occurred_at`) "
        "+ INTERVAL 90 DAY TO VOLUME 'cold', `retain_until` DELETE"
    ) in statements


@pytest.mark.parametrize("tenant", ["acme", "café"])
def test_cold_files_honour_each_rows_retain_until(
    settings: Settings, tmp_path: Path, tenant: str
) -> None:
    """One tenant-month file holds a staging row (class `short`, 30 days) and a prod row
    (class `sox`, 7 years). Once the staging row's 30 days are over, the next run rewrites
    the file without it: gone from queries and from the file, the prod row kept, every hash
    chain still verifying (its chain lost only rows past their time).

    `café`, a name its directory percent-encodes (`tenant=caf%C3%A9`): chDB reads `file()`
    with hive partitioning on, which takes the column `tenant` from that path segment. The
    archive's hot DELETE then matched no row (each stayed hot and cold: read twice), and the
    rewrite stored the rows under the tenant `caf%C3%A9`."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: retention-test\n"
        "retention:\n"
        "  classes: {short: 30d, sox: 7y}\n"
        "  default: short\n"
        "  environments: {staging: short, prod: sox}\n"
    )
    settings = settings.model_copy(update={"policy_file": policy})
    now = datetime.now(UTC)
    stamped_at = now - timedelta(days=31)  # the sink stored them 31 days ago
    month = (now - timedelta(days=90)).replace(day=1, hour=10, minute=0, second=0, microsecond=0)
    with LedgerStore.open(settings) as store:
        store.ensure_schema()
        # ClickHouse drops rows already past their TTL as it writes them: held here so the
        # staging row (and its chain head) is stored and archived as it was 31 days ago.
        for table in (ddl.EVENTS, ddl.CHAIN_HEADS):
            store.command(f"SYSTEM STOP TTL MERGES shipledger.{table}")
        writer = LedgerWriter(store, load_policy(settings.policy_file))
        writer.now = lambda: stamped_at  # type: ignore[method-assign]
        writer.write_rows(
            {
                ddl.EVENTS: [
                    _event_row("staging-1", "staging", month, tenant),
                    _event_row("prod-1", "prod", month + timedelta(hours=1), tenant),
                ]
            }
        )
        # A run 20 days ago: both rows within their time, both moved to one file.
        archive(store, cold_after_days=30, now=now - timedelta(days=20))
        [path] = cold_files(store, ddl.EVENTS, tenant)
        assert _ids_in(store, path) == ["prod-1", "staging-1"]
        assert _ids_queried(store) == ["prod-1", "staging-1"]

        report = archive(store, cold_after_days=30)  # now: the staging row is 1 day past

        assert _ids_queried(store) == ["prod-1"]
        assert _ids_queried(store, tenant) == ["prod-1"]
        assert cold_files(store, ddl.EVENTS, tenant) == [path]
        assert _ids_in(store, path) == ["prod-1"]
        assert report.rewritten_files == {str(path): 1}
        assert report.expired_files == []
        audit = verify(store)
        assert audit.clean, audit.text()
        assert (audit.chains, audit.expired) == (2, 1)  # the staging chain: expired, tolerated


def _event_row(
    deployment_id: str, environment: str, at: datetime, tenant: str = "acme"
) -> dict[str, object]:
    event = deployment_event(
        event_id=deployment_id,
        deployment_id=deployment_id,
        event_type="succeeded",
        environment=environment,
        tenant=tenant,
        occurred_at=at,
    )
    return rows.event_row(event.to_avro(), rows.KafkaMeta("raw", 0, 0, int(at.timestamp() * 1000)))


def _ids_in(store: LedgerStore, path: Path) -> list[str]:
    _, found = store.query(f"SELECT event_id FROM file('{path}', 'Parquet') ORDER BY event_id")
    return [str(row[0]) for row in found]


def _ids_queried(store: LedgerStore, tenant: str | None = None) -> list[str]:
    result = run_read_query(
        store,
        "SELECT event_id FROM deployment_events ORDER BY event_id",
        tenant=tenant,
        max_rows=10,
    )
    return [str(row[0]) for row in result.rows]


def test_up_finishes_an_interrupted_move_before_it_reads(
    ledger: LedgerStore, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash between an archive's cold files and its hot DELETE, then `up`: the restore,
    the first reader of the restarted stack, sees every row once (it saw the archived ones
    twice until `Stack.start` finished the move before it)."""

    crash_before_the_delete(ledger, monkeypatch)
    ledger.close()

    seen: list[int] = []

    def restore_counting(*args: Any) -> RestoreReport:
        store = args[2]
        tiers.refresh_cold(store)
        seen.append(count(store, "SELECT count() FROM deployment_events"))
        return restore(*args)

    monkeypatch.setattr(stack_mod, "restore", restore_counting)
    with Stack(settings, log_dir=tmp_path / "logs"):
        pass
    assert seen == [PER_TENANT * 2]


def test_a_tenant_whose_encoded_name_exceeds_a_file_name_stores_archives_and_reads(
    settings: Settings,
) -> None:
    """A tenant of 100 'é' (valid: 100 characters) percent-encodes to 600 bytes, over the 255
    a file name may hold: its cold directory could not even be looked up, so the sink's dedup
    raised OSError and `up` stopped for every tenant (one emitted event was enough). Its rows
    store, dedupe, archive and read back like any other tenant's."""
    tenant = "é" * 100
    old = datetime.now(UTC) - timedelta(days=200)
    with LedgerStore.open(settings) as store:
        store.ensure_schema()
        writer = LedgerWriter(store, load_policy(None))
        batch = {ddl.EVENTS: [_event_row("long-1", "prod", old, tenant)]}
        writer.write_rows(batch)
        archive(store, cold_after_days=90)
        writer.write_rows(batch)  # a replay: found in the cold tier, not stored twice

        assert store.cold_root is not None
        [path] = tiers.cold_files(store.cold_root, ddl.EVENTS, [tenant])
        assert len(path.parent.name.encode()) <= 255
        assert _ids_in(store, path) == ["long-1"]
        assert hot_old(store, ddl.EVENTS) == 0
        sql = "SELECT event_id, tenant FROM deployment_events"
        assert run_read_query(store, sql, tenant=tenant, max_rows=10).rows == [("long-1", tenant)]
        assert run_read_query(store, sql, tenant="é" * 99, max_rows=10).rows == []
