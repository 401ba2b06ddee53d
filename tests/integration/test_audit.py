"""Tamper evidence on a real chDB ledger: rows stored through the sink's write path, then
tampered with directly in ClickHouse, and `audit verify` must name exactly what changed.

The sink's Kafka side is not needed here: rows go through `LedgerWriter.write_rows` (the
flush's write step: dedup, stamp, insert, record chain heads)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from shipledger.lab.bench_sink import sample_events
from shipledger.schemas.policy import load_policy
from shipledger.schemas.registry import AvroCodec
from shipledger.settings import Settings
from shipledger.sinks.ledger import chain, ddl
from shipledger.sinks.ledger.audit import Report, verify
from shipledger.sinks.ledger.audit_cli import audit
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.sinks.rows import KafkaMeta, Row, event_row
from shipledger.sinks.writer import LedgerWriter
from tests.kit import ledger_settings

pytestmark = pytest.mark.integration

CODEC = AvroCodec("io.shipledger.v1.DeploymentEvent")
EVENTS = ddl.EVENTS
NOW = datetime.now(UTC)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return ledger_settings(tmp_path / "data", log_level="warning")


@pytest.fixture
def store(settings: Settings) -> Iterator[LedgerStore]:
    with LedgerStore.open(settings) as s:
        s.ensure_schema()
        yield s


def event_rows(n: int, start: int = 0) -> list[Row]:
    """`n` deployment_events rows built as the sink builds them (decoded Avro → row)."""
    out = []
    for i, event in enumerate(sample_events(start + n)[start:], start=start):
        decoded = CODEC.decode(CODEC.encode(event.to_avro()))
        out.append(event_row(decoded, KafkaMeta("raw", 0, i, None)))
    return out


class Writer(LedgerWriter):
    """The sink's real write step with a clock tests can move."""

    clock_offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.clock_offset


def writer(store: LedgerStore, settings: Settings) -> Writer:
    return Writer(store, load_policy(settings.policy_file))


def write(store: LedgerStore, settings: Settings, *batches: list[Row]) -> Writer:
    sink = writer(store, settings)
    for rows in batches:
        sink.write_rows({EVENTS: rows})
    return sink


def chain_of(store: LedgerStore, tenant: str) -> list[tuple[int, str]]:
    _, rows = store.query(
        "SELECT chain_seq, event_id FROM deployment_events WHERE tenant = %(t)s ORDER BY chain_seq",
        {"t": tenant},
    )
    return [(int(s), str(e)) for s, e in rows]


def only(report: Report) -> Any:
    assert len(report.findings) == 1, report.text()
    return report.findings[0]


def mutate(store: LedgerStore, sql: str) -> None:
    store.command(sql + " SETTINGS mutations_sync = 2")


def edit_event(store: LedgerStore, event_id: str, column: str, value: str) -> None:
    """Set `column` of the stored deployment event `event_id` to `value`, behind the sink."""
    mutate(
        store,
        f"ALTER TABLE deployment_events UPDATE {column} = '{value}' WHERE event_id = '{event_id}'",
    )


def test_a_clean_ledger_verifies_clean(store: LedgerStore, settings: Settings) -> None:
    write(store, settings, event_rows(12), event_rows(12, 12), event_rows(6, 24))
    report = verify(store)
    assert report.clean, report.text()
    assert (report.rows, report.chains) == (30, 3)  # 3 tenants, one class
    # A second sink (a restart) continues the chains from ClickHouse.
    write(store, settings, event_rows(6, 30))
    again = verify(store)
    assert again.clean, again.text()
    assert again.rows == 36
    seqs = [s for s, _ in chain_of(store, "acme")]
    assert seqs == list(range(1, len(seqs) + 1))


def test_an_edited_column_is_named(store: LedgerStore, settings: Settings) -> None:
    write(store, settings, event_rows(12))
    seq, victim = chain_of(store, "acme")[1]
    edit_event(store, victim, "actor", "mallory")
    finding = only(verify(store))
    assert (finding.kind, finding.table, finding.tenant) == ("changed", EVENTS, "acme")
    assert (finding.seq_from, finding.ids) == (seq, (victim,))


def test_rows_name_the_policy_that_stamped_them_and_blanking_it_is_tampering(
    store: LedgerStore, settings: Settings
) -> None:
    write(store, settings, event_rows(3))
    _, versions = store.query("SELECT DISTINCT policy_version FROM deployment_events")
    assert versions == [(load_policy(settings.policy_file).full_version,)]
    seq, victim = chain_of(store, "acme")[0]
    edit_event(store, victim, "policy_version", "")
    finding = only(verify(store))
    assert (finding.kind, finding.seq_from, finding.ids) == ("changed", seq, (victim,))


def test_rows_stamped_before_the_policy_version_column_still_verify(
    store: LedgerStore, settings: Settings
) -> None:
    """Migration 0006 added `policy_version` with an empty default to rows hashed without it:
    an empty late column is left out of the hash, so those chains stay clean."""
    rows = event_rows(4)
    retention = load_policy(settings.policy_file).retention
    heads = chain.stamp(EVENTS, rows, {}, retention, datetime.now(UTC))
    assert all("policy_version" not in row for row in rows)  # what the sink did before 0006
    for row in rows:
        row["policy_version"] = ""  # what ADD COLUMN gives the stored rows
    store.insert(EVENTS, rows)
    store.append_heads(heads)
    write(store, settings, event_rows(4, 4))  # new rows continue the chains, with a version
    report = verify(store)
    assert report.clean, report.text()
    assert report.rows == 8


def test_chains_stored_before_lanes_verify_and_go_on_beside_the_lanes(settings: Settings) -> None:
    """A ledger from before migration 0023 (chain_lane added): its rows and chain heads were
    stored without a lane and read back the legacy lane '' (hashed only when set), so they
    verify as stamped; a writer alone continues that chain, and the sinks' rows start a chain
    per partition lane beside it."""
    with LedgerStore.open(settings) as store:
        store.ensure_schema()
        old = event_rows(4)
        policy = load_policy(settings.policy_file)
        heads = chain.stamp(
            EVENTS, old, {}, policy.retention, datetime.now(UTC), policy.full_version
        )
        spec = ddl.tables()[EVENTS]
        before = [c for c in spec.columns if c.name != chain.LANE]  # what the sink wrote then
        store.insert_columns(
            EVENTS,
            [c.name for c in before],
            [c.type for c in before],
            [[row[c.name] for row in old] for c in before],
        )
        for (table, tenant, klass, _), head in heads.items():
            store.command(
                "INSERT INTO chain_heads (table, tenant, retention_class, chain_seq, row_hash, "
                "retain_until, at) VALUES (%(t)s, %(tenant)s, %(c)s, %(s)s, %(h)s, "
                "fromUnixTimestamp64Milli(%(r)s), now64(3))",
                {
                    "t": table,
                    "tenant": tenant,
                    "c": klass,
                    "s": head.seq,
                    "h": head.row_hash,
                    "r": chain.epoch_ms(head.retain_until),
                },
            )
        write(store, settings, event_rows(2, 4))  # a writer alone: the legacy lane
        laned = event_rows(4, 6)
        for i, row in enumerate(laned):
            row[chain.LANE] = chain.partition_lane(i % 2)
        write(store, settings, laned)
        report = verify(store)
        assert report.clean, report.text()
        assert report.rows == 10
        _, chains = store.query(
            "SELECT chain_lane, tenant, groupArray(chain_seq) FROM deployment_events "
            "GROUP BY chain_lane, tenant"
        )
        rows_by_lane: dict[str, int] = {}
        for lane, _, seqs in chains:  # every chain whole from 1: the legacy ones continued
            assert sorted(seqs) == list(range(1, len(seqs) + 1))
            rows_by_lane[lane] = rows_by_lane.get(lane, 0) + len(seqs)
        assert rows_by_lane == {"": 6, "p0": 2, "p1": 2}


def test_two_writers_on_one_lane_fork_it_and_verify_names_the_lane(
    store: LedgerStore, settings: Settings
) -> None:
    """What lanes prevent: two writers holding one lane's head (two sinks both thinking a
    partition theirs) each append the next chain_seq."""
    first, second = writer(store, settings), writer(store, settings)

    def on_p0(rows: list[Row]) -> list[Row]:
        return [{**row, chain.LANE: chain.partition_lane(0)} for row in rows]

    first.write_rows({EVENTS: on_p0(event_rows(2))})
    second.write_rows({EVENTS: on_p0(event_rows(1, 2))})
    first.write_rows({EVENTS: on_p0(event_rows(1, 3))})  # from its remembered head: a fork
    findings = verify(store).findings
    assert findings
    assert {(f.kind, f.lane) for f in findings} == {("inserted", "p0")}
    assert "lane=p0" in findings[0].line()


def test_a_deleted_middle_row_is_named_with_its_neighbours(
    store: LedgerStore, settings: Settings
) -> None:
    write(store, settings, event_rows(12), event_rows(12, 12))
    rows = chain_of(store, "globex")
    (before, _), (seq, victim), (after, after_id) = rows[2], rows[3], rows[4]
    mutate(store, f"ALTER TABLE deployment_events DELETE WHERE event_id = '{victim}'")
    finding = only(verify(store))
    assert (finding.kind, finding.tenant, finding.seq_from, finding.seq_to) == (
        "removed",
        "globex",
        seq,
        seq,
    )
    assert finding.ids == (rows[2][1], after_id)
    assert before + 1 == seq == after - 1


def test_a_deleted_tail_is_detected_through_chain_heads(
    store: LedgerStore, settings: Settings
) -> None:
    write(store, settings, event_rows(12))
    rows = chain_of(store, "initech")
    last_seq, last_id = rows[-1]
    store.command(f"DELETE FROM deployment_events WHERE event_id = '{last_id}'")
    finding = only(verify(store))
    assert (finding.kind, finding.tenant) == ("removed", "initech")
    assert (finding.seq_from, finding.seq_to) == (last_seq, last_seq)
    assert finding.ids == (rows[-2][1],)


def _copy_of(store: LedgerStore, event_id: str, new_id: str, chain_sql: str) -> None:
    columns = ddl.tables()[EVENTS].column_names
    chain_cols = {"chain_seq", "prev_hash", "row_hash", "prev_retain_until"}
    select = ", ".join(
        f"'{new_id}'" if c == "event_id" else c for c in columns if c not in chain_cols
    )
    names = ", ".join(c for c in columns if c not in chain_cols)
    store.command(
        f"INSERT INTO deployment_events ({names}{chain_sql and ', '}"
        f"{chain_sql and 'chain_seq, prev_hash, row_hash'}) SELECT {select}"
        f"{chain_sql and ', '}{chain_sql} FROM deployment_events "
        f"WHERE event_id = '{event_id}'"
    )


def test_an_insert_around_the_sink_is_named(store: LedgerStore, settings: Settings) -> None:
    write(store, settings, event_rows(12))
    _, some_id = chain_of(store, "acme")[0]
    _copy_of(store, some_id, "forged-1", "")
    finding = only(verify(store))
    assert (finding.kind, finding.ids, finding.seq_from) == ("inserted", ("forged-1",), 0)


def test_a_forged_row_with_chain_columns_is_named(store: LedgerStore, settings: Settings) -> None:
    """The forger knows the algorithm: correct link and hash, one past the head. Only the
    head recorded in chain_heads tells it from a row the sink wrote."""
    write(store, settings, event_rows(12))
    rows = chain_of(store, "acme")
    head_seq, head_id = rows[-1]
    columns = ddl.tables()[EVENTS].column_names
    _, stored = store.query(
        f"SELECT {', '.join(columns)} FROM deployment_events WHERE event_id = '{head_id}'"
    )
    row = dict(zip(columns, stored[0], strict=True))
    row.update(
        event_id="forged-2",
        chain_seq=head_seq + 1,
        prev_hash=row["row_hash"],
        prev_retain_until=row["retain_until"],
    )
    row["row_hash"] = chain.row_hash(row)
    store.insert(EVENTS, [row])
    finding = only(verify(store))
    assert (finding.kind, finding.ids, finding.seq_from) == (
        "inserted",
        ("forged-2",),
        head_seq + 1,
    )

    # A forged copy at an existing position is a second row at that chain_seq.
    _copy_of(store, rows[3][1], "forged-3", f"{rows[3][0]}, prev_hash, row_hash")
    kinds = {(f.kind, f.ids) for f in verify(store).findings}
    assert ("inserted", ("forged-3",)) in kinds


def test_expired_rows_are_not_tampering_but_a_due_row_is(
    store: LedgerStore, settings: Settings
) -> None:
    """Rows stored 400 days ago (default class: 1y = 366 days) are deleted by ClickHouse's
    TTL (some already as they are inserted); the chain still verifies. Deleting a row that
    is not due is still caught."""
    sink = writer(store, settings)
    sink.clock_offset = -timedelta(days=400)
    sink.write_rows({EVENTS: event_rows(12)})
    sink.clock_offset = timedelta(0)
    sink.write_rows({EVENTS: event_rows(12, 12)})
    for table in (EVENTS, ddl.CHAIN_HEADS):
        store.command(f"OPTIMIZE TABLE shipledger.{table} FINAL")
    assert store.count(EVENTS) == 12  # the TTL removed the back-dated rows
    report = verify(store)
    assert report.clean, report.text()
    assert report.expired == 12

    first_seq, first_id = chain_of(store, "acme")[0]
    assert first_seq > 1
    mutate(store, f"ALTER TABLE deployment_events DELETE WHERE event_id = '{first_id}'")
    finding = only(verify(store))
    # The expired rows before it are part of the same hole: the range ends at the due row.
    assert (finding.kind, finding.seq_to, finding.tenant) == ("removed", first_seq, "acme")
    assert finding.ids == (chain_of(store, "acme")[0][1],)


def _sample(column_type: str) -> Any:
    if column_type.startswith("Nullable(") or column_type.startswith("LowCardinality(Nullable"):
        return None
    if column_type.startswith("Array(Tuple(approver "):  # ChangeEvent approvals: nested datetimes
        return [("ann", "approved", chain.to_ms_precision(NOW), ["cab"], "oidc:issuer", None)]
    if column_type.startswith("Array(Tuple(rule "):  # GateDecision reasons: nested maps
        return [("change_not_approved", "high", "rejected", {"change_id": "CHG1"})]
    assert not column_type.startswith("Array(Tuple("), f"no sample for {column_type}"
    if column_type.startswith("Array("):
        return ["x", "y"]
    if "DateTime64" in column_type:
        return chain.to_ms_precision(NOW)
    if column_type.startswith("Map(String, Array("):  # source events' changed paths
        return {"b": ["2"], "a": ["1", "0"]}
    if column_type.startswith("Map("):
        return {"b": "2", "a": "1"}
    if "Int" in column_type:
        return 7
    if column_type == "Bool":
        return True
    return "text"


@pytest.mark.parametrize("table", sorted(ddl.tables()))
def test_every_table_round_trips_its_hash(
    store: LedgerStore, settings: Settings, table: str
) -> None:
    """A row of every column type of every table hashes the same stored and read back."""
    spec = ddl.tables()[table]
    rows = []
    for i in range(3):
        row = {c.name: _sample(c.type) for c in spec.columns if c.name not in spec.stamped}
        row.update({spec.id_column: f"id-{i}", "tenant": "t", "region": "r"})
        rows.append(row)
    writer(store, settings).write_rows({table: rows})
    report = verify(store, table=table)
    assert report.clean, report.text()
    assert report.rows == 3


def test_cli_verify_exit_codes_and_json(store: LedgerStore, settings: Settings) -> None:
    write(store, settings, event_rows(6))
    _, victim = chain_of(store, "acme")[0]
    edit_event(store, victim, "version", "9")
    store.close()  # one process per chDB dir: the CLI opens it itself
    runner = CliRunner()
    args = ["verify", "--data-dir", str(settings.data_dir)]
    result = runner.invoke(audit, [*args, "--format", "json"])
    assert result.exit_code == 1, result.output
    body = json.loads(result.output)
    assert body["findings"][0]["ids"] == [victim]
    clean = runner.invoke(audit, [*args, "--tenant", "globex"])
    assert clean.exit_code == 0, clean.output
    assert "CLEAN" in clean.output


def test_cli_verify_of_an_empty_data_dir_says_there_is_no_ledger(tmp_path: Path) -> None:
    result = CliRunner().invoke(audit, ["verify", "--data-dir", str(tmp_path / "none")])
    assert result.exit_code == 3  # could not verify: not 1, which means tampering
    assert "no ledger in" in result.output and "run `shipledger up` first" in result.output
    assert not (tmp_path / "none").exists()  # looking did not create an empty ledger
